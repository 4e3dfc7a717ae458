# Guidance: CMP watershed + grid points for every stored flow; per-set statistics.


GUIDANCE_DIR = (
    f"{RESULTS}/{{set}}/guidance-{config['flow']['method']}"
    f"-K{config['guidance']['kernel_size']}G{config['guidance']['grid_stride']}"
)


rule guidance_video:
    input:
        f"{FLOW_DIR}/{{vid}}/pairs.tsv",
    output:
        points=f"{GUIDANCE_DIR}/{{vid}}.npz",
        figure=report(
            f"{GUIDANCE_DIR}/figures/{{vid}}.png",
            caption="../report/guidance.rst",
            category="Guidance points",
            subcategory="{set}",
            labels={"set": "{set}", "video": "{vid}"},
        ),
    log:
        f"{GUIDANCE_DIR}/logs/{{vid}}.log",
    benchmark:
        f"{GUIDANCE_DIR}/benchmarks/{{vid}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=stage_params("guidance"),
        max_magnitude=config["flow"]["viz_max_magnitude"],
    shell:
        "python -m pipeline guidance --pairs={input:q} --params {params.cfg:q}"
        " --viz-max-magnitude {params.max_magnitude} --out={output.points:q}"
        " --figure={output.figure:q} > {log:q} 2>&1"


rule guidance_chunk:
    input:
        f"{FLOW_DIR}/chunks/{{chunk}}.chunk.tsv",
    output:
        f"{GUIDANCE_DIR}/chunks/{{chunk}}.chunk.tsv",
    log:
        f"{GUIDANCE_DIR}/logs/{{chunk}}.log",
    benchmark:
        f"{GUIDANCE_DIR}/benchmarks/{{chunk}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        videos=chunk_videos,
        args=video_args(
            pairs=f"{FLOW_DIR}/{{vid}}/pairs.tsv",
            params=stage_params("guidance"),
            viz_max_magnitude=config["flow"]["viz_max_magnitude"],
            out=f"{GUIDANCE_DIR}/{{vid}}.npz",
            figure=f"{GUIDANCE_DIR}/figures/{{vid}}.png",
        ),
    shell:
        "python -m pipeline chunk --stage=guidance {params.videos:q} --outputs out figure"
        " --manifest={output:q} -- {params.args:q} > {log:q} 2>&1"


rule guidance_stats:
    input:
        chunks_of(f"{GUIDANCE_DIR}/chunks/{{chunk}}.chunk.tsv"),
    output:
        report(
            f"{GUIDANCE_DIR}/stats.json",
            caption="../report/guidance_stats.rst",
            category="Guidance points",
            subcategory="{set}",
        ),
    log:
        f"{GUIDANCE_DIR}/logs/stats.log",
    benchmark:
        f"{GUIDANCE_DIR}/benchmarks/stats.tsv"
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python -m pipeline --expand-chunks=out guidance-stats {input:q} --out={output:q} > {log:q} 2>&1"


rule guidance:
    input:
        per_set(f"{GUIDANCE_DIR}/stats.json"),
