"""Figures of a CMP pretraining run: loss curves and validation flow panels.

* ``plot_loss_curves`` reads every ``logs/version_*/metrics.csv`` of the CSV logger (a resumed run
  starts a new version; for a step logged twice the later run wins) and plots train / val loss and
  validation EPE against the global step.
* ``plot_prediction_panels`` shows, per validation sample: the frame, its guidance arrows, the
  target flow and the predicted (softmax-expectation) flow, both colour-coded on the Middlebury
  wheel with one FIXED max magnitude so panels compare across samples and runs (REFERENCE.md,
  "Flow formats": torchvision's per-batch normalisation hides magnitude differences).

Colour coding and arrows come from ``pipeline.viz``; matplotlib runs on the Agg backend.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from models.cmp import predict_flow  # noqa: E402
from pipeline.atomic import atomic_path  # noqa: E402
from pipeline.viz import draw_guidance_arrows, flow_to_color  # noqa: E402

__all__ = [
    "collect_validation_samples",
    "plot_loss_curves",
    "plot_prediction_panels",
    "read_metrics",
    "write_training_figures",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CURVES = ("train/loss", "val/loss", "val/epe")


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


def _save(fig: plt.Figure, out_path: str | Path) -> Path:
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(out_path)


def plot_loss_curves(log_root: str | Path, out_path: str | Path) -> Path:
    """Loss (left axis) and validation EPE (right axis, px) against the global step."""
    metrics = read_metrics(log_root)
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    if not any(name in metrics for name in CURVES):
        # A run shorter than log_every_n_steps logs nothing; say so rather than fail the run.
        loss_axis.text(0.5, 0.5, "no metrics logged yet", ha="center", va="center")
    for name, style in (("train/loss", "-"), ("val/loss", "o-")):
        if name in metrics:
            steps, values = zip(*metrics[name], strict=True)
            loss_axis.plot(steps, values, style, label=name, markersize=3)
    loss_axis.set_xlabel("global step")
    loss_axis.set_ylabel("CE(x) + CE(y)")
    handles, labels = loss_axis.get_legend_handles_labels()
    if "val/epe" in metrics:
        epe_axis = loss_axis.twinx()
        steps, values = zip(*metrics["val/epe"], strict=True)
        epe_axis.plot(steps, values, "s--", color="tab:red", label="val/epe", markersize=3)
        epe_axis.set_ylabel("validation EPE (px)")
        more_handles, more_labels = epe_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axis.legend(handles, labels, loc="upper right")
    loss_axis.set_title("CMP pretraining")
    return _save(fig, out_path)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """ImageNet-normalised (3, H, W) float → uint8 (H, W, 3) RGB."""
    rgb = image.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def collect_validation_samples(
    module: torch.nn.Module, datamodule: pl.LightningDataModule, num_samples: int = 4
) -> list[dict[str, np.ndarray]]:
    """Run the model on the first ``num_samples`` validation samples.

    Returns dicts with ``image`` (H, W, 3) uint8, ``points_yx`` (P, 2), ``vectors_dxdy`` (P, 2),
    ``target`` and ``pred`` flow (H, W, 2). ``module`` is a ``CMPModule`` (``.model`` is the CMP).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    datamodule.setup("validate")  # a spawned DDP run set it up in the workers only
    model = module.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    samples: list[dict[str, np.ndarray]] = []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            batch = {k: v.to(device) for k, v in batch.items()}
            # A DataModule may ship a compact batch and expand it after transfer (models.data).
            batch = datamodule.on_after_batch_transfer(batch, 0)
            image = batch["image"].to(torch.float32)
            sparse = batch["sparse"].to(torch.float32)
            logits = model(image, sparse)
            pred = predict_flow(logits, image.shape[-2:], model.num_bins, model.max_flow)
            for i in range(image.shape[0]):
                mask = sparse[i, 2].cpu().numpy() > 0
                ys, xs = np.nonzero(mask)
                vectors = sparse[i, 0:2].cpu().numpy()[:, ys, xs].T
                samples.append(
                    {
                        "image": _to_rgb(image[i].cpu().numpy()),
                        "points_yx": np.stack([ys, xs], axis=1),
                        "vectors_dxdy": vectors.astype(np.float32),
                        "target": batch["flow"][i].cpu().numpy().transpose(1, 2, 0),
                        "pred": pred[i].float().cpu().numpy().transpose(1, 2, 0),
                    }
                )
                if len(samples) == num_samples:
                    break
            if len(samples) == num_samples:
                break
    model.train(was_training)
    return samples


def plot_prediction_panels(
    samples: Sequence[Mapping[str, np.ndarray]], out_path: str | Path, max_magnitude: float = 20.0
) -> Path:
    """One row per sample: frame | guidance arrows | target flow | predicted flow."""
    if not samples:
        raise ValueError("no samples to plot")
    if not max_magnitude > 0:
        raise ValueError(f"max_magnitude must be > 0, got {max_magnitude}")
    titles = ("frame", "guidance", "target flow", f"predicted flow (max {max_magnitude:g} px)")
    fig, axes = plt.subplots(len(samples), 4, figsize=(12, 3 * len(samples)), squeeze=False)
    for row, sample in zip(axes, samples, strict=True):
        guided = draw_guidance_arrows(
            sample["image"], sample["points_yx"], sample["vectors_dxdy"], color=(255, 255, 0)
        )
        panels = (
            sample["image"],
            guided,
            flow_to_color(sample["target"], max_magnitude),
            flow_to_color(sample["pred"], max_magnitude),
        )
        for axis, panel, title in zip(row, panels, titles, strict=True):
            axis.imshow(panel)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    return _save(fig, out_path)


def write_training_figures(
    output_dir: str | Path,
    module: torch.nn.Module,
    datamodule: pl.LightningDataModule,
    num_samples: int = 4,
    max_magnitude: float = 20.0,
) -> list[Path]:
    """``figures/loss_curves.png`` and ``figures/val_predictions.png`` of a run's output dir."""
    figures = Path(output_dir) / "figures"
    written = [plot_loss_curves(Path(output_dir) / "logs", figures / "loss_curves.png")]
    samples = collect_validation_samples(module, datamodule, num_samples)
    if samples:
        written.append(
            plot_prediction_panels(samples, figures / "val_predictions.png", max_magnitude)
        )
    return written
