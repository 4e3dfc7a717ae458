"""Tiny CMP runs and hand-made propagators for the serve tests (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn

from models.cmp import bin_centres
from models.methods.cmp import CMPModule

TINY_CMP = {
    "backbone": "resnet18",
    "num_bins": 9,
    "max_flow": 10.0,
    "image_channels": 8,
    "sparse_channels": 4,
    "decoder_channels": 8,
    # the authors' init (gain 0.02) predicts exactly zero flow before training
    "init": "xavier",
}


def tiny_module(seed: int = 0) -> CMPModule:
    torch.manual_seed(seed)
    return CMPModule(**TINY_CMP).eval()


def write_run(folder: Path, module: torch.nn.Module | None = None, method: str = "cmp") -> Path:
    """A run folder as ``models.train`` leaves it: config.yaml and checkpoints/last.ckpt."""
    module = tiny_module() if module is None else module
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    config = {"method": method, "output_dir": str(folder), "model": dict(module.hparams)}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "global_step": 7,
        "settings": {"values": {"method": method}},
    }
    torch.save(checkpoint, folder / "checkpoints" / "last.ckpt")
    return folder


def two_region_image(height: int = 40, width: int = 64) -> np.ndarray:
    """Left half red, right half blue."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2, 0] = 220
    image[:, width // 2 :, 2] = 220
    return image


def write_gallery(run: Path, count: int = 2) -> list[str]:
    """PNG frames in ``run/gallery`` (what ``models.serve.gallery`` exports)."""
    folder = run / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"val_{i:03d}.png"
        Image.fromarray(two_region_image(48, 64)).save(folder / name)
        names.append(name)
    return names


class RegionPropagator(nn.Module):
    """A hand-made CMP stand-in: each pixel's flow is the guidance of its colour region.

    flow(p) = Σ_i w_i(p) v_i / Σ_i w_i(p) over the guidance points i (the pixels where the
    mask channel is set), with w = 1 for a point in p's region (same red-channel level) and
    ``leak`` elsewhere; no point gives zero flow. Returned as near one-hot logits over the bins,
    so the engine's expectation decoding gives the flow back.
    """

    def __init__(self, num_bins: int = 99, max_flow: float = 50.0, leak: float = 1e-3) -> None:
        super().__init__()
        self.num_bins, self.max_flow, self.leak = num_bins, max_flow, leak

    def forward(self, image: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        region = image[:, 0] > image[:, 0].mean()  # (B, H, W) red half vs the rest
        out = []
        for b in range(sparse.shape[0]):
            ys, xs = torch.nonzero(sparse[b, 2] > 0, as_tuple=True)
            vectors = sparse[b, :2, ys, xs].T  # (P, 2)
            same = region[b][None] == region[b, ys, xs][:, None, None]  # (P, H, W)
            weight = torch.where(same, 1.0, self.leak)
            total = weight.sum(0).clamp(min=1e-12)
            flow = torch.einsum("phw,pc->chw", weight, vectors) / total
            out.append(flow)
        flow = torch.stack(out)  # (B, 2, H, W)
        centres = bin_centres(self.num_bins, self.max_flow).view(1, 1, -1, 1, 1)
        logits = -((centres - flow[:, :, None]) ** 2) / 2.0  # sigma = one bin: expectation ~ exact
        return logits.reshape(flow.shape[0], 2 * self.num_bins, *flow.shape[-2:])
