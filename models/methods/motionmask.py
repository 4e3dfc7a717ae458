"""Motion masks (Pathak et al. 2017, "Learning Features by Watching Objects Move", Sec. 5).

A ConvNet predicts, from ONE frame, the foreground that unsupervised motion segmentation (uNLC)
found in its video. uNLC's soft mask becomes a trimap (< 0.4 negative, > 0.7 positive, the band
between "don't care" = 255; ``pipeline.unlc``) and the network is trained with a per-pixel
logistic loss on the positives and negatives only (Sec. 5.2): :func:`masked_logistic_loss`.

Network: the CMP trunks (ResNet at stride 8 or the AlexNet-BN FCN) + ``FCNHead`` with one
logit per pixel, upsampled to the crop (``models.methods.dense``). The paper's head is a fully
connected layer of 56×56 outputs on AlexNet's fc7 over 227² crops (Sec. 4.1); the convolutional
head keeps the exported trunk comparable with the other methods (docs/METHODS.md). The paper
states no optimiser or schedule; the paper config uses Caffe's AlexNet reference solver (SGD lr
0.01, momentum 0.9, weight decay 5e-4, ×0.1 steps), which is a choice, not the paper's.

Validation (pooled over the epoch, on the trimap's decided pixels): foreground IoU and mean IoU
of {background, foreground} of the network (logit > 0), beside two predictors that see no
image: "all background" and "the centre blob" (Sec. 4.1 names a centred blob as the cheat that
jitter must defeat): a centred ellipse whose area is the foreground fraction of the training
targets seen so far.

Batch contract (the ``motion_masks`` view of ``models.data``): ``image`` float32 (B, 3, H, W)
ImageNet-normalised, ``trimap`` int64 (B, H, W) in {0, 1, 255}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from models.data import IGNORE_INDEX
from models.figures import save_figure, to_rgb, validation_batches
from models.finetune import confusion_matrix, iou_per_class
from models.methods.base import PretrainMethod
from models.methods.dense import DenseNet

__all__ = ["MotionMaskModule", "centre_blob", "masked_logistic_loss", "write_motionmask_panels"]


def masked_logistic_loss(
    logits: torch.Tensor, trimap: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits`` (B, H, W) or (B, 1, H, W) against ``trimap``
    (B, H, W) over its decided pixels (0 or 1); ``ignore_index`` pixels contribute nothing.

    No decided pixel gives a zero loss that still back-propagates (zero gradient). Any other
    label is an error.
    """
    if logits.ndim == 4 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.shape != trimap.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match trimap {tuple(trimap.shape)}")
    decided = trimap != ignore_index
    labels = trimap[decided]
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"trimap labels must be 0, 1 or {ignore_index}")
    picked = logits.float()[decided]
    if not picked.numel():
        return logits.float().sum() * 0.0
    return F.binary_cross_entropy_with_logits(picked, labels.float())


def centre_blob(height: int, width: int, area_fraction: float, device: Any = None) -> torch.Tensor:
    """Bool (H, W): the centred ellipse with the frame's aspect covering ``area_fraction``."""
    if not 0.0 <= area_fraction <= 1.0:
        raise ValueError(f"area_fraction must be in [0, 1], got {area_fraction}")
    ys = (torch.arange(height, device=device) + 0.5) / height * 2.0 - 1.0
    xs = (torch.arange(width, device=device) + 0.5) / width * 2.0 - 1.0
    radius2 = ys[:, None].square() + xs[None, :].square()
    # The ellipse x² + y² <= r² covers π r² / 4 of the [-1, 1]² frame (r <= 1).
    return radius2 <= 4.0 * area_fraction / math.pi


