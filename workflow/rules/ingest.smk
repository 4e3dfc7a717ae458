# Ingest: (generate synthetic videos,) probe every video by decoding it, gather a manifest per set.


rule synthesize:
    output:
        video=f"{RESULTS}/{{set}}/source/video_{{index}}.avi",
        gt=f"{RESULTS}/{{set}}/source/video_{{index}}.gt.npz",
    log:
        f"{RESULTS}/{{set}}/logs/synthesize/video_{{index}}.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/synthesize/video_{{index}}.tsv"
    wildcard_constraints:
        index=r"\d{3}",
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=lambda w: stage_params("synthetic"),
        seed=lambda w: config["video_sets"][w.set].get("seed", 0),
    shell:
        "python -m pipeline synthesize --index {wildcards.index} --seed {params.seed}"
        " --params {params.cfg:q} --out-video={output.video:q} --out-gt={output.gt:q}"
        " > {log:q} 2>&1"


rule ingest_video:
    input:
        video=lambda w: video_entry(w).path,
    output:
        f"{RESULTS}/{{set}}/videos/{{vid}}.json",
    log:
        f"{RESULTS}/{{set}}/logs/ingest/{{vid}}.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/ingest/{{vid}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        relpath=lambda w: video_entry(w).relpath,
        cfg=stage_params("ingest"),
    shell:
        "python -m pipeline ingest --video={input.video:q} --video-id={wildcards.vid:q}"
        " --set={wildcards.set:q} --relpath={params.relpath:q}"
        " --params {params.cfg:q} --out={output:q} > {log:q} 2>&1"


# One job per chunk of videos (pipeline/stages/chunk.py); ingest_video stays for one-video targets.
rule ingest_chunk:
    input:
        chunk_sources,
    output:
        f"{RESULTS}/{{set}}/chunks/ingest/{{chunk}}.chunk.tsv",
    log:
        f"{RESULTS}/{{set}}/logs/ingest/{{chunk}}.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/ingest/{{chunk}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        stamp=chunk_stamp,
        videos=chunk_videos,
        args=video_args(
            video="{path}",
            video_id="{vid}",
            set="{set}",
            relpath="{relpath}",
            params=stage_params("ingest"),
            out=f"{RESULTS}/{{set}}/videos/{{vid}}.json",
        ),
    shell:
        "python -m pipeline chunk --stage=ingest {params.videos:q} --outputs out"
        " --manifest={output:q} -- {params.args:q} > {log:q} 2>&1"


rule manifest:
    input:
        chunks_of(f"{RESULTS}/{{set}}/chunks/ingest/{{chunk}}.chunk.tsv"),
    output:
        videos=f"{RESULTS}/{{set}}/videos.tsv",
        rejected=f"{RESULTS}/{{set}}/rejected.tsv",
    log:
        f"{RESULTS}/{{set}}/logs/manifest.log",
    benchmark:
        f"{RESULTS}/{{set}}/benchmarks/manifest.tsv"
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python -m pipeline --expand-chunks=out manifest {input:q} --videos-tsv={output.videos:q}"
        " --rejected-tsv={output.rejected:q} > {log:q} 2>&1"


rule ingest:
    input:
        per_set(f"{RESULTS}/{{set}}/videos.tsv"),
