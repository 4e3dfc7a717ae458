# Benchmark: fine-tune / probe every pre-trained backbone against a random initialisation.


BENCH_DIR = f"{RESULTS}/benchmark"


def benchmark_overrides(wildcards, input, threads):
    cfg = config["benchmark"]
    inits = [{"name": "random", "backbone_path": None}]
    inits.append({"name": f"cmp-{PRETRAIN_CMP['run']}", "backbone_path": input.cmp})
    inits.extend(cfg["extra_initialisations"])
    sections = {
        "output_dir": BENCH_DIR,
        "backbone": PRETRAIN_CMP["model"]["backbone"],
        "num_threads": threads,
        "seeds": cfg["seeds"],
        "initialisations": inits,
        "tasks": cfg["tasks"],
        "plot": {"dpi": cfg["dpi"]},
    }
    return [f"{key}={json.dumps(value)}" for key, value in sections.items()]


rule benchmark_run:
    input:
        cmp=rules.pretrain_cmp_run.output.backbone,
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
        gpu=1,
    params:
        overrides=benchmark_overrides,
    shell:
        'args=(); for o in {params.overrides:q}; do args+=(--set "$o"); done;'
        ' python -m models.benchmark "${{args[@]}}" > {log:q} 2>&1'


rule benchmark:
    input:
        rules.benchmark_run.output,
        rules.masks.input,
