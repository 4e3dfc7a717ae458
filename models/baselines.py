"""Trivial flow predictors that a CMP validation EPE must be read against.

CMP (Zhan et al. 2019, Sec. 3) predicts a dense flow from an image plus sparse guidance vectors
sampled from that very flow. Its validation end-point error only means "the network propagates
motion" if it beats what one gets from the guidance alone, without looking at the image:

* **zero flow** — predict (0, 0) everywhere: the EPE is the mean flow magnitude;
* **guidance mean** — every pixel gets the mean of the sample's guidance vectors (zero when a
  sample has no guidance point): a global-translation guess;
* **nearest guidance** — every pixel gets the vector of its nearest guidance point (Euclidean
  distance in pixels; ties go to the point listed first in row-major order): a Voronoi fill,
  the piecewise-constant propagation a network has to improve on by following image edges.

Inputs follow the CMP batch contract (``models.methods.cmp``): ``flow`` (B, 2, H, W),
``sparse`` (B, 4, H, W) with (dx, dy) at the guidance points and the point mask in channel 2,
optional ``valid`` (B, 1, H, W). The EPE averages over (valid) pixels of the whole batch, the
same reduction as CMP's own ``val/epe`` (``endpoint_error``).
"""

from __future__ import annotations

import torch

__all__ = [
    "BASELINES",
    "baseline_epes",
    "guidance_mean_fill",
    "nearest_guidance_fill",
    "zero_fill",
]

BASELINES: tuple[str, ...] = ("zero", "guidance_mean", "nearest_guidance")


def _check(sparse: torch.Tensor) -> None:
    if sparse.ndim != 4 or sparse.shape[1] < 3:
        raise ValueError(f"sparse must be (B, >=3, H, W), got {tuple(sparse.shape)}")


def zero_fill(sparse: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) zeros: the no-motion prediction."""
    _check(sparse)
    return sparse.new_zeros((sparse.shape[0], 2, *sparse.shape[-2:]))


def guidance_mean_fill(sparse: torch.Tensor) -> torch.Tensor:
    """Each sample's mean guidance vector at every pixel (zero where a sample has no point)."""
    _check(sparse)
    mask = (sparse[:, 2:3] > 0).to(sparse.dtype)
    count = mask.sum(dim=(2, 3))  # (B, 1)
    mean = (sparse[:, 0:2] * mask).sum(dim=(2, 3)) / count.clamp(min=1.0)  # (B, 2)
    return mean[:, :, None, None].expand(-1, -1, *sparse.shape[-2:]).clone()


def nearest_guidance_fill(sparse: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Each pixel takes the vector of its nearest guidance point (zero without any point).

    Distances are computed in ``chunk``-pixel blocks so memory stays O(chunk × points).
    """
    _check(sparse)
    batch, _, height, width = sparse.shape
    out = sparse.new_zeros((batch, 2, height, width))
    ys, xs = torch.meshgrid(
        torch.arange(height, device=sparse.device),
        torch.arange(width, device=sparse.device),
        indexing="ij",
    )
    pixels = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1).float()  # (HW, 2)
    for b in range(batch):
        point_y, point_x = torch.nonzero(sparse[b, 2] > 0, as_tuple=True)
        if point_y.numel() == 0:
            continue
        points = torch.stack([point_y, point_x], dim=1).float()  # (P, 2), row-major order
        vectors = sparse[b, 0:2, point_y, point_x]  # (2, P)
        nearest = torch.empty(height * width, dtype=torch.long, device=sparse.device)
        for start in range(0, height * width, chunk):
            block = pixels[start : start + chunk]
            # exact squared distances of integer coordinates: ties resolve to the first point
            squared = (block[:, None, :] - points[None, :, :]).square().sum(dim=2)
            nearest[start : start + chunk] = squared.argmin(dim=1)
        out[b] = vectors[:, nearest].reshape(2, height, width)
    return out


@torch.no_grad()
def baseline_epes(
    flow: torch.Tensor, sparse: torch.Tensor, valid: torch.Tensor | None = None
) -> dict[str, float]:
    """EPE of every baseline in ``BASELINES`` on one batch, as plain floats."""
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[-2:] != sparse.shape[-2:]:
        raise ValueError(
            f"flow must be (B, 2, H, W) matching sparse, got {tuple(flow.shape)} "
            f"and {tuple(sparse.shape)}"
        )
    from models.methods.cmp import endpoint_error  # lazily: CMPModule builds on this module

    fills = baseline_fills(sparse)
    return {name: float(endpoint_error(fills[name], flow, valid)) for name in BASELINES}


def baseline_fills(sparse: torch.Tensor) -> dict[str, torch.Tensor]:
    """The dense flow (B, 2, H, W) of every baseline in ``BASELINES``, from the guidance alone."""
    return {
        "zero": zero_fill(sparse),
        "guidance_mean": guidance_mean_fill(sparse.float()),
        "nearest_guidance": nearest_guidance_fill(sparse.float()),
    }
