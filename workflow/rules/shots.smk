# Shots: split every ingested video into shots; per set, a table and the cut F1 on ground truth.


rule shots_video:
    input:
        f"{RESULTS}/{{set}}/videos/{{vid}}.json",
    output:
        f"{RESULTS}/{{set}}/shots/{{vid}}.json",
    log:
        f"{RESULTS}/{{set}}/logs/shots/{{vid}}.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/shots/{{vid}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=stage_params("shots"),
    shell:
        "python -m pipeline shots --record={input:q} --params {params.cfg:q} --out={output:q}"
        " > {log:q} 2>&1"


rule shots_chunk:
    input:
        f"{RESULTS}/{{set}}/chunks/ingest/{{chunk}}.chunk.tsv",
    output:
        f"{RESULTS}/{{set}}/chunks/shots/{{chunk}}.chunk.tsv",
    log:
        f"{RESULTS}/{{set}}/logs/shots/{{chunk}}.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/shots/{{chunk}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        videos=chunk_videos,
        args=video_args(
            record=f"{RESULTS}/{{set}}/videos/{{vid}}.json",
            params=stage_params("shots"),
            out=f"{RESULTS}/{{set}}/shots/{{vid}}.json",
        ),
    shell:
        "python -m pipeline chunk --stage=shots {params.videos:q} --outputs out"
        " --manifest={output:q} -- {params.args:q} > {log:q} 2>&1"


rule shots_summary:
    input:
        chunks_of(f"{RESULTS}/{{set}}/chunks/shots/{{chunk}}.chunk.tsv"),
    output:
        tsv=f"{RESULTS}/{{set}}/shots.tsv",
        evaluation=f"{RESULTS}/{{set}}/shots_eval.json",
    log:
        f"{RESULTS}/{{set}}/logs/shots_summary.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/shots_summary.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        records=f"{RESULTS}/{{set}}/videos",
    shell:
        "python -m pipeline --expand-chunks=out shots-summary {input:q} --records-dir={params.records:q}"
        " --out-tsv={output.tsv:q} --out-eval={output.evaluation:q} > {log:q} 2>&1"


rule shots:
    input:
        per_set(f"{RESULTS}/{{set}}/shots.tsv"),
