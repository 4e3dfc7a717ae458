# Report figures: each per-video stage's figures of a set (flow contact sheets, mask overlays,
# guidance arrows) gathered into one folder per stage, which `snakemake --report` can show; the
# chunk jobs write them per video but cannot declare them (pipeline/stages/figures.py).


rule report_figures:
    input:
        flow=chunks_of(f"{FLOW_DIR}/chunks/{{chunk}}.chunk.tsv"),
        masks=chunks_of(f"{MASKS_DIR}/chunks/{{chunk}}.chunk.tsv"),
        guidance=chunks_of(f"{GUIDANCE_DIR}/chunks/{{chunk}}.chunk.tsv"),
    output:
        flow=figures_report(
            f"{FLOW_DIR}/report_figures",
            "../report/flow_contact_sheet.rst",
            "Optical flow",
        ),
        masks=figures_report(
            f"{MASKS_DIR}/report_figures",
            "../report/masks_overlay.rst",
            "Motion masks",
        ),
        guidance=figures_report(
            f"{GUIDANCE_DIR}/report_figures",
            "../report/guidance.rst",
            "Guidance points",
        ),
    log:
        f"{RESULTS}/{{set}}/logs/report_figures.log",
    conda:
        "../../envs/pipeline.yaml"
    params:
        limit=config["report"]["figures_per_stage"],
    shell:
        "(python -m pipeline figures --column=sheet --limit={params.limit} --out={output.flow:q} {input.flow:q}"
        " && python -m pipeline figures --column=figure --limit={params.limit} --out={output.masks:q} {input.masks:q}"
        " && python -m pipeline figures --column=figure --limit={params.limit} --out={output.guidance:q} {input.guidance:q})"
        " > {log:q} 2>&1"


rule figures:
    input:
        per_set(f"{FLOW_DIR}/report_figures"),
        per_set(f"{MASKS_DIR}/report_figures"),
        per_set(f"{GUIDANCE_DIR}/report_figures"),
