"""Flow classification: the direct-prediction baseline of Mahendran et al. 2018 ("Cross Pixel
Optical Flow Similarity for Self-Supervised Learning", Sec. 4, "Baseline").

From ONE frame, predict per pixel the class of its optical flow: the flow is log-normalised to
[-1, 1] per component (eq. 6, M = 56: ``pipeline.flowio.log_normalise_flow``, done by the
``cpfs`` data view), the interval is cut into 16 uniform bins, and a per-pixel softmax
cross-entropy is taken once for x and once for y (:func:`flow_to_classes`, :func:`flowcls_loss`).
"It was beneficial to use a faster initial learning rate of 0.01": the paper trains CPFS with Adam
(β = 0.9, 0.999, ε = 1e-8, lr 1e-4, no weight decay, Sec. 4.1); the baseline keeps Adam at lr 0.01.

Network: the CMP trunks + ``FCNHead`` with 2 × 16 logits per pixel, upsampled to the crop
(``models.methods.dense``). The paper's baseline shares CPFS's sparse hypercolumn head over
AlexNet (512 sampled pixels per image); the dense head is the same for every method here so the
exported trunks compare (docs/METHODS.md).

Validation (pooled over the epoch, valid pixels): class accuracy for x, y and their mean, beside
the majority-class predictor: the most frequent class per axis among the training targets seen
so far (counts kept in a buffer, so a resumed run keeps them).

Batch contract (the ``cpfs`` view of ``models.data``): ``image`` float32 (B, 3, H, W), ``flow``
float32 (B, 2, H, W) log-normalised to [-1, 1], optional ``valid`` bool (B, 1, H, W).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from models.figures import save_figure, to_rgb, validation_batches
from models.methods.base import PretrainMethod, masked_mean
from models.methods.dense import DenseNet

__all__ = ["FlowClsModule", "flow_to_classes", "flowcls_loss", "write_flowcls_panels"]


def flow_to_classes(normalised: torch.Tensor, num_classes: int = 16) -> torch.Tensor:
    """Class of each component of log-normalised flow: bin k holds [-1 + 2k/K, -1 + 2(k+1)/K),
    the last bin also +1 (values outside [-1, 1] go to the end bins). Same shape, int64."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    scaled = (normalised.float().clamp(-1.0, 1.0) + 1.0) * (num_classes / 2.0)
    return scaled.floor().long().clamp(0, num_classes - 1)


def flowcls_loss(
    logits: torch.Tensor,
    normalised: torch.Tensor,
    valid: torch.Tensor | None = None,
    num_classes: int = 16,
) -> torch.Tensor:
    """CE(x) + CE(y): per-pixel softmax cross-entropy of ``logits`` (B, 2K, H, W; x classes
    first) against the classes of ``normalised`` flow (B, 2, H, W), mean over valid pixels."""
    batch, channels, height, width = logits.shape
    if channels != 2 * num_classes:
        raise ValueError(f"logits need 2 x {num_classes} channels, got {channels}")
    if normalised.shape != (batch, 2, height, width):
        raise ValueError(f"flow must be {(batch, 2, height, width)}, got {tuple(normalised.shape)}")
    target = flow_to_classes(normalised, num_classes)
    per_axis = logits.float().reshape(batch, 2, num_classes, height, width)
    losses = [F.cross_entropy(per_axis[:, a], target[:, a], reduction="none") for a in (0, 1)]
    total = losses[0] + losses[1]  # (B, H, W)
    return masked_mean(total, valid)


