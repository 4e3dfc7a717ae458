"""Downstream benchmark of pre-trained trunks: every initialisation × task × seed, one table.

    python -m models.benchmark --config run.yaml [--set seeds=[0,1] ...]

The run config (YAML or JSON; every key and its default in ``DEFAULT_CONFIG`` and
``TASK_DEFAULTS``) names the trunk architecture, the initialisations to compare (``random`` as
the control, ``backbone.pth`` files from ``models.train``, or user weights such as torchvision's
ImageNet file), the tasks with their budgets, and the seeds. Each (task, initialisation) is run
once per seed with ``models.finetune.run_segmentation`` / ``run_probe`` and the spread over seeds
is reported, as Zhan et al. 2019 (Sec. 4.2, "improvement from a randomly initialized model") and
Pathak et al. 2017 (Sec. 6, frozen-layer and low-shot settings) compare representations.

Outputs in ``output_dir``, each written atomically: ``summary.tsv`` (one row per task ×
initialisation: mean, sample std and per-seed values of the metric, the mean per-seed difference
to the control (``random``, else the first initialisation) with a paired t-test and Wilcoxon
signed-rank p-value and the verdict helps / no difference / hurts at p < 0.05 (t-test;
``models.downstream_metrics.paired_test``), median seconds per training epoch,
feature-extraction seconds of a probe), ``summary.png`` (one group of bars per task, one
bar per initialisation, error bars = std) and ``config.yaml`` (the resolved config). Every number
follows from the config and the seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models import finetune
from models.train import parse_override
from pipeline.atomic import atomic_path, write_text, write_tsv

__all__ = [
    "DEFAULT_CONFIG",
    "SUMMARY_COLUMNS",
    "TASK_DEFAULTS",
    "control_name",
    "load_config",
    "main",
    "plot_summary",
    "resolve_config",
    "run_benchmark",
    "summarise",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "output_dir": "results/benchmark/default",
    "backbone": "resnet18",
    "backbone_kwargs": {},
    "accelerator": "auto",
    "num_threads": None,  # CPU threads for torch (null: torch's default); Snakemake's {threads}
    "seeds": [0, 1, 2],
    "initialisations": [{"name": "random", "backbone_path": None}],
    "tasks": [
        {"name": "seg_synthetic", "kind": "segmentation", "dataset": "synthetic"},
        {"name": "probe_synthetic", "kind": "probe", "dataset": "synthetic"},
    ],
    "plot": {"dpi": 120},
}

# Per-kind task keys and defaults (CPU demo budgets); a task overrides any of them.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "segmentation": {
        "name": None,
        "kind": "segmentation",
        "dataset": "synthetic",  # synthetic | textures | voc
        "root": None,  # VOC: folder holding VOCdevkit/VOC2012
        "train_split": "train",
        "val_split": "val",
        "size": 64,  # square image side (multiple of 8); not used by VOC
        "crop_size": 320,  # VOC: training crop side after random scaling
        "scale_range": [0.5, 2.0],  # VOC: random scale of training images
        "train_images": 128,  # images rendered (VOC: a limit, null = the whole split)
        "val_images": 48,  # VOC: unless set, null = every image of the val split
        "train_size": None,  # low-shot subset of the training images, drawn per seed
        "depth": "all",  # all | above_conv1..above_conv5 | frozen
        "epochs": 2,
        "batch_size": 16,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1.0e-4,
        "poly_power": 0.9,
        "head_channels": 128,
    },
    "probe": {
        "name": None,
        "kind": "probe",
        "dataset": "synthetic",  # synthetic | textures | imagefolder
        "root": None,  # ImageFolder: folder with train/ and val/ class folders
        "size": 64,
        "train_images": 512,
        "val_images": 128,
        "train_size": None,
        "epochs": 30,
        "batch_size": 64,
        "lr": 1.0e-2,
        "weight_decay": 1.0e-4,
    },
}
_DATASETS = {
    "segmentation": ("synthetic", "textures", "voc"),
    "probe": ("synthetic", "textures", "imagefolder"),
}
_GENERATED = ("synthetic", "textures")  # data sets made here, needing no root folder
VOC_CLASSES = 21  # background + 20 object classes

SUMMARY_COLUMNS = [
    "task",
    "dataset",
    "init",
    "depth",
    "train_size",
    "metric",
    "mean",
    "std",
    "n_seeds",
    "values",
    "diff_vs_random",
    "p_ttest",
    "p_wilcoxon",
    "verdict",
    "seconds_per_epoch",
    "extract_seconds",
    "device",
]


# --------------------------------------------------------------------------- configuration


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in merged:
            raise ValueError(f"unknown key {where}{key!r}")
        if isinstance(merged[key], dict) and key != "backbone_kwargs":
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}{key!r} must be a mapping")
            merged[key] = _merge(merged[key], value, f"{where}{key}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _resolve_task(task: Mapping[str, Any], index: int) -> dict[str, Any]:
    if not isinstance(task, Mapping):
        raise ValueError(f"tasks[{index}] must be a mapping")
    kind = task.get("kind", "segmentation")
    if kind not in TASK_DEFAULTS:
        raise ValueError(
            f"tasks[{index}].kind must be one of {sorted(TASK_DEFAULTS)}, got {kind!r}"
        )
    resolved = _merge(TASK_DEFAULTS[kind], task, f"tasks[{index}].")
    if resolved["name"] is None:
        resolved["name"] = f"{kind}_{resolved['dataset']}"
    if resolved["dataset"] not in _DATASETS[kind]:
        raise ValueError(
            f"tasks[{index}].dataset for {kind} must be one of {_DATASETS[kind]}, "
            f"got {resolved['dataset']!r}"
        )
    if resolved["dataset"] == "voc":  # protocol: the whole splits unless a limit is given
        for key in ("train_images", "val_images"):
            resolved[key] = task.get(key)
    if resolved["dataset"] not in _GENERATED and not resolved["root"]:
        raise ValueError(f"tasks[{index}] ({resolved['name']}): dataset needs a root folder")
    if resolved["size"] % 8 or resolved["size"] < 32:
        raise ValueError(f"tasks[{index}].size must be a multiple of 8 >= 32")
    if kind == "segmentation" and resolved["depth"] not in finetune.DEPTHS:
        raise ValueError(f"tasks[{index}].depth must be one of {list(finetune.DEPTHS)}")
    return resolved


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, tasks completed from ``TASK_DEFAULTS``, names checked."""
    resolved = _merge(DEFAULT_CONFIG, config, "")
    threads = resolved["num_threads"]
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"num_threads must be null or a positive integer, got {threads!r}")
    seeds = resolved["seeds"]
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {seeds}")
    inits = []
    for k, init in enumerate(resolved["initialisations"]):
        if not isinstance(init, Mapping) or not init.get("name"):
            raise ValueError(f"initialisations[{k}] needs a name")
        extra = set(init) - {"name", "backbone_path"}
        if extra:
            raise ValueError(f"initialisations[{k}] has unknown keys {sorted(extra)}")
        inits.append({"name": str(init["name"]), "backbone_path": init.get("backbone_path")})
    resolved["initialisations"] = inits
    resolved["tasks"] = [_resolve_task(t, k) for k, t in enumerate(resolved["tasks"])]
    for what, items in (("initialisation", inits), ("task", resolved["tasks"])):
        names = [item["name"] for item in items]
        if not names:
            raise ValueError(f"at least one {what} is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"{what} names must be unique, got {names}")
    return resolved


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults ← YAML/JSON file ← ``key=value`` overrides, resolved."""
    config: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        loaded = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        if not isinstance(loaded or {}, Mapping):
            raise ValueError(f"{path}: top level must be a mapping")
        config = dict(loaded or {})
    for text in overrides:
        config = {**config, **parse_override(text)}
    return resolve_config(config)


# --------------------------------------------------------------------------- running


def _task_data(task: Mapping[str, Any]) -> tuple[tuple, tuple, int]:
    """(train, val, num_classes) arrays of a task, loaded once for every init and seed."""
    size = int(task["size"])
    if task["dataset"] == "textures":
        from models import transfer

        make = (
            transfer.mosaic_segmentation_arrays
            if task["kind"] == "segmentation"
            else transfer.patch_classification_arrays
        )
        train = make(int(task["train_images"]), "train", size=size)
        val = make(int(task["val_images"]), "val", size=size)
        return train, val, len(transfer.TRANSFER_PHOTOS)
    if task["kind"] == "segmentation":
        if task["dataset"] == "synthetic":
            from pipeline.synthetic_scene import CLASS_NAMES

            train, val = finetune.synthetic_segmentation_arrays(
                int(task["train_images"]), int(task["val_images"]), size=size
            )
            return train, val, len(CLASS_NAMES)
        voc = {"crop_size": int(task["crop_size"]), "scale_range": tuple(task["scale_range"])}
        train = finetune.VOCSegmentationDataset(
            task["root"], task["train_split"], True, limit=task["train_images"], **voc
        )
        val = finetune.VOCSegmentationDataset(
            task["root"], task["val_split"], False, limit=task["val_images"], **voc
        )
        return train, val, VOC_CLASSES
    if task["dataset"] == "synthetic":
        from pipeline.synthetic_scene import CLASS_NAMES

        train, val = finetune.synthetic_classification_arrays(
            int(task["train_images"]), int(task["val_images"]), size=size
        )
        return train, val, len(CLASS_NAMES)
    root = Path(task["root"])
    tx, ty, classes = finetune.imagefolder_arrays(root / "train", size, task["train_images"])
    vx, vy, val_classes = finetune.imagefolder_arrays(root / "val", size, task["val_images"])
    if classes != val_classes:
        raise ValueError(f"{root}: train/ and val/ hold different class folders")
    return (tx, ty), (vx, vy), len(classes)


def _run_one(
    config: Mapping[str, Any],
    task: Mapping[str, Any],
    init: Mapping[str, Any],
    data: tuple,
    seed: int,
    features: tuple | None = None,
) -> dict[str, Any]:
    train, val, num_classes = data
    common = {
        "arch": config["backbone"],
        "weights": init["backbone_path"],
        "train": train,
        "val": val,
        "num_classes": num_classes,
        "seed": seed,
        "train_size": task["train_size"],
        "epochs": int(task["epochs"]),
        "batch_size": int(task["batch_size"]),
        "lr": float(task["lr"]),
        "weight_decay": float(task["weight_decay"]),
        "backbone_kwargs": config["backbone_kwargs"],
        "accelerator": config["accelerator"],
    }
    if task["kind"] == "segmentation":
        result = finetune.run_segmentation(
            **common,
            depth=task["depth"],
            momentum=float(task["momentum"]),
            poly_power=float(task["poly_power"]),
            head_channels=int(task["head_channels"]),
        )
        return {**result, "value": result["miou"], "metric": "miou", "extract_seconds": None}
    result = finetune.run_probe(**common, features=features)
    return {**result, "value": result["top1"], "metric": "top1"}


def _shared_probe_features(
    config: Mapping[str, Any], task: Mapping[str, Any], init: Mapping[str, Any], data: tuple
) -> tuple[tuple | None, float]:
    """A probe's features under a weights file, extracted once for every seed (a fixed trunk);
    ``(None, 0)`` for segmentation and for random init (a new trunk per seed)."""
    if task["kind"] != "probe" or init["backbone_path"] is None:
        return None, 0.0
    start = time.perf_counter()
    features = finetune.probe_features(
        config["backbone"],
        init["backbone_path"],
        data[0][0],
        data[1][0],
        config["backbone_kwargs"],
        config["accelerator"],
    )
    return features, time.perf_counter() - start


def control_name(initialisations: Sequence[Mapping[str, Any]]) -> str:
    """The control every initialisation is tested against: ``random`` if present, else the first."""
    names = [init["name"] for init in initialisations]
    return "random" if "random" in names else names[0]


def summarise(
    task: Mapping[str, Any],
    init_name: str,
    runs: Sequence[Mapping[str, Any]],
    device: str,
    control: Sequence[Mapping[str, Any]] | None = None,
) -> list[object]:
    """One ``SUMMARY_COLUMNS`` row from the per-seed results of a task × initialisation.

    ``control``: the control's per-seed runs (same seeds, same order); the row then carries the
    mean difference, the paired t-test and Wilcoxon p-values and the verdict. ``None`` (the
    control's own row) leaves them empty.
    """
    values = [float(r["value"]) for r in runs]
    extract = [r["extract_seconds"] for r in runs if r.get("extract_seconds") is not None]
    if control is None:
        paired: list[object] = [None, None, None, "control"]
    else:
        test = finetune.paired_test(values, [float(r["value"]) for r in control])
        paired = [test["mean_diff"], test["p_t"], test["p_wilcoxon"], finetune.verdict(test)]
    return [
        task["name"],
        task["dataset"],
        init_name,
        task["depth"] if task["kind"] == "segmentation" else "frozen",
        runs[0]["train_images"],
        runs[0]["metric"],
        statistics.fmean(values),
        statistics.stdev(values) if len(values) > 1 else 0.0,  # sample std over seeds
        len(values),
        ",".join(f"{v:.6g}" for v in values),
        *paired,
        statistics.median(float(r["seconds_per_epoch"]) for r in runs),
        statistics.median(extract) if extract else None,
        device,
    ]


def plot_summary(rows: Sequence[Mapping[str, Any]], path: str | Path, dpi: int = 120) -> Path:
    """Grouped bar chart: one group per task, one bar per initialisation, error bars = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    inits = list(dict.fromkeys(r["init"] for r in rows))
    by_key = {(r["task"], r["init"]): r for r in rows}
    width = 0.8 / len(inits)
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(tasks) * max(1, len(inits)) / 2), 3.5))
    x = np.arange(len(tasks))
    for k, init in enumerate(inits):
        means = [float(by_key[(t, init)]["mean"]) if (t, init) in by_key else np.nan for t in tasks]
        stds = [float(by_key[(t, init)]["std"]) if (t, init) in by_key else 0.0 for t in tasks]
        axes.bar(
            x + (k - (len(inits) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=init
        )
    metrics = [by_key[(t, next(i for i in inits if (t, i) in by_key))]["metric"] for t in tasks]
    axes.set_xticks(x, [f"{t}\n({m})" for t, m in zip(tasks, metrics, strict=True)])
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("metric (mean ± std over seeds)")
    axes.legend(title="initialisation", fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    plt.close(figure)
    return Path(path)


def run_benchmark(config: Mapping[str, Any]) -> Path:
    """Run every task × initialisation × seed; write summary.tsv, summary.png, config.yaml."""
    import torch

    config = resolve_config(config)
    if config["num_threads"] is not None:
        # Oversubscribed OpenMP threads spin against each other: on a shared 2-core machine one
        # thread ran the tiny test config ~10x faster than two.
        torch.set_num_threads(int(config["num_threads"]))
    output_dir = Path(config["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    on_gpu = config["accelerator"] in ("gpu", "cuda") or (
        config["accelerator"] == "auto" and torch.cuda.is_available()
    )
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    # refuse a bad weights file before spending time on any training
    for init in config["initialisations"]:
        if init["backbone_path"] is not None:
            finetune.build_trunk(
                config["backbone"], init["backbone_path"], config["backbone_kwargs"]
            )
    rows: list[list[object]] = []
    control = control_name(config["initialisations"])
    for task in config["tasks"]:
        data = _task_data(task)
        runs: dict[str, list[dict[str, Any]]] = {}
        for init in config["initialisations"]:
            runs[init["name"]] = []
            features, seconds = _shared_probe_features(config, task, init, data)
            for seed in config["seeds"]:
                log.info("%s / %s / seed %d", task["name"], init["name"], seed)
                run = _run_one(config, task, init, data, int(seed), features)
                if features is not None:
                    run["extract_seconds"] = seconds
                runs[init["name"]].append(run)
        for name, task_runs in runs.items():
            against = None if name == control else runs[control]
            rows.append(summarise(task, name, task_runs, device, against))
    write_tsv(output_dir / "summary.tsv", SUMMARY_COLUMNS, rows)
    plot_summary(
        [dict(zip(SUMMARY_COLUMNS, row, strict=True)) for row in rows],
        output_dir / "summary.png",
        dpi=int(config["plot"]["dpi"]),
    )
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", type=Path, help="run config, YAML or JSON")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a top-level key, e.g. seeds=[0,1] (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
    except ValueError as error:
        parser.error(str(error))
    run_benchmark(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
