"""S3-CNN pretraining as a LightningModule (Mahendran et al., ECCV-W 2018, Sec. 3-4).

The network maps an image to L soft segments: a trunk (``models.backbones``, stride 8), a 1×1
convolution to L scores, bilinear upsampling to the image and a softmax over L (the paper uses an
FCN-8s on VGG-16 whose scores are mapped to soft masks; the trunk + 1×1 head is this project's
stand-in, sharing the trunks of the other methods so that their backbones compare). The flow is
seen only by the loss (``models.methods.s3.s3_loss``: affine motion and/or low-entropy, by
config). Adam (the paper does not give its optimiser settings; CPFS's are used).

Batch contract (the ``s3`` view of ``models.data``): ``image`` float32 (B, 3, H, W)
ImageNet-normalised, ``flow`` float32 (B, 2, H, W) in px (raw: an affine field stays affine),
``valid`` optional bool (B, 1, H, W).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import build_backbone
from models.methods.s3 import S3_LOSSES, s3_loss

__all__ = ["S3Module", "SegmentNet"]


class SegmentNet(nn.Module):
    """trunk + 1×1 conv: image (B, 3, H, W) -> soft segments (B, L, H, W), softmax over L."""

    def __init__(self, backbone: str, num_segments: int, backbone_kwargs: dict | None = None):
        super().__init__()
        if num_segments < 2:
            raise ValueError(f"num_segments must be >= 2, got {num_segments}")
        self.backbone, channels = build_backbone(backbone, **dict(backbone_kwargs or {}))
        self.head = nn.Conv2d(channels, num_segments, 1)
        self.num_segments = num_segments

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        scores = self.head(self.backbone(image))
        return F.interpolate(scores, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image).softmax(dim=1)


class S3Module(pl.LightningModule):
    """Self-supervised segmentation by grouping flow: batches of the ``s3`` view -> loss."""

    def __init__(
        self,
        backbone: str = "alexnet",
        backbone_kwargs: dict | None = None,
        num_segments: int = 5,
        losses: Sequence[str] = ("affine",),
        loss_weights: dict | None = None,
        charbonnier_eps: float = 0.01,
        num_bins: int = 16,
        max_magnitude: float = 20.0,
        lr: float = 1.0e-4,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1.0e-8,
        weight_decay: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if not losses or any(name not in S3_LOSSES for name in losses):
            raise ValueError(f"losses must be a non-empty subset of {S3_LOSSES}, got {losses}")
        self.save_hyperparameters()
        self.model = SegmentNet(backbone, num_segments, backbone_kwargs)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.model(image)

    def _losses(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = {"image", "flow"} - set(batch)
        if missing:
            raise ValueError(f"batch lacks {sorted(missing)}")
        hp = self.hparams
        segments = self(batch["image"]).float()
        return s3_loss(
            segments,
            batch["flow"].float(),
            batch.get("valid"),
            losses=tuple(hp.losses),
            weights=hp.loss_weights,
            epsilon=hp.charbonnier_eps,
            num_bins=hp.num_bins,
            max_magnitude=hp.max_magnitude,
        )

    def _log_all(self, stage: str, losses: Mapping[str, torch.Tensor], batch_size: int) -> None:
        for name, value in losses.items():
            key = f"{stage}/loss" if name == "total" else f"{stage}/{name}"
            self.log(
                key,
                value,
                prog_bar=name == "total",
                sync_dist=stage == "val",
                batch_size=batch_size,
            )

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        self._log_all("train", losses, batch["image"].shape[0])
        return losses["total"]

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._log_all("val", self._losses(batch), batch["image"].shape[0])

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return torch.optim.Adam(
            self.parameters(),
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.eps,
            weight_decay=hp.weight_decay,
        )