class FlowClsModule(PretrainMethod):
    """Trunk + 2 × K-way per-pixel classifier of log-normalised flow (module docstring)."""

    BATCH_KEYS: ClassVar[tuple[str, ...]] = ("image", "flow")
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {
            "backbone": "alexnet",
            "backbone_kwargs": {},
            "head_channels": 256,
            "num_classes": 16,
        },
        "optim": {
            "optimizer": "adam",
            "lr": 0.01,
            "momentum": 0.9,
            "betas": [0.9, 0.999],
            "weight_decay": 0.0,
            "lr_milestones": [],
            "lr_gamma": 0.1,
        },
        "figures": {},
    }
    CURVE: ClassVar[dict[str, str]] = {
        "metric": "val/accuracy",
        "metric_label": "validation class accuracy (mean of x, y)",
        "loss_label": "CE(x) + CE(y)",
        "title": "flow-classification pretraining",
    }

    def __init__(
        self,
        backbone: str = "alexnet",
        backbone_kwargs: dict | None = None,
        head_channels: int = 256,
        num_classes: int = 16,
        optimizer: str = "adam",
        lr: float = 0.01,
        momentum: float = 0.9,
        betas: Sequence[float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_milestones: Sequence[float] = (),
        lr_gamma: float = 0.1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.model = DenseNet(backbone, 2 * num_classes, head_channels, backbone_kwargs)
        # Per-axis class counts of the training targets: the majority-class baseline.
        self.register_buffer("train_class_counts", torch.zeros(2, num_classes, dtype=torch.float64))
        self.use_channels_last(channels_last)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.to_memory_format(image))

    def valid_mask(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        valid = batch.get("valid")
        if valid is None:
            return torch.ones_like(batch["flow"][:, 0], dtype=torch.bool)
        return valid.reshape(batch["flow"][:, 0].shape).bool()

    def compute_loss(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self(batch["image"])
        if self.training:
            target = flow_to_classes(batch["flow"], self.num_classes)
            valid = self.valid_mask(batch)
            for axis in (0, 1):
                counts = torch.bincount(target[:, axis][valid], minlength=self.num_classes)
                self.train_class_counts[axis] += counts.to(self.train_class_counts)
        loss = flowcls_loss(logits, batch["flow"], batch.get("valid"), self.num_classes)
        return loss, {"logits": logits}

    def predict_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) argmax class per axis."""
        batch, _, height, width = logits.shape
        return logits.reshape(batch, 2, self.num_classes, height, width).argmax(dim=2)

    def validation_counts(
        self, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        target = flow_to_classes(batch["flow"], self.num_classes)
        valid = self.valid_mask(batch)[:, None].expand_as(target)
        pred = self.predict_classes(outputs["logits"])
        majority = self.train_class_counts.argmax(dim=1).to(target.device)  # (2,)
        hits = (pred == target) & valid
        majority_hits = (target == majority[None, :, None, None]) & valid
        return {
            "hits": hits.sum(dim=(0, 2, 3)),
            "majority_hits": majority_hits.sum(dim=(0, 2, 3)),
            "pixels": valid.sum(dim=(0, 2, 3)),
        }

    def metrics_from_counts(self, counts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pixels = counts["pixels"].clamp(min=1.0)
        accuracy = counts["hits"] / pixels
        majority = counts["majority_hits"] / pixels
        return {
            "accuracy": accuracy.mean(),
            "accuracy_x": accuracy[0],
            "accuracy_y": accuracy[1],
            "accuracy_majority": majority.mean(),
        }


# --------------------------------------------------------------------------- figures


def write_flowcls_panels(
    module: FlowClsModule,
    datamodule: pl.LightningDataModule,
    out_path: Path,
    num_samples: int = 4,
) -> Path | None:
    """One row per validation sample: frame | target / predicted x class | target / predicted
    y class (one diverging colour scale over the K classes; invalid pixels masked)."""
    rows = []
    for batch in validation_batches(module, datamodule, num_samples):
        pred = module.predict_classes(module(batch["image"].float())).cpu().numpy()
        target = flow_to_classes(batch["flow"], module.num_classes).cpu().numpy()
        valid = module.valid_mask(batch).cpu().numpy()
        for i in range(pred.shape[0]):
            image = to_rgb(batch["image"][i].float().cpu().numpy())
            rows.append((image, target[i], pred[i], valid[i]))
    if not rows:
        return None
    k = module.num_classes
    titles = ("frame", "target x class", "predicted x class", "target y class", "predicted y class")
    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3 * len(rows)), squeeze=False)
    for axis_row, (image, target, pred, valid) in zip(axes, rows, strict=True):
        axis_row[0].imshow(image)
        maps = (target[0], pred[0], target[1], pred[1])
        for axis, labels in zip(axis_row[1:], maps, strict=True):
            shown = labels.astype(float)
            shown[~valid] = float("nan")
            axis.imshow(shown, cmap="coolwarm", vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
        for axis, title in zip(axis_row, titles, strict=True):
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    return save_figure(fig, out_path)
