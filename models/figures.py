"""Figures shared by every pretraining run: loss curves and the plumbing of validation panels.

* ``plot_loss_curves`` reads every ``logs/version_*/metrics.csv`` of the CSV logger (a resumed run
  starts a new version; for a step logged twice the later run wins) and plots train / val loss
  and one validation metric (the method's headline number) against the global step.
* ``validation_batches`` runs a method's model on the first validation samples (eval mode, no
  grad, the batch expanded on the device as in training), ``to_rgb`` undoes the ImageNet
  normalisation and ``save_figure`` writes a PNG atomically; each method's own panels
  (``models/methods/<name>.py``) are built from these.

matplotlib runs on the Agg backend.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from models.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from pipeline.atomic import atomic_path  # noqa: E402

__all__ = [
    "plot_loss_curves",
    "plot_message",
    "read_metrics",
    "save_figure",
    "to_rgb",
    "validation_batches",
]


def read_metrics(log_root: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Metric name → sorted (step, value) from all CSV-logger versions under ``log_root``."""
    versions = sorted(
        Path(log_root).glob("version_*/metrics.csv"),
        key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
    )
    by_metric: dict[str, dict[int, float]] = {}
    for path in versions:
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                step = row.get("step", "")
                if not step:
                    continue
                for name, value in row.items():
                    if name in ("step", "epoch") or value in ("", None):
                        continue
                    by_metric.setdefault(name, {})[int(float(step))] = float(value)
    return {name: sorted(values.items()) for name, values in by_metric.items()}


def save_figure(fig: plt.Figure, out_path: str | Path) -> Path:
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(out_path)


def plot_loss_curves(
    log_root: str | Path,
    out_path: str | Path,
    *,
    metric: str = "val/epe",
    metric_label: str = "validation EPE (px)",
    loss_label: str = "loss",
    title: str = "pretraining",
) -> Path:
    """Loss (left axis) and validation ``metric`` (right axis) against the global step; every
    logged ``val/baseline_*`` series (e.g. CMP's zero / guidance-mean / nearest-guidance EPE) is
    drawn dotted on the metric's axis."""
    metrics = read_metrics(log_root)
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    if not any(name in metrics for name in ("train/loss", "val/loss", metric)):
        # A run shorter than log_every_n_steps logs nothing; say so rather than fail the run.
        loss_axis.text(0.5, 0.5, "no metrics logged yet", ha="center", va="center")
    for name, style in (("train/loss", "-"), ("val/loss", "o-")):
        if name in metrics:
            steps, values = zip(*metrics[name], strict=True)
            loss_axis.plot(steps, values, style, label=name, markersize=3)
    loss_axis.set_xlabel("global step")
    loss_axis.set_ylabel(loss_label)
    handles, labels = loss_axis.get_legend_handles_labels()
    if metric in metrics:
        metric_axis = loss_axis.twinx()
        steps, values = zip(*metrics[metric], strict=True)
        metric_axis.plot(steps, values, "s--", color="tab:red", label=metric, markersize=3)
        # guidance-only baselines of the same metric (models.baselines), when the method logs them
        baselines = sorted(name for name in metrics if name.startswith("val/baseline_"))
        colours = ("tab:gray", "tab:olive", "tab:purple", "tab:brown")
        for k, name in enumerate(baselines):
            colour = colours[k % len(colours)]
            steps, values = zip(*metrics[name], strict=True)
            label = name.replace("val/baseline_", "baseline: ")
            metric_axis.plot(steps, values, ":", color=colour, label=label, linewidth=1.5)
        metric_axis.set_ylabel(metric_label)
        more_handles, more_labels = metric_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axis.legend(handles, labels, loc="upper right")
    loss_axis.set_title(title)
    return save_figure(fig, out_path)


def plot_message(text: str, out_path: str | Path) -> Path:
    """A small figure that only says ``text`` (an output that must exist but has nothing to show)."""
    fig, axis = plt.subplots(figsize=(4, 2))
    axis.text(0.5, 0.5, text, ha="center", va="center")
    axis.axis("off")
    return save_figure(fig, out_path)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """ImageNet-normalised (3, H, W) float → uint8 (H, W, 3) RGB."""
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    rgb = image.transpose(1, 2, 0) * std + mean
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def validation_batches(
    module: torch.nn.Module, datamodule: pl.LightningDataModule, num_samples: int = 4
) -> Iterator[dict[str, torch.Tensor]]:
    """Validation batches on the module's device, as the model sees them, until ``num_samples``
    samples have been yielded (the last batch is cut). The module is in eval mode and autograd
    off while the caller consumes them; its training mode comes back afterwards."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    datamodule.setup("validate")  # a spawned DDP run set it up in the workers only
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    left = num_samples
    try:
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                batch = {k: v[:left].to(device) for k, v in batch.items()}
                # A DataModule may ship a compact batch and expand it after transfer (models.data).
                batch = datamodule.on_after_batch_transfer(batch, 0)
                left -= int(batch["image"].shape[0])
                yield batch
                if left <= 0:
                    break
    finally:
        module.train(was_training)
