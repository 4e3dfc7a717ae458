# Science run: does the pretraining help? Every pretrained trunk against random on transfer
# tasks, >= 5 seeds, paired tests, a generated verdict. Full size: --configfile configs/science.yaml


SCIENCE_DIR = f"{RESULTS}/science"


rule science_run:
    input:
        **pretrain_backbones(),
    output:
        summary=report(
            f"{SCIENCE_DIR}/summary.tsv",
            caption="../report/science.rst",
            category="Science",
        ),
        plot=report(
            f"{SCIENCE_DIR}/summary.png",
            caption="../report/science.rst",
            category="Science",
        ),
        verdict=report(
            f"{SCIENCE_DIR}/verdict.md",
            caption="../report/science.rst",
            category="Science",
        ),
        replicates=f"{SCIENCE_DIR}/replicates.tsv",
    log:
        f"{SCIENCE_DIR}/science.log",
    benchmark:
        f"{SCIENCE_DIR}/benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: workflow.cores
    resources:
        gpu=1,
    params:
        overrides=science_overrides,
    shell:
        'args=(); for o in {params.overrides:q}; do args+=(--set "$o"); done;'
        ' python -m models.science "${{args[@]}}" > {log:q} 2>&1'


rule science:
    input:
        rules.science_run.output,
