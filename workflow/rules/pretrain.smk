# Pretraining: one pair of rules per method with a `pretrain.<method>` section, all alike:
# pretrain_<method>_run trains (GPU resources belong to it; a rerun resumes from the last
# checkpoint) and pretrain_<method> is its target. `pretrain.methods` picks those `all` and the
# benchmark use; the others still run on request (snakemake pretrain_<method>).
# pretrain_<method>_replicate_run trains the same config with another seed, one job per entry of
# `pretrain.<method>.replicate_seeds`, into results/pretrain/<method>/<run>-seed<N>/; the target
# pretrain_<method> includes them.

# one training from the params' --set overrides, shared by a method's run and its replicates
TRAIN_SHELL = (
    'args=(); for o in {params.overrides:q}; do args+=(--set "$o"); done;'
    ' python -m models.train fit "${{args[@]}}" > {log:q} 2>&1'
)


for method in PRETRAIN_SECTIONS:
    # the replicate rule's folder, {seed} its wildcard
    replica = replicate_dir(method, "{seed}")

    rule:
        name:
            f"pretrain_{method}_run"
        input:
            shards=pretrain_shards(method),
        output:
            backbone=f"{pretrain_dir(method)}/backbone.pth",
            losses=report(
                f"{pretrain_dir(method)}/figures/loss_curves.png",
                caption=f"../report/{method}_losses.rst",
                category="Pretraining",
                subcategory=method,
            ),
            predictions=report(
                f"{pretrain_dir(method)}/figures/val_predictions.png",
                caption=f"../report/{method}_predictions.rst",
                category="Pretraining",
                subcategory=method,
            ),
        log:
            f"{pretrain_dir(method)}/train.log",
        benchmark:
            f"{pretrain_dir(method)}/benchmark.tsv"
        conda:
            "../../envs/train.yaml"
        threads: workflow.cores
        resources:
            **gpu_resources(1),
        params:
            overrides=pretrain_overrides(method),
        shell:
            TRAIN_SHELL

    rule:
        name:
            f"pretrain_{method}_replicate_run"
        input:
            shards=pretrain_shards(method),
        output:
            backbone=f"{replica}/backbone.pth",
            losses=f"{replica}/figures/loss_curves.png",
            predictions=f"{replica}/figures/val_predictions.png",
        log:
            f"{replica}/train.log",
        benchmark:
            f"{replica}/benchmark.tsv"
        wildcard_constraints:
            seed=r"\d+",
        conda:
            "../../envs/train.yaml"
        threads: workflow.cores
        resources:
            **gpu_resources(1),
        params:
            overrides=replicate_overrides(method),
        shell:
            TRAIN_SHELL

    rule:
        name:
            f"pretrain_{method}"
        input:
            [f"{run['run_dir']}/backbone.pth" for run in pretrain_runs(method)],
