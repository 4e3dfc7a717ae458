# Disk use and time per per-video stage of a set, summed from the chunk manifests.


rule disk_usage:
    input:
        ingest=chunks_of(f"{RESULTS}/{{set}}/chunks/ingest/{{chunk}}.chunk.tsv"),
        shots=chunks_of(f"{RESULTS}/{{set}}/chunks/shots/{{chunk}}.chunk.tsv"),
        flow=chunks_of(f"{FLOW_DIR}/chunks/{{chunk}}.chunk.tsv"),
        masks=chunks_of(f"{MASKS_DIR}/chunks/{{chunk}}.chunk.tsv"),
        guidance=chunks_of(f"{GUIDANCE_DIR}/chunks/{{chunk}}.chunk.tsv"),
    output:
        f"{RESULTS}/{{set}}/disk_usage.tsv",
    log:
        f"{RESULTS}/{{set}}/logs/disk_usage.log",
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python -m pipeline disk-usage --stage ingest {input.ingest:q}"
        " --stage shots {input.shots:q} --stage flow {input.flow:q}"
        " --stage masks {input.masks:q} --stage guidance {input.guidance:q}"
        " --out={output:q} > {log:q} 2>&1"


rule disk:
    input:
        per_set(f"{RESULTS}/{{set}}/disk_usage.tsv"),
