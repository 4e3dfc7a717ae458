# Science run: does the pretraining help? Every pretrained trunk against random on transfer
# tasks, >= 5 seeds, paired tests, a generated verdict. Full size: --configfile configs/science.yaml


SCIENCE_DIR = f"{RESULTS}/science"


def science_overrides(wildcards, input, threads):
    """The science run config (models.science) as --set overrides."""
    cfg = config["science"]
    inits = [{"name": "random", "backbone_path": None}]
    inits.append({"name": f"cmp-{PRETRAIN_CMP['run']}", "backbone_path": input.cmp})
    inits.extend(config["benchmark"]["extra_initialisations"])
    bench = {
        "backbone": PRETRAIN_CMP["model"]["backbone"],
        "num_threads": threads,
        "seeds": cfg["seeds"],
        "initialisations": inits,
        "tasks": cfg["tasks"],
        "plot": {"dpi": cfg["dpi"]},
    }
    sections = {
        "output_dir": SCIENCE_DIR,
        "alpha": cfg["alpha"],
        "benchmark": bench,
        "pretraining": [{"name": f"cmp-{PRETRAIN_CMP['run']}", "run_dir": CMP_DIR}],
        "shard_indexes": [f"{d}/index.json" for d in input.shards],
    }
    return [f"{key}={json.dumps(value)}" for key, value in sections.items()]


rule science_run:
    input:
        cmp=rules.pretrain_cmp_run.output.backbone,
        shards=[SHARDS_DIR.format(set=s) for s in cmp_sets()],
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
