# Report figures: each per-video stage's figures of a set (flow contact sheets, mask overlays,
# guidance arrows) gathered into one folder per stage, which `snakemake --report` can show; the
# chunk jobs write them per video but cannot declare them (pipeline/stages/figures.py).
# One rule per stage, so a stage that does not run (stages follow the methods) draws nothing.

# stage -> (folder, manifest column of its figure, report caption, report category)
FIGURE_STAGES = {
    "flow": (FLOW_DIR, "sheet", "../report/flow_contact_sheet.rst", "Optical flow"),
    "masks": (MASKS_DIR, "figure", "../report/masks_overlay.rst", "Motion masks"),
    "guidance": (GUIDANCE_DIR, "figure", "../report/guidance.rst", "Guidance points"),
}


for stage, (folder, column, caption, category) in FIGURE_STAGES.items():

    rule:
        name:
            f"report_figures_{stage}"
        input:
            chunks_of(f"{folder}/chunks/{{chunk}}.chunk.tsv"),
        output:
            figures_report(f"{folder}/report_figures", caption, category),
        log:
            f"{RESULTS}/{{set}}/logs/report_figures_{stage}.log",
        conda:
            "../../envs/pipeline.yaml"
        params:
            limit=config["report"]["figures_per_stage"],
            column=column,
        shell:
            "python -m pipeline figures --column={params.column} --limit={params.limit}"
            " --out={output:q} {input:q} > {log:q} 2>&1"


rule figures:
    input:
        [
            per_set(f"{FIGURE_STAGES[s][0]}/report_figures")
            for s in ("flow", *SELECTED_STAGES)
        ],
