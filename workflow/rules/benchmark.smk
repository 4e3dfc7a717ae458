# Benchmark: fine-tune / probe every pre-trained backbone against a random initialisation.


BENCH_DIR = f"{RESULTS}/benchmark"


rule benchmark_run:
    input:
        **pretrain_backbones(),
    output:
        summary=report(
            f"{BENCH_DIR}/summary.tsv",
            caption="../report/benchmark.rst",
            category="Benchmark",
        ),
        plot=report(
            f"{BENCH_DIR}/summary.png",
            caption="../report/benchmark.rst",
            category="Benchmark",
        ),
    log:
        f"{BENCH_DIR}/benchmark.log",
    benchmark:
        f"{BENCH_DIR}/benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        **gpu_resources(1),
    params:
        overrides=benchmark_overrides,
    shell:
        'args=(); for o in {params.overrides:q}; do args+=(--set "$o"); done;'
        ' python -m models.benchmark "${{args[@]}}" > {log:q} 2>&1'


rule benchmark_mask_quality:
    input:
        rules.masks.input,
    output:
        report(
            f"{BENCH_DIR}/mask_quality.tsv",
            caption="../report/masks_evaluation.rst",
            category="Benchmark",
        ),
    log:
        f"{BENCH_DIR}/mask_quality.log",
    benchmark:
        f"{BENCH_DIR}/mask_quality_benchmark.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        sets=active_sets(),
    shell:
        "python -m pipeline mask-quality {input:q} --sets {params.sets:q} --out={output:q}"
        " > {log:q} 2>&1"


rule benchmark:
    input:
        rules.benchmark_run.output,
        # the masks' quality where the methods build masks
        [rules.benchmark_mask_quality.output] if "masks" in SELECTED_STAGES else [],
