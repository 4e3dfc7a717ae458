# Shards: pack a set's accepted samples into HDF5 shards, one job per chunk of videos (an added
# video repacks its chunk only), and a small per-set job writing index.json (train / val split by
# video). A shard folder's suffix names the optional stages its shards hold (pipeline/fields.py):
# shards-<flow> holds image + flow, shards-<flow>-masks adds the motion masks, ...-guidance the
# offline guidance points.


SHARDS_DIR = f"{RESULTS}/{{set}}/shards-{config['flow']['method']}{{parts}}"
STAGE_DIRS = {"masks": MASKS_DIR, "guidance": GUIDANCE_DIR}


wildcard_constraints:
    parts=r"(-masks)?(-guidance)?",


rule shards_chunk:
    input:
        unpack(shard_chunk_inputs),
    output:
        directory(f"{SHARDS_DIR}/{{chunk}}"),
    log:
        f"{SHARDS_DIR}/logs/{{chunk}}.log",
    benchmark:
        f"{SHARDS_DIR}/benchmarks/{{chunk}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        flow_root=FLOW_DIR,
        roots=shard_roots,
        # the split is the index's: a new val_fraction or seed repacks no chunk
        cfg=stage_params("shards", drop=("val_fraction", "seed")),
        method=config["flow"]["method"],
    shell:
        "python -m pipeline --expand-chunks=video_id shards-chunk {input.flow:q}"
        " --flow-root={params.flow_root:q} {params.roots:q} --params {params.cfg:q}"
        " --flow-method={params.method:q} --out-dir={output:q} > {log:q} 2>&1"


rule shards_index:
    input:
        shard_chunk_dirs,
    output:
        f"{SHARDS_DIR}/index.json",
    log:
        f"{RESULTS}/{{set}}/logs/shards{{parts}}.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/shards{{parts}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=stage_params("shards"),
        config=data_config_json(),
        folder=lambda w: SHARDS_DIR.format(set=w.set, parts=w.parts),
    shell:
        "python -m pipeline shards-index {input:q} --params {params.cfg:q}"
        " --config-json {params.config:q} --out-dir={params.folder:q} > {log:q} 2>&1"


rule shards:
    input:
        [shards_index(s, SELECTED_STAGES) for s in active_sets()],
