# Masks: uNLC soft masks + trimaps + pruning for every sampled frame; per-set evaluation.


MASKS_DIR = f"{RESULTS}/{{set}}/masks-{config['flow']['method']}"


rule masks_video:
    input:
        record=f"{RESULTS}/{{set}}/videos/{{vid}}.json",
        shots=f"{RESULTS}/{{set}}/shots/{{vid}}.json",
        pairs=f"{FLOW_DIR}/{{vid}}/pairs.tsv",
    output:
        frames=f"{MASKS_DIR}/{{vid}}/frames.tsv",
        figure=report(
            f"{MASKS_DIR}/{{vid}}/overlay.png",
            caption="../report/masks_overlay.rst",
            category="Motion masks",
            subcategory="{set}",
            labels={"set": "{set}", "video": "{vid}"},
        ),
    log:
        f"{MASKS_DIR}/logs/{{vid}}.log",
    benchmark:
        f"{MASKS_DIR}/benchmarks/{{vid}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=stage_params("masks"),
        flow=stage_params("flow"),
    shell:
        "python -m pipeline masks --record={input.record:q} --shots={input.shots:q}"
        " --pairs={input.pairs:q} --params {params.cfg:q} --flow-params {params.flow:q}"
        " --out={output.frames:q} --figure={output.figure:q} > {log:q} 2>&1"


rule masks_evaluate:
    input:
        videos_of(f"{MASKS_DIR}/{{vid}}/frames.tsv"),
    output:
        report(
            f"{MASKS_DIR}/evaluation.tsv",
            caption="../report/masks_evaluation.rst",
            category="Motion masks",
            subcategory="{set}",
        ),
    log:
        f"{MASKS_DIR}/logs/evaluation.log",
    benchmark:
        f"{MASKS_DIR}/benchmarks/evaluation.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        records=f"{RESULTS}/{{set}}/videos",
        cfg=stage_params("masks"),
        flow=stage_params("flow"),
    shell:
        "python -m pipeline evaluate-masks {input:q} --records-dir={params.records:q}"
        " --params {params.cfg:q} --flow-params {params.flow:q} --out={output:q}"
        " > {log:q} 2>&1"


rule masks:
    input:
        per_set(f"{MASKS_DIR}/evaluation.tsv"),
