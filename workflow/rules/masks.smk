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


rule masks_chunk:
    input:
        record=f"{RESULTS}/{{set}}/chunks/ingest/{{chunk}}.chunk.tsv",
        shots=f"{RESULTS}/{{set}}/chunks/shots/{{chunk}}.chunk.tsv",
        pairs=f"{FLOW_DIR}/chunks/{{chunk}}.chunk.tsv",
    output:
        f"{MASKS_DIR}/chunks/{{chunk}}.chunk.tsv",
    log:
        f"{MASKS_DIR}/logs/{{chunk}}.log",
    benchmark:
        f"{MASKS_DIR}/benchmarks/{{chunk}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        videos=chunk_videos,
        args=video_args(
            record=f"{RESULTS}/{{set}}/videos/{{vid}}.json",
            shots=f"{RESULTS}/{{set}}/shots/{{vid}}.json",
            pairs=f"{FLOW_DIR}/{{vid}}/pairs.tsv",
            params=stage_params("masks"),
            flow_params=stage_params("flow"),
            out=f"{MASKS_DIR}/{{vid}}/frames.tsv",
            figure=f"{MASKS_DIR}/{{vid}}/overlay.png",
        ),
    shell:
        "python -m pipeline chunk --stage=masks {params.videos:q} --outputs out figure"
        " --manifest={output:q} -- {params.args:q} > {log:q} 2>&1"


rule masks_evaluate:
    input:
        chunks_of(f"{MASKS_DIR}/chunks/{{chunk}}.chunk.tsv"),
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
        "python -m pipeline --expand-chunks=out evaluate-masks {input:q} --records-dir={params.records:q}"
        " --params {params.cfg:q} --flow-params {params.flow:q} --out={output:q}"
        " > {log:q} 2>&1"


rule masks:
    input:
        per_set(f"{MASKS_DIR}/evaluation.tsv"),
