# Shards: pack every accepted sample of a set into HDF5 shards + index.json (split by video).


SHARDS_DIR = f"{RESULTS}/{{set}}/shards-{config['flow']['method']}"


rule shards_set:
    input:
        pairs=chunks_of(f"{FLOW_DIR}/chunks/{{chunk}}.chunk.tsv"),
        masks=chunks_of(f"{MASKS_DIR}/chunks/{{chunk}}.chunk.tsv"),
        guidance=chunks_of(f"{GUIDANCE_DIR}/chunks/{{chunk}}.chunk.tsv"),
    output:
        directory(SHARDS_DIR),
    log:
        f"{RESULTS}/{{set}}/logs/shards.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/shards.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        flow_root=FLOW_DIR,
        masks_root=MASKS_DIR,
        guidance_root=GUIDANCE_DIR,
        cfg=stage_params("shards"),
        method=config["flow"]["method"],
        config=data_config_json(),
    shell:
        "python -m pipeline --expand-chunks=video_id shards {input.guidance:q} --flow-root={params.flow_root:q}"
        " --masks-root={params.masks_root:q} --guidance-root={params.guidance_root:q}"
        " --params {params.cfg:q} --flow-method={params.method:q}"
        " --config-json {params.config:q} --out-dir={output:q} > {log:q} 2>&1"


rule shards:
    input:
        per_set(SHARDS_DIR),
