"""The network shared by the single-frame dense-prediction methods: trunk + per-pixel head.

Motion masks (Pathak et al. 2017, Sec. 5.2) and flow classification (Mahendran et al. 2018,
"Baseline") both predict a label per pixel from ONE frame. Both use the same trunks as CMP
(``models.backbones``: ResNet-50 / ResNet-18 at output stride 8, the AlexNet-BN FCN at stride 8
or 32) and the
benchmark's ``FCNHead`` (3×3 conv + BN + ReLU + 1×1 conv), whose logits are upsampled bilinearly
to the input size, so the exported trunks of every method are directly comparable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import build_backbone
from models.finetune import FCNHead

__all__ = ["DenseNet"]


class DenseNet(nn.Module):
    """``backbone`` trunk + ``FCNHead`` → (B, out_channels, H, W) logits at the input size."""

    def __init__(
        self,
        backbone: str,
        out_channels: int,
        head_channels: int = 256,
        backbone_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.backbone, trunk_channels = build_backbone(backbone, **(backbone_kwargs or {}))
        self.head = FCNHead(trunk_channels, out_channels, head_channels)
        self.out_channels = out_channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        stride = int(getattr(self.backbone, "output_stride", 8))
        if image.shape[-1] % stride or image.shape[-2] % stride:
            raise ValueError(
                f"H and W must be multiples of the trunk's stride {stride}, "
                f"got {tuple(image.shape[-2:])}"
            )
        logits = self.head(self.backbone(image))
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
