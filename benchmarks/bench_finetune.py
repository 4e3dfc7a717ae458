"""Seconds per epoch of the downstream benchmark on CPU at the demo settings.

Segmentation fine-tuning (ResNet-18 stride-8 trunk + FCN head, ``depth: all``) and the linear
probe (feature extraction once, then logistic-regression epochs) with the defaults of
``models.benchmark.TASK_DEFAULTS`` on the synthetic data. Reports the median over the epochs of
each run and over ``--repeats`` runs. Writes benchmarks/out/finetune.json.

    python benchmarks/bench_finetune.py [--threads 1] [--repeats 2] [--seg-epochs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from models import finetune
from models.benchmark import TASK_DEFAULTS
from pipeline.synthetic_scene import CLASS_NAMES

OUT = Path(__file__).resolve().parent / "out" / "finetune.json"


def bench_segmentation(repeats: int, epochs: int) -> dict[str, object]:
    task = TASK_DEFAULTS["segmentation"]
    start = time.perf_counter()
    train, val = finetune.synthetic_segmentation_arrays(
        task["train_images"], task["val_images"], size=task["size"]
    )
    render = time.perf_counter() - start
    epochs_s: list[float] = []
    mious = []
    for seed in range(repeats):
        result = finetune.run_segmentation(
            arch="resnet18",
            weights=None,
            train=train,
            val=val,
            num_classes=len(CLASS_NAMES),
            seed=seed,
            depth=task["depth"],
            epochs=epochs,
            batch_size=task["batch_size"],
            lr=task["lr"],
            head_channels=task["head_channels"],
            accelerator="cpu",
        )
        epochs_s += result["epoch_seconds"]
        mious.append(result["miou"])
    return {
        "task": "segmentation",
        "size": task["size"],
        "train_images": task["train_images"],
        "batch_size": task["batch_size"],
        "render_seconds": render,
        "seconds_per_epoch_median": statistics.median(epochs_s),
        "epoch_seconds": epochs_s,
        "images_per_second": task["train_images"] / statistics.median(epochs_s),
        "miou_random_init": mious,
    }


def bench_probe(repeats: int) -> dict[str, object]:
    task = TASK_DEFAULTS["probe"]
    train, val = finetune.synthetic_classification_arrays(
        task["train_images"], task["val_images"], size=task["size"]
    )
    epochs_s: list[float] = []
    extract = []
    top1 = []
    for seed in range(repeats):
        result = finetune.run_probe(
            arch="resnet18",
            weights=None,
            train=train,
            val=val,
            num_classes=len(CLASS_NAMES),
            seed=seed,
            epochs=task["epochs"],
            batch_size=task["batch_size"],
            lr=task["lr"],
            accelerator="cpu",
        )
        epochs_s += result["epoch_seconds"]
        extract.append(result["extract_seconds"])
        top1.append(result["top1"])
    images = task["train_images"] + task["val_images"]
    return {
        "task": "probe",
        "size": task["size"],
        "train_images": task["train_images"],
        "epochs": task["epochs"],
        "seconds_per_epoch_median": statistics.median(epochs_s),
        "extract_seconds_median": statistics.median(extract),
        "extract_images_per_second": images / statistics.median(extract),
        "top1_random_init": top1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2, help="runs (seeds) per task")
    parser.add_argument("--seg-epochs", type=int, default=3, help="epochs per segmentation run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "backbone": "resnet18",
        "runs": [bench_segmentation(args.repeats, args.seg_epochs), bench_probe(args.repeats)],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'task':<14}{'s/epoch':>10}{'extract s':>11}  (threads={args.threads}, cpu)")
    for run in results["runs"]:
        extract = run.get("extract_seconds_median")
        extract_text = f"{extract:>11.2f}" if extract is not None else f"{'-':>11}"
        print(f"{run['task']:<14}{run['seconds_per_epoch_median']:>10.3f}{extract_text}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
