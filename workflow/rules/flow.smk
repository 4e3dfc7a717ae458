# Flow: sample training pairs per video, compute optical flow, store frames + 16-bit flow PNGs.


FLOW_DIR = f"{RESULTS}/{{set}}/flow-{config['flow']['method']}"


rule flow_video:
    input:
        record=f"{RESULTS}/{{set}}/videos/{{vid}}.json",
        shots=f"{RESULTS}/{{set}}/shots/{{vid}}.json",
    output:
        pairs=f"{FLOW_DIR}/{{vid}}/pairs.tsv",
        dropped=f"{FLOW_DIR}/{{vid}}/dropped.tsv",
        sheet=report(
            f"{FLOW_DIR}/{{vid}}/contact_sheet.png",
            caption="../report/flow_contact_sheet.rst",
            category="Optical flow",
            subcategory="{set}",
            labels={"set": "{set}", "video": "{vid}"},
        ),
    log:
        f"{FLOW_DIR}/logs/{{vid}}.log",
    benchmark:
        f"{FLOW_DIR}/benchmarks/{{vid}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    resources:
        **gpu_resources(1 if config["flow"]["method"].startswith("raft") else 0),
    params:
        flow=stage_params("flow"),
        sampling=stage_params("sampling"),
    shell:
        "python -m pipeline flow --record={input.record:q} --shots={input.shots:q}"
        " --flow-params {params.flow:q} --sampling-params {params.sampling:q}"
        " --pairs={output.pairs:q} --dropped={output.dropped:q} --sheet={output.sheet:q}"
        " > {log:q} 2>&1"


rule flow_chunk:
    input:
        record=f"{RESULTS}/{{set}}/chunks/ingest/{{chunk}}.chunk.tsv",
        shots=f"{RESULTS}/{{set}}/chunks/shots/{{chunk}}.chunk.tsv",
    output:
        f"{FLOW_DIR}/chunks/{{chunk}}.chunk.tsv",
    log:
        f"{FLOW_DIR}/logs/{{chunk}}.log",
    benchmark:
        f"{FLOW_DIR}/benchmarks/{{chunk}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    resources:
        **gpu_resources(1 if config["flow"]["method"].startswith("raft") else 0),
    params:
        videos=chunk_videos,
        args=video_args(
            record=f"{RESULTS}/{{set}}/videos/{{vid}}.json",
            shots=f"{RESULTS}/{{set}}/shots/{{vid}}.json",
            flow_params=stage_params("flow"),
            sampling_params=stage_params("sampling"),
            pairs=f"{FLOW_DIR}/{{vid}}/pairs.tsv",
            dropped=f"{FLOW_DIR}/{{vid}}/dropped.tsv",
            sheet=f"{FLOW_DIR}/{{vid}}/contact_sheet.png",
        ),
    shell:
        "python -m pipeline chunk --stage=flow {params.videos:q} --outputs pairs dropped sheet"
        " --manifest={output:q} -- {params.args:q} > {log:q} 2>&1"


rule flow_summary:
    input:
        chunks_of(f"{FLOW_DIR}/chunks/{{chunk}}.chunk.tsv"),
    output:
        report(
            f"{FLOW_DIR}/summary.tsv",
            caption="../report/flow_summary.rst",
            category="Optical flow",
            subcategory="{set}",
        ),
    log:
        f"{FLOW_DIR}/logs/summary.log",
    benchmark:
        f"{FLOW_DIR}/benchmarks/summary.tsv"
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python -m pipeline --expand-chunks=pairs flow-summary {input:q} --out={output:q}"
        " > {log:q} 2>&1"


rule flow:
    input:
        per_chunk(f"{FLOW_DIR}/chunks/{{chunk}}.chunk.tsv"),
        per_set(f"{FLOW_DIR}/summary.tsv"),