class MotionMaskModule(PretrainMethod):
    """Trunk + 1-logit head trained on uNLC trimaps (module docstring)."""

    BATCH_KEYS: ClassVar[tuple[str, ...]] = ("image", "trimap")
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {"backbone": "alexnet", "backbone_kwargs": {}, "head_channels": 256},
        "optim": {
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 5.0e-4,
            "lr_milestones": [0.5, 0.75],
            "lr_gamma": 0.1,
        },
        "figures": {},
    }
    CURVE: ClassVar[dict[str, str]] = {
        "metric": "val/iou_fg",
        "metric_label": "validation foreground IoU",
        "loss_label": "logistic loss (decided pixels)",
        "title": "motion-mask pretraining",
    }
    PREDICTORS = ("net", "all_background", "centre_blob")

    def __init__(
        self,
        backbone: str = "alexnet",
        backbone_kwargs: dict | None = None,
        head_channels: int = 256,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5.0e-4,
        lr_milestones: Sequence[float] = (0.5, 0.75),
        lr_gamma: float = 0.1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = DenseNet(backbone, 1, head_channels, backbone_kwargs)
        # Foreground and decided pixels of the training targets: the centre blob's area.
        self.register_buffer("train_pixels", torch.zeros(2, dtype=torch.float64))
        self.use_channels_last(channels_last)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.to_memory_format(image))[:, 0]

    def compute_loss(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self(batch["image"])
        trimap = batch["trimap"]
        if self.training:
            decided = trimap != IGNORE_INDEX
            counts = torch.stack([(trimap == 1).sum(), decided.sum()]).double()
            self.train_pixels += counts.to(self.train_pixels.device)
        return masked_logistic_loss(logits, trimap), {"logits": logits}

    def blob_fraction(self) -> float:
        """Foreground share of the decided training pixels so far (0.25 before any)."""
        fg, decided = (float(v) for v in self.train_pixels)
        return fg / decided if decided > 0 else 0.25

    def validation_counts(
        self, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        trimap = batch["trimap"]
        height, width = trimap.shape[-2:]
        blob = centre_blob(height, width, self.blob_fraction(), trimap.device)
        predictions = {
            "net": (outputs["logits"] > 0).long(),
            "all_background": torch.zeros_like(trimap),
            "centre_blob": blob.expand_as(trimap).long(),
        }
        return {name: confusion_matrix(pred, trimap, 2) for name, pred in predictions.items()}

    def metrics_from_counts(self, counts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        metrics = {}
        for name in self.PREDICTORS:
            iou = torch.nan_to_num(iou_per_class(counts[name]), nan=0.0)
            suffix = "" if name == "net" else f"_{name}"
            metrics[f"iou_fg{suffix}"] = iou[1]
            metrics[f"miou{suffix}"] = iou.mean()
        return metrics


# --------------------------------------------------------------------------- figures


def _trimap_rgb(trimap: np.ndarray) -> np.ndarray:
    out = np.full(trimap.shape + (3,), 128, np.uint8)  # ignore band: grey
    out[trimap == 0] = 0
    out[trimap == 1] = 255
    return out


def _errors_rgb(pred: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """Green = foreground hit, red = false foreground, blue = missed foreground, grey = ignored."""
    out = np.zeros(trimap.shape + (3,), np.uint8)
    out[trimap == IGNORE_INDEX] = 128
    out[(trimap == 1) & pred] = (0, 200, 0)
    out[(trimap == 0) & pred] = (220, 0, 0)
    out[(trimap == 1) & ~pred] = (0, 80, 255)
    return out


def write_motionmask_panels(
    module: MotionMaskModule,
    datamodule: pl.LightningDataModule,
    out_path: Path,
    num_samples: int = 4,
) -> Path | None:
    """One row per validation sample: frame | trimap | P(foreground) | errors vs the trimap."""
    rows = []
    for batch in validation_batches(module, datamodule, num_samples):
        prob = torch.sigmoid(module(batch["image"].float())).cpu().numpy()
        for i in range(prob.shape[0]):
            trimap = batch["trimap"][i].cpu().numpy()
            image = to_rgb(batch["image"][i].float().cpu().numpy())
            rows.append((image, trimap, prob[i]))
    if not rows:
        return None
    titles = ("frame", "trimap (grey: ignored)", "P(foreground)", "green hit / red FP / blue FN")
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)), squeeze=False)
    for axis_row, (image, trimap, prob) in zip(axes, rows, strict=True):
        panels = (image, _trimap_rgb(trimap), prob, _errors_rgb(prob > 0.5, trimap))
        for axis, panel, title in zip(axis_row, panels, titles, strict=True):
            axis.imshow(panel, vmin=0.0, vmax=1.0, cmap="gray")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    return save_figure(fig, out_path)
