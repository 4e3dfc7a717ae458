"""Which sample fields each pre-training method reads, and which stage makes each field.

The one declaration the workflow plans from (issue 28: a target builds what its methods need and
nothing else). The Snakefile imports it to decide whether the masks stage runs and what the shards
of a set hold; ``models.train`` checks a run's shard sets against it before training, so a method
whose field is missing fails at once, in one line that names the stage to enable. No torch here.

* ``image`` and ``flow`` come from the flow stage (frames + quantised flow): every method;
* ``trimap`` / ``soft`` from the masks stage (uNLC, Pathak et al. 2017): motion masks only;
* ``guidance`` from the offline guidance stage (CMP, Zhan et al. 2019, Sec. 3.2): no method reads
  it from the shards (CMP samples its guidance online on the augmented flow), so that stage runs
  only when ``guidance.offline`` asks for it.

A new method adds one entry to :data:`METHOD_FIELDS` (a test checks every registered method has
one, and that it covers the fields its ``models.data`` view reads).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# field -> the stage that writes it
FIELD_STAGE: dict[str, str] = {
    "image": "flow",
    "flow": "flow",
    "trimap": "masks",
    "soft": "masks",
    "guidance": "guidance",
}
# the stages a shard set may hold beyond the flow stage's image and flow, in shard-folder order
OPTIONAL_STAGES = ("masks", "guidance")

METHOD_FIELDS: dict[str, tuple[str, ...]] = {
    "cmp": ("image", "flow"),
    "cpfs": ("image", "flow"),
    "s3": ("image", "flow"),
    "flowcls": ("image", "flow"),
    "motionmask": ("image", "trimap"),
}


def method_fields(method: str) -> tuple[str, ...]:
    if method not in METHOD_FIELDS:
        raise ValueError(f"no field declaration for method {method!r} in pipeline/fields.py")
    return METHOD_FIELDS[method]


def stages_for(methods: Iterable[str], *, guidance_offline: bool = False) -> tuple[str, ...]:
    """The optional stages (:data:`OPTIONAL_STAGES` order) the shards of ``methods`` need."""
    needed = {FIELD_STAGE[f] for m in methods for f in method_fields(m)}
    if guidance_offline:
        needed.add("guidance")
    return tuple(s for s in OPTIONAL_STAGES if s in needed)


def stage_fields(stages: Iterable[str]) -> tuple[str, ...]:
    """The fields a shard set built from the flow stage plus ``stages`` holds."""
    on = {"flow", *stages}
    return tuple(f for f, s in FIELD_STAGE.items() if s in on)


def shards_suffix(stages: Iterable[str]) -> str:
    """The shard folder's suffix naming its optional stages: ``""``, ``-masks``, ``-masks-guidance``."""
    on = set(stages)
    unknown = on - set(OPTIONAL_STAGES)
    if unknown:
        raise ValueError(f"unknown optional stages {sorted(unknown)}; known: {OPTIONAL_STAGES}")
    return "".join(f"-{s}" for s in OPTIONAL_STAGES if s in on)


def enable_hint(stage: str, method: str) -> str:
    if stage == "guidance":
        return "set guidance.offline: true"
    return f"add {method} to pretrain.methods or run `snakemake pretrain_{method}`"


def missing_fields(method: str, held: Iterable[str], where: str) -> str | None:
    """One line saying which field ``method`` reads that ``held`` lacks and the stage to enable
    (``None`` when nothing is missing)."""
    have = set(held)
    for field in method_fields(method):
        if field not in have:
            stage = FIELD_STAGE[field]
            return (
                f"{where} holds no {field!r} field, which method {method} reads: enable the "
                f"{stage} stage ({enable_hint(stage, method)})"
            )
    return None


def index_fields(index: Mapping) -> tuple[str, ...]:
    """The fields a shard set's ``index.json`` says it holds; an index written before the
    declaration (no ``fields`` key) holds image, flow and guidance, and masks where any sample
    has one."""
    if "fields" in index:
        return tuple(index["fields"])
    stages = ["guidance"]
    if any(any(entry.get("has_mask", [])) for entry in index.get("shards", [])):
        stages.append("masks")
    return stage_fields(stages)
