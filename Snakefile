# motion-ssl: raw videos -> shots -> optical flow -> motion masks / guidance -> HDF5 shards
# -> self-supervised pretraining -> downstream benchmark. See README.md and docs/.
from snakemake.utils import min_version

min_version("8.10")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/shots.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/guidance.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/usage.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/science.smk"


rule all:
    default_target: True
    input:
        rules.ingest.input,
        rules.shots.input,
        rules.flow.input,
        # the masks and offline guidance stages only where pretrain.methods or guidance.offline
        # ask for them (pipeline/fields.py)
        [rules.masks.input] if "masks" in SELECTED_STAGES else [],
        [rules.guidance.input] if GUIDANCE_OFFLINE else [],
        rules.shards.input,
        rules.disk.input,
        rules.figures.input,
        pretrain_backbones().values(),
        rules.benchmark.input,
