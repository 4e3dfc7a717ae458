"""Sparse hypercolumn embedding head (CPFS, Mahendran et al. 2018, Sec. 3 "CNN embedding function"
and Sec. 4.1; hypercolumns after Hariharan et al., sparse sampling after PixelNet).

The trunk's activations at a few layers ("taps") are read with forward hooks, bilinearly
interpolated at the sampled pixel positions and concatenated into a hypercolumn, which an MLP with
one hidden layer projects to a D-dimensional embedding, L2-normalised (D = 16 in the paper).

Taps: AlexNet uses the paper's conv1, pool1, conv3, pool5 and fc7 (the module names of
``models.backbones.AlexNetFCN``); ResNet trunks default to the stem and the four stages
(``relu``, ``layer1`` ... ``layer4``, names of ``models.backbones.ResNetTrunk``) and take any
list of submodule names. A tap's output is sampled at pixel centres ((x + 0.5) / W in
normalised coordinates, ``align_corners=False``), which maps each image pixel to the same relative
position of every feature map whatever its stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_TAPS", "HypercolumnEmbedder", "sample_features"]

DEFAULT_TAPS: dict[str, tuple[str, ...]] = {
    "alexnet": ("conv1", "pool1", "conv3", "pool5", "fc7"),
    "resnet18": ("relu", "layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("relu", "layer1", "layer2", "layer3", "layer4"),
}


def sample_features(
    feature: torch.Tensor, index: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Bilinear samples of ``feature`` (B, C, h, w) at flat pixel indices (B, P) of an H×W image
    -> (B, P, C)."""
    ys = torch.div(index, width, rounding_mode="floor").to(feature.dtype)
    xs = (index % width).to(feature.dtype)
    grid = torch.stack([(xs + 0.5) / width * 2 - 1, (ys + 0.5) / height * 2 - 1], dim=-1)
    sampled = F.grid_sample(
        feature, grid[:, :, None, :], mode="bilinear", padding_mode="border", align_corners=False
    )  # (B, C, P, 1)
    return sampled[..., 0].transpose(1, 2)


class HypercolumnEmbedder(nn.Module):
    """trunk + taps + MLP: image (B, 3, H, W) and pixel indices (B, P) -> unit embeddings (B, P, D)."""

    def __init__(
        self,
        trunk: nn.Module,
        taps: Sequence[str],
        embed_dim: int = 16,
        hidden: int = 512,
        probe_size: int = 64,
    ) -> None:
        super().__init__()
        if not taps:
            raise ValueError("taps must name at least one trunk submodule")
        if embed_dim < 1 or hidden < 1:
            raise ValueError(f"embed_dim and hidden must be >= 1, got {embed_dim}, {hidden}")
        modules = dict(trunk.named_modules())
        unknown = [t for t in taps if t not in modules or t == ""]
        if unknown:
            raise ValueError(f"unknown taps {unknown}; the trunk has {sorted(modules)[:20]} ...")
        self.backbone = trunk
        self.taps = tuple(taps)
        self._captured: dict[str, torch.Tensor] = {}
        for name in self.taps:
            modules[name].register_forward_hook(self._hook(name))
        channels = self._probe_channels(probe_size)
        self.hypercolumn_dim = sum(channels)
        self.mlp = nn.Sequential(
            nn.Linear(self.hypercolumn_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embed_dim),
        )

    def _hook(self, name: str):
        def capture(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self._captured[name] = output

        return capture

    @torch.no_grad()
    def _probe_channels(self, size: int) -> list[int]:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            self.backbone(torch.zeros(1, 3, size, size))
            return [int(self._captured[name].shape[1]) for name in self.taps]
        finally:
            self._captured.clear()
            self.backbone.train(was_training)

    def feature_maps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The tapped activations for ``image``, in tap order."""
        self._captured.clear()
        self.backbone(image)
        maps = [self._captured[name] for name in self.taps]
        self._captured.clear()
        return maps

    def forward(self, image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        maps = self.feature_maps(image)
        column = torch.cat([sample_features(m, index, height, width) for m in maps], dim=-1)
        return F.normalize(self.mlp(column), dim=-1)

    def embed_dense(self, image: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Embeddings of every pixel, (B, D, H, W), in chunks of pixels (for figures)."""
        batch, _, height, width = image.shape
        maps = self.feature_maps(image)
        flat = torch.arange(height * width, device=image.device).expand(batch, -1)
        parts = []
        for start in range(0, height * width, chunk):
            index = flat[:, start : start + chunk]
            column = torch.cat([sample_features(m, index, height, width) for m in maps], dim=-1)
            parts.append(F.normalize(self.mlp(column), dim=-1))
        return torch.cat(parts, 1).transpose(1, 2).reshape(batch, -1, height, width)
