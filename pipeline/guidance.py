"""CMP guidance points: watershed key-points plus a background grid, sampled from a flow field.

Follows Zhan et al. 2019, "Self-Supervised Learning via Conditional Motion Propagation",
section 3.2 ("Guidance Selection"), with the details of the authors' sampler as written down in
REFERENCE.md ("CMP", steps 1-7):

1. motion edges: Sobel 3x3 on u and v separately (symmetric boundary), per-channel gradient
   magnitude, summed over the two channels;
2. normalised by ``max(edge.max(), edge_floor)`` and binarised at ``edge_threshold``;
3. Euclidean distance transform of the non-edge pixels (the "watershed" map);
4. K x K non-maximum suppression, then a 1-pixel border is zeroed;
5. near-duplicate removal: of two candidates closer than (K-1)/2 in both axes one is dropped
   at random;
6. a grid of stride G centred in the image is added; everything is shuffled and capped.

OpenCV does the image filtering (the authors' scipy version spends ~20 ms per 320^2 image).
Steps 1-6 live in ``pipeline.guidance_watershed``, one function each; this module holds the
sampler (``sample_guidance``), the network's sparse-motion input and the per-set statistics.

Deliberate departures from the authors' code, each for a reason:

* No edge pixel at all (e.g. zero or perfectly uniform flow) gives no watershed points. The
  authors' ``scipy.ndimage.distance_transform_edt`` of an all-foreground map measures from a
  virtual pixel outside the corner, so its only maximum sits on the border and is removed: they
  get no watershed points either, by accident. OpenCV returns a flat huge value instead, which
  would make every pixel a candidate, hence the explicit rule.
* Near-duplicates are removed by a greedy pass in random order (keep a candidate unless an
  already kept one is too close). The authors flip a coin per close pair in index order, which
  can drop both ends of a chain; ours keeps the same spacing guarantee and is maximal.
* The grid is centred so its points never touch the 1-pixel border. The authors start the grid
  at ``(H mod G) // 2``, which puts points on row/column 0 when G divides the size. For 384^2
  and G = 200 both give rows/columns 92 and 292.
* A grid point that coincides with a watershed point is not added twice.
* The authors subsample flow larger than 400 px as ``flow[::ds, ::ds]`` with
  ``ds = max(H, W) // 400`` "to reduce computation" and keep K in subsampled pixels, so their
  window grows with the image. Here the step is a parameter (``downsample``; config default 2,
  function default 1 = the steps above verbatim) and K is scaled by 1/step
  (``downsampled_kernel_size``), so the points per image stay those of full resolution. At
  384^2 and step 2 the sampler is ~4x faster (the exact distance transform alone takes ~2.5 ms
  at full resolution) with the same mean count of watershed points; ~71 % of the full-resolution
  points have one within 4 px (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from pipeline.guidance_watershed import (
    _check_downsample,
    _check_edge_parameters,
    _check_kernel_size,
    _check_points,
    _watershed_points,
    downsampled_kernel_size,
    grid_points,
    validate_flow,
)


class GuidancePoints(NamedTuple):
    """Guidance points of one flow field.

    ``points`` are (y, x) pixel coordinates in random order; ``n_watershed`` of them come from
    the watershed map and ``n_grid`` from the background grid (after the cap).
    """

    points: np.ndarray  # (P, 2) int32, (y, x)
    n_watershed: int
    n_grid: int


# --------------------------------------------------------------------------- public sampler


def max_guidance_points(
    shape: tuple[int, int], kernel_size: int, grid_stride: int, downsample: int = 1
) -> int:
    """An upper bound on the points ``sample_guidance`` can return for an image of ``shape``.

    Surviving watershed points are at least (K'-1)/2 apart in one axis (K' the NMS window on the
    subsampled field) and off its 1-pixel border, so each cell of that side holds at most one;
    the grid adds its own count. With ``max_points=None`` (the authors' ``max_num_guide: -1``)
    the loader pads to this bound, so no cap ever binds.
    """
    step = max(1, min(downsample, shape[0] // 3, shape[1] // 3))
    k = downsampled_kernel_size(kernel_size, step) if step > 1 else kernel_size
    gap = max(1, (k - 1) // 2)
    interior = [max(0, size // step - 2) for size in shape]
    watershed = -(-interior[0] // gap) * -(-interior[1] // gap)
    return watershed + len(grid_points(tuple(shape), grid_stride))


def sample_guidance(
    flow: np.ndarray,
    *,
    kernel_size: int = 81,
    grid_stride: int = 200,
    edge_threshold: float = 0.1,
    edge_floor: float = 0.01,
    max_points: int | None = 150,
    downsample: int = 1,
    rng: np.random.Generator | int,
    valid: np.ndarray | None = None,
) -> GuidancePoints:
    """CMP guidance points of one flow field (float32 H x W x 2, dx, dy).

    Watershed key-points (NMS kernel ``kernel_size``) plus a centred grid of stride
    ``grid_stride``, merged, shuffled and capped at ``max_points`` (None: no cap, the authors'
    ResNet-50 setting; see ``max_guidance_points``). ``rng`` is a seed or a
    ``numpy.random.Generator`` (advanced in place); the same seed gives the same points.
    ``downsample`` > 1 finds the watershed points on the subsampled flow (see
    ``watershed_points``); the grid is always at full resolution. ``valid`` (bool H x W, the flow
    PNG's valid bit) keeps every point off invalid pixels: they count as motion boundaries for
    the watershed map and grid points on them are left out (CMP itself had no validity mask; a
    point on an invalid pixel would hand the network a wrong motion as a hint).
    """
    _check_kernel_size(kernel_size)
    _check_downsample(downsample)
    _check_edge_parameters(edge_threshold, edge_floor)
    if max_points is not None and (
        isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer))
    ):
        raise ValueError(f"max_points must be a positive integer or None, got {max_points!r}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    flow = validate_flow(flow)
    rng = np.random.default_rng(rng)
    shape = flow.shape[:2]
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != shape:
            raise ValueError(f"valid mask shape {valid.shape} does not match flow {shape}")
        if valid.all():
            valid = None  # the common case costs nothing extra

    watershed = _watershed_points(
        flow, kernel_size, edge_threshold, edge_floor, rng, downsample, valid
    )
    grid = grid_points(shape, grid_stride)
    if valid is not None and len(grid):
        grid = grid[valid[grid[:, 0], grid[:, 1]]]
    if len(watershed) and len(grid):
        # Both lists are short (tens of points): an all-pairs comparison beats np.isin.
        taken = (grid[:, None, :] == watershed[None, :, :]).all(axis=2).any(axis=1)
        grid = grid[~taken]

    merged = np.concatenate([watershed, grid]).astype(np.int32)
    is_grid = np.arange(len(merged)) >= len(watershed)
    chosen = rng.permutation(len(merged))[:max_points]
    n_grid = int(is_grid[chosen].sum())
    return GuidancePoints(
        points=np.ascontiguousarray(merged[chosen]),
        n_watershed=len(chosen) - n_grid,
        n_grid=n_grid,
    )


# --------------------------------------------------------------------------- network input


def guidance_vectors(flow: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Flow (dx, dy) at each guidance point, (P, 2) float32."""
    flow = validate_flow(flow)
    points = _check_points(points, flow.shape[:2])
    return flow[points[:, 0], points[:, 1]].astype(np.float32).reshape(-1, 2)


def sparse_flow_input(flow: np.ndarray, points: np.ndarray) -> np.ndarray:
    """CMP's sparse-motion input, float32 H x W x 4.

    Channels 0-1: the flow (dx, dy) at the points, zero elsewhere; channels 2-3: the point
    mask (1 at points), duplicated per axis as in the authors' data loader. The mask tells a
    sampled zero motion apart from "not sampled" (paper section 3.1).
    """
    flow = validate_flow(flow)
    points = _check_points(points, flow.shape[:2])
    out = np.zeros((*flow.shape[:2], 4), np.float32)
    ys, xs = points[:, 0], points[:, 1]
    out[ys, xs, 0:2] = flow[ys, xs]
    out[ys, xs, 2:4] = 1.0
    return out


# --------------------------------------------------------------------------- statistics


def guidance_stats(
    counts_per_image: Sequence[Sequence[int]] | np.ndarray,
    image_shapes: Sequence[Sequence[int]] | np.ndarray,
    *,
    reference_side: int = 384,
) -> dict:
    """Summary of guidance counts over images.

    ``counts_per_image``: (N, 2) of (n_watershed, n_grid); ``image_shapes``: (N, 2) of (H, W).
    Returns ``{"images": N, "watershed" | "grid" | "total": {"mean", "median",
    "mean_per_ref_area"}, "reference_side": ...}`` where ``mean_per_ref_area`` scales each
    image's count by ``reference_side**2 / (H * W)`` (the paper quotes counts per 384^2 image).
    """
    counts = np.asarray(counts_per_image, dtype=np.float64)
    shapes = np.asarray(image_shapes, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != 2:
        raise ValueError(
            f"counts_per_image must be (N, 2) of (n_watershed, n_grid), got {counts.shape}"
        )
    if shapes.shape != counts.shape:
        raise ValueError(f"image_shapes must be (N, 2) like counts_per_image, got {shapes.shape}")
    if len(counts) == 0:
        raise ValueError("guidance_stats needs at least one image")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("counts_per_image must be finite and non-negative")
    if (shapes <= 0).any() or not np.isfinite(shapes).all():
        raise ValueError("image_shapes must be positive")
    if reference_side <= 0:
        raise ValueError(f"reference_side must be positive, got {reference_side}")
    area_scale = reference_side**2 / (shapes[:, 0] * shapes[:, 1])
    columns = {"watershed": counts[:, 0], "grid": counts[:, 1], "total": counts.sum(axis=1)}
    stats: dict = {"images": int(len(counts)), "reference_side": int(reference_side)}
    for name, values in columns.items():
        stats[name] = {
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "mean_per_ref_area": float((values * area_scale).mean()),
        }
    return stats
