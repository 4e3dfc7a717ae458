# Disk use and time per per-video stage of a set, summed from the chunk manifests: the stages
# that run (the masks and guidance stages only where the methods or guidance.offline ask).

USAGE_STAGES = {
    "ingest": f"{RESULTS}/{{set}}/chunks/ingest",
    "shots": f"{RESULTS}/{{set}}/chunks/shots",
    "flow": f"{FLOW_DIR}/chunks",
    "masks": f"{MASKS_DIR}/chunks",
    "guidance": f"{GUIDANCE_DIR}/chunks",
}
USED_STAGES = ["ingest", "shots", "flow", *SELECTED_STAGES]


rule disk_usage:
    input:
        unpack(usage_inputs),
    output:
        f"{RESULTS}/{{set}}/disk_usage.tsv",
    log:
        f"{RESULTS}/{{set}}/logs/disk_usage.log",
    conda:
        "../../envs/pipeline.yaml"
    params:
        args=usage_args,
    shell:
        "python -m pipeline disk-usage {params.args:q} --out={output:q} > {log:q} 2>&1"


rule disk:
    input:
        per_set(f"{RESULTS}/{{set}}/disk_usage.tsv"),
