# Pretraining: CMP on the shards of the chosen sets; a rerun resumes from the last checkpoint.


PRETRAIN_CMP = config["pretrain"]["cmp"]
CMP_DIR = f"{RESULTS}/pretrain/cmp/{PRETRAIN_CMP['run']}"


rule pretrain_cmp_run:
    input:
        shards=[SHARDS_DIR.format(set=s) for s in cmp_sets()],
    output:
        backbone=f"{CMP_DIR}/backbone.pth",
        losses=report(
            f"{CMP_DIR}/figures/loss_curves.png",
            caption="../report/cmp_losses.rst",
            category="Pretraining",
            subcategory="CMP",
        ),
        predictions=report(
            f"{CMP_DIR}/figures/val_predictions.png",
            caption="../report/cmp_predictions.rst",
            category="Pretraining",
            subcategory="CMP",
        ),
    log:
        f"{CMP_DIR}/train.log",
    benchmark:
        f"{CMP_DIR}/benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: workflow.cores
    resources:
        gpu=1,
    params:
        overrides=cmp_run_overrides,
    shell:
        'args=(); for o in {params.overrides:q}; do args+=(--set "$o"); done;'
        ' python -m models.train fit "${{args[@]}}" > {log:q} 2>&1'


rule pretrain_cmp:
    input:
        rules.pretrain_cmp_run.output,
