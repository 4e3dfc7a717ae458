"""Validation figures of the CPFS and S3 runs (Mahendran et al. 2018).

* CPFS (the paper's Fig. 2): per validation frame, the frame, its (log-normalised) flow, the
  dense embeddings after a fixed random 16→3 projection mapped to RGB (Fig. 4 does the same), and
  for two pixels p (the fastest-moving one, marked, and a fixed one at a quarter of the frame) the
  kernel rows K_f(p, ·) and K_phi(p, ·) as images.
* S3: per validation frame, the frame, its flow, and the soft segments as a colour map: each
  segment gets a fixed palette colour, mixed by the segment probabilities and laid over the
  frame.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from models.figures import save_figure, to_rgb, validation_batches  # noqa: E402
from models.methods.cpfs import embedding_kernel, flow_kernel  # noqa: E402
from pipeline.viz import flow_to_color  # noqa: E402

__all__ = ["embedding_rgb", "segment_colours", "write_cpfs_panels", "write_s3_panels"]

PALETTE = plt.get_cmap("tab10")


def embedding_rgb(embeddings: torch.Tensor, seed: int = 0) -> np.ndarray:
    """(D, H, W) embeddings -> uint8 (H, W, 3): a fixed random D→3 projection, min-max scaled."""
    dim = embeddings.shape[0]
    gen = torch.Generator().manual_seed(seed)
    projection = torch.randn(3, dim, generator=gen)
    rgb = torch.einsum("cd,dhw->hwc", projection, embeddings.float().cpu())
    low, high = rgb.amin(dim=(0, 1)), rgb.amax(dim=(0, 1))
    rgb = (rgb - low) / (high - low).clamp(min=1e-6)
    return (rgb.numpy() * 255.0 + 0.5).astype(np.uint8)


def segment_colours(segments: torch.Tensor) -> np.ndarray:
    """(L, H, W) soft segments -> float (H, W, 3) in [0, 1]: palette colours mixed by probability."""
    num = segments.shape[0]
    colours = torch.tensor([PALETTE(i % 10)[:3] for i in range(num)], dtype=torch.float32)
    return torch.einsum("lhw,lc->hwc", segments.float().cpu(), colours).numpy()


def _kernel_rows(
    emb: torch.Tensor, flow: torch.Tensor, sigma: float, pixel: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row p of K_f and of K_phi (eq. 2) of one frame as (H, W) arrays; emb (D, H, W), flow
    (2, H, W). Only the row is computed (the whole kernel of a frame is (H·W)² entries)."""
    height, width = flow.shape[-2:]
    e = emb.flatten(1).T.float()  # (N, D)
    f = flow.flatten(1).T.float()  # (N, 2)
    k_phi = embedding_kernel(torch.stack([e[pixel].expand_as(e), e], 1))[:, 0, 1]
    k_f = flow_kernel(torch.stack([f[pixel].expand_as(f), f], 1), sigma)[:, 0, 1]
    return k_f.reshape(height, width).cpu().numpy(), k_phi.reshape(height, width).cpu().numpy()


def write_cpfs_panels(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    out_path: Path,
    num_samples: int = 4,
) -> Path | None:
    """Frame | flow | embedding RGB | K_f and K_phi rows at two pixels, one row per frame."""
    rows = []
    sigma = float(module.sigma.detach())
    for batch in validation_batches(module, datamodule, num_samples):
        dense = module.model.embed_dense(batch["image"].float())
        for i in range(batch["image"].shape[0]):
            flow = batch["flow"][i].float()
            height, width = flow.shape[-2:]
            moving = int(flow.square().sum(0).flatten().argmax())
            fixed = (height // 4) * width + width // 4
            kernels = [_kernel_rows(dense[i], flow, sigma, p) for p in (moving, fixed)]
            rows.append((batch["image"][i], flow, dense[i], (moving, fixed), kernels))
    if not rows:
        return None
    titles = ["frame", "flow (eq. 6)", "embedding 16→3"]
    titles += [f"{k} row, pixel {j}" for j in (1, 2) for k in ("K_f", "K_phi")]
    fig, axes = plt.subplots(len(rows), 7, figsize=(17, 2.6 * len(rows)), squeeze=False)
    for axis_row, (image, flow, emb, pixels, kernels) in zip(axes, rows, strict=True):
        width = flow.shape[-1]
        panels = [
            to_rgb(image.float().cpu().numpy()),
            flow_to_color(flow.cpu().numpy().transpose(1, 2, 0), 1.0),
            embedding_rgb(emb),
        ]
        panels += [kernels[0][0], kernels[0][1], kernels[1][0], kernels[1][1]]
        for col, (axis, panel) in enumerate(zip(axis_row, panels, strict=True)):
            axis.imshow(panel, cmap="viridis" if col >= 3 else None)
            axis.axis("off")
            if col >= 3:
                y, x = divmod(pixels[(col - 3) // 2], width)
                axis.plot([x], [y], "r+", markersize=8)
    for axis, title in zip(axes[0], titles, strict=True):
        axis.set_title(title, fontsize=9)
    fig.suptitle(f"CPFS: learned σ² = {sigma**2:.4g}", fontsize=10)
    return save_figure(fig, out_path)


def write_s3_panels(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    out_path: Path,
    num_samples: int = 4,
    max_magnitude: float = 10.0,
) -> Path | None:
    """Frame | flow | segments over the frame | hard segments, one row per validation frame."""
    rows = []
    for batch in validation_batches(module, datamodule, num_samples):
        segments = module(batch["image"].float())
        for i in range(batch["image"].shape[0]):
            rows.append((batch["image"][i], batch["flow"][i], segments[i]))
    if not rows:
        return None
    titles = ("frame", f"flow (max {max_magnitude:g} px)", "segments over frame", "argmax")
    fig, axes = plt.subplots(len(rows), 4, figsize=(11, 2.8 * len(rows)), squeeze=False)
    for axis_row, (image, flow, seg) in zip(axes, rows, strict=True):
        frame = to_rgb(image.float().cpu().numpy()).astype(np.float32) / 255.0
        colours = segment_colours(seg)
        hard = torch.nn.functional.one_hot(seg.argmax(0), seg.shape[0]).permute(2, 0, 1)
        panels = (
            frame,
            flow_to_color(flow.float().cpu().numpy().transpose(1, 2, 0), max_magnitude),
            0.45 * frame + 0.55 * colours,
            segment_colours(hard),
        )
        for axis, panel, title in zip(axis_row, panels, titles, strict=True):
            axis.imshow(np.clip(panel, 0, 1) if panel.dtype != np.uint8 else panel)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    fig.suptitle(f"S3: {seg.shape[0]} soft segments", fontsize=10)
    return save_figure(fig, out_path)
