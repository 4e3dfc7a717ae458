"""CMP guidance, the steps: watershed key-points of a flow field and the background grid.

The pure steps behind ``pipeline.guidance.sample_guidance`` (Zhan et al. 2019, "Self-Supervised
Learning via Conditional Motion Propagation", section 3.2 "Guidance Selection"; the authors'
sampler as REFERENCE.md "CMP" writes it down), one function each so tests and benchmarks can call
them apart: motion edges (step 1), binarised edges (2), the watershed (distance) map (3), K x K
non-maximum suppression (4), near-duplicate removal (5) and the centred grid (6); plus the input
checks shared with the sampler and the per-thread scratch arrays the filters write into. The
departures from the authors' code, with their reasons, are listed in ``pipeline.guidance``.
"""

from __future__ import annotations

import functools
import threading

import cv2
import numpy as np

# Above this many candidates the pairwise (n x n) duplicate check would need too much memory;
# the raster version (min/max filters over the image) gives the same answer in O(H*W) per round.
_PAIRWISE_MAX_CANDIDATES = 1024


# --------------------------------------------------------------------------- validation


def validate_flow(flow: np.ndarray) -> np.ndarray:
    """Return ``flow`` as a float32 H x W x 2 array, or raise ``ValueError``."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be an H x W x 2 array (dx, dy), got shape {flow.shape}")
    if not (np.issubdtype(flow.dtype, np.floating) or np.issubdtype(flow.dtype, np.integer)):
        raise ValueError(f"flow must be numeric, got dtype {flow.dtype}")
    if flow.shape[0] < 3 or flow.shape[1] < 3:
        raise ValueError(
            f"flow must be at least 3 x 3 pixels, got {flow.shape[0]} x {flow.shape[1]}"
        )
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    # NaN and inf survive into the minimum or maximum: two reductions, no H x W x 2 mask.
    if not (np.isfinite(flow.min()) and np.isfinite(flow.max())):
        raise ValueError("flow contains non-finite values (NaN or inf)")
    return flow


def _check_kernel_size(kernel_size: int) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)):
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")


def _check_points(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be a (P, 2) array of (y, x), got shape {points.shape}")
    if points.size and not np.issubdtype(points.dtype, np.integer):
        raise ValueError(f"points must be integer pixel coordinates, got dtype {points.dtype}")
    points = points.astype(np.int64, copy=False)
    if points.size:
        y, x = points[:, 0], points[:, 1]
        if y.min() < 0 or x.min() < 0 or y.max() >= shape[0] or x.max() >= shape[1]:
            raise ValueError(f"points must lie inside the {shape[0]} x {shape[1]} flow")
    return points


# --------------------------------------------------------------------------- watershed steps


def motion_edges(flow: np.ndarray) -> np.ndarray:
    """Edge strength of a flow field: per-channel Sobel gradient magnitude, summed (H x W).

    The authors convolve with ``boundary='symm'`` (edge pixel repeated: ``cba|abc``), which is
    OpenCV's ``BORDER_REFLECT`` (not the default ``BORDER_REFLECT_101``).
    """
    return _sobel_edges(validate_flow(flow))


def _sobel_edges(flow: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    buffers = scratch or _NO_SCRATCH
    border = cv2.BORDER_REFLECT
    gx = cv2.Sobel(flow, cv2.CV_32F, 1, 0, dst=buffers.get("gx"), ksize=3, borderType=border)
    gy = cv2.Sobel(flow, cv2.CV_32F, 0, 1, dst=buffers.get("gy"), ksize=3, borderType=border)
    magnitude = cv2.magnitude(gx, gy, buffers.get("magnitude"))  # per channel, H x W x 2
    return np.add(magnitude[:, :, 0], magnitude[:, :, 1], out=buffers.get("edges"))


def _check_edge_parameters(edge_threshold: float, edge_floor: float) -> None:
    if not 0.0 <= edge_threshold < 1.0:
        raise ValueError(f"edge_threshold must be in [0, 1), got {edge_threshold}")
    if not edge_floor > 0.0:
        raise ValueError(f"edge_floor must be positive, got {edge_floor}")


def binarise_edges(
    edges: np.ndarray, *, edge_threshold: float = 0.1, edge_floor: float = 0.01
) -> np.ndarray:
    """Boolean edge map: ``edges / max(edges.max(), edge_floor) > edge_threshold``.

    The floor keeps near-static flow from having its noise stretched to full scale: when the
    strongest edge is below ``edge_floor`` the threshold becomes the absolute value
    ``edge_threshold * edge_floor`` (0.001 by default, i.e. a flow step of 0.00025 px under
    the Sobel gain of 4), so only responses weaker than that are ignored outright.
    """
    _check_edge_parameters(edge_threshold, edge_floor)
    return edges > _edge_cut(edges, edge_threshold, edge_floor)


def _edge_cut(edges: np.ndarray, edge_threshold: float, edge_floor: float) -> float:
    return edge_threshold * max(float(edges.max()), edge_floor)


def watershed_map(edge_mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every non-edge pixel to the nearest edge pixel (float32, H x W).

    Without any edge pixel the map is all zeros: there is no motion boundary to sample from.
    """
    non_edge = np.logical_not(edge_mask).view(np.uint8)  # bool is one byte of 0 / 1
    distance = _distance_to_edges(non_edge)
    return np.zeros(edge_mask.shape, np.float32) if distance is None else distance


def _distance_to_edges(non_edge: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray | None:
    """Exact L2 distance of nonzero pixels to the nearest zero one; None without any zero.

    OpenCV answers an all-nonzero map with a flat huge value, which would make every pixel an
    NMS candidate; the callers treat "no edge" as "no watershed point" instead.
    """
    if cv2.countNonZero(non_edge) == non_edge.size:
        return None
    return cv2.distanceTransform(non_edge, cv2.DIST_L2, cv2.DIST_MASK_PRECISE, dst=dst)


def nms_candidates(score: np.ndarray, kernel_size: int) -> np.ndarray:
    """(y, x) of positive pixels equal to their K x K neighbourhood maximum, off the border.

    The maximum filter runs before the 1-pixel border is zeroed (as the authors do), so a
    pixel next to a larger border value is suppressed too.
    """
    _check_kernel_size(kernel_size)
    return _nms_candidates(np.ascontiguousarray(score, dtype=np.float32), kernel_size)


@functools.lru_cache(maxsize=32)
def _line_kernels(kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    row = np.ones((1, kernel_size), np.uint8)
    return row, row.T.copy()


def _nms_candidates(
    score: np.ndarray, kernel_size: int, scratch: Scratch | None = None
) -> np.ndarray:
    buffers = scratch or _NO_SCRATCH
    row, column = _line_kernels(kernel_size)
    # A K x K maximum is a row maximum then a column maximum; two 1-D passes are about twice
    # as fast as cv2.dilate with the square kernel. cv2.dilate ignores pixels outside the
    # image, which for a maximum equals scipy's reflect mode (mirrored pixels are inside).
    row_max = cv2.dilate(score, row, dst=buffers.get("row_max"))
    local_max = cv2.dilate(row_max, column, dst=buffers.get("local_max"))
    # OpenCV's compare / findNonZero do in ~0.05 ms what numpy's == / argwhere do in ~0.4 ms.
    keep = cv2.compare(score, local_max, cv2.CMP_EQ, dst=buffers.get("keep"))
    positive = cv2.compare(score, 0.0, cv2.CMP_GT, dst=buffers.get("positive"))
    keep = cv2.bitwise_and(keep, positive, dst=keep)
    keep[0, :] = keep[-1, :] = 0
    keep[:, 0] = keep[:, -1] = 0
    found = cv2.findNonZero(keep)  # (x, y) pairs, or None when empty
    if found is None:
        return np.zeros((0, 2), np.int32)
    return np.ascontiguousarray(found.reshape(-1, 2)[:, ::-1], dtype=np.int32)


# --------------------------------------------------------------------------- scratch arrays

Scratch = dict[str, np.ndarray]
_NO_SCRATCH: Scratch = {}
_SCRATCH = threading.local()
_SCRATCH_SHAPES = 4


def _scratch_for(shape: tuple[int, int]) -> Scratch:
    """Reusable per-thread work arrays for one image size.

    Fresh arrays of a few hundred KB come from mmap and are zero-filled page by page on first
    touch; on the VMs measured that cost more than the filters writing into them (Sobel step
    0.25 ms with reused arrays against 0.65 ms with fresh ones, 192^2 flow). The training
    loader crops to one size, so a few shapes per thread cover it. Nothing returned to a
    caller lives in these arrays.
    """
    cache = getattr(_SCRATCH, "by_shape", None)
    if cache is None:
        cache = _SCRATCH.by_shape = {}
    scratch = cache.get(shape)
    if scratch is None:
        if len(cache) >= _SCRATCH_SHAPES:
            cache.clear()
        height, width = shape
        scratch = {
            name: np.empty((height, width, 2), np.float32)
            for name in ("flow", "gx", "gy", "magnitude")
        }
        for name in ("edges", "distance", "row_max", "local_max"):
            scratch[name] = np.empty((height, width), np.float32)
        for name in ("non_edge", "keep", "positive"):
            scratch[name] = np.empty((height, width), np.uint8)
        cache[shape] = scratch
    return scratch


def _greedy_pairwise(points: np.ndarray, order: np.ndarray, min_gap: int) -> np.ndarray:
    """Greedy thinning in ``order`` with an n x n closeness matrix (few candidates)."""
    ys, xs = points[:, 0], points[:, 1]
    close = (np.abs(ys[:, None] - ys[None, :]) < min_gap) & (
        np.abs(xs[:, None] - xs[None, :]) < min_gap
    )
    alive = np.ones(len(points), bool)
    kept = []
    for i in order:
        if alive[i]:
            kept.append(i)
            alive &= ~close[i]
    return np.sort(np.asarray(kept, dtype=np.int64))


def _greedy_raster(
    points: np.ndarray, order: np.ndarray, min_gap: int, shape: tuple[int, int]
) -> np.ndarray:
    """The same greedy thinning as ``_greedy_pairwise``, done with image filters.

    Each round keeps every alive candidate whose priority is the smallest among alive
    candidates within the window, then removes the candidates it covers (Luby's rounds with
    fixed priorities, which reproduce the sequential greedy in priority order).
    """
    n = len(points)
    priority = np.empty(n, np.float32)
    priority[order] = np.arange(n, dtype=np.float32)  # exact: n << 2**24
    ys, xs = points[:, 0], points[:, 1]
    # "Closer than min_gap in both axes" is a (2 * min_gap - 1)-wide square window.
    row = np.ones((1, 2 * min_gap - 1), np.uint8)
    column = row.T.copy()
    image = np.empty(shape, np.float32)
    alive = np.ones(n, bool)
    kept = np.zeros(n, bool)
    while alive.any():
        image.fill(np.inf)
        image[ys[alive], xs[alive]] = priority[alive]
        # cv2.erode treats pixels outside the image as +inf, so they never win.
        local_min = cv2.erode(cv2.erode(image, row), column)
        winners = alive & (priority == local_min[ys, xs])
        kept |= winners
        covered = np.zeros(shape, np.uint8)
        covered[ys[winners], xs[winners]] = 1
        covered = cv2.dilate(cv2.dilate(covered, row), column)
        alive &= covered[ys, xs] == 0
    return np.flatnonzero(kept)


def remove_near_duplicates(
    points: np.ndarray,
    kernel_size: int,
    *,
    shape: tuple[int, int],
    rng: np.random.Generator | int,
) -> np.ndarray:
    """Thin candidates so no two are closer than (K-1)/2 in both axes; ties broken at random.

    Candidates are visited in a random order and kept unless a kept one is too close. Only
    tied maxima of the K x K NMS can be that close, so usually nothing is dropped.
    """
    _check_kernel_size(kernel_size)
    points = _check_points(points, shape)
    if len(points) > 1 and len(np.unique(points[:, 0] * shape[1] + points[:, 1])) != len(points):
        raise ValueError("points must be distinct pixels")
    return _remove_near_duplicates(points, kernel_size, shape, np.random.default_rng(rng))


def _remove_near_duplicates(
    points: np.ndarray, kernel_size: int, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    n = len(points)
    if n < 2:
        return points.astype(np.int32)
    min_gap = (kernel_size - 1) // 2
    order = rng.permutation(n)
    if n <= _PAIRWISE_MAX_CANDIDATES:
        kept = _greedy_pairwise(points, order, min_gap)
    else:
        kept = _greedy_raster(points, order, min_gap, shape)
    return points[kept].astype(np.int32)


def grid_points(shape: tuple[int, int], grid_stride: int) -> np.ndarray:
    """(y, x) of a grid with stride G centred in the image and off its 1-pixel border.

    Per axis of size S: the most points n with (n - 1) * G <= S - 3, starting at
    (S - (n - 1) * G) // 2. ``grid_stride == 0`` disables the grid.
    """
    if isinstance(grid_stride, bool) or not isinstance(grid_stride, (int, np.integer)):
        raise ValueError(f"grid_stride must be a non-negative integer, got {grid_stride!r}")
    if grid_stride < 0:
        raise ValueError(f"grid_stride must be >= 0 (0 disables the grid), got {grid_stride}")
    if grid_stride == 0:
        return np.zeros((0, 2), np.int32)
    return _grid_points(tuple(int(size) for size in shape), int(grid_stride)).copy()


@functools.lru_cache(maxsize=64)
def _grid_points(shape: tuple[int, ...], grid_stride: int) -> np.ndarray:
    axes = []
    for size in shape:
        if size < 3:
            raise ValueError(f"image must be at least 3 x 3 pixels, got {shape}")
        count = (size - 3) // grid_stride + 1
        start = (size - (count - 1) * grid_stride) // 2
        axes.append(start + grid_stride * np.arange(count))
    ys, xs = np.meshgrid(axes[0], axes[1], indexing="ij")
    grid = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.int32)
    grid.flags.writeable = False  # shared by every caller through the cache
    return grid


def watershed_points(
    flow: np.ndarray,
    *,
    kernel_size: int = 81,
    edge_threshold: float = 0.1,
    edge_floor: float = 0.01,
    downsample: int = 1,
    rng: np.random.Generator | int,
) -> np.ndarray:
    """Watershed key-points of a flow field (steps 1-5), (P, 2) int32 (y, x) in raster order.

    ``downsample`` > 1 runs steps 1-5 on ``flow[::downsample, ::downsample]`` with the NMS
    window scaled to match (``downsampled_kernel_size``) and maps the points back.
    """
    _check_kernel_size(kernel_size)
    _check_downsample(downsample)
    _check_edge_parameters(edge_threshold, edge_floor)
    return _watershed_points(
        validate_flow(flow),
        kernel_size,
        edge_threshold,
        edge_floor,
        np.random.default_rng(rng),
        downsample,
    )


def _check_downsample(downsample: int) -> None:
    if isinstance(downsample, bool) or not isinstance(downsample, (int, np.integer)):
        raise ValueError(f"downsample must be a positive integer, got {downsample!r}")
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1 (1 = full resolution), got {downsample}")


def downsampled_kernel_size(kernel_size: int, downsample: int) -> int:
    """The odd NMS window on a flow subsampled by ``downsample`` that spans about K pixels.

    The half-width (K-1)/2 is divided by the step and rounded half up, so K = 81 becomes 41 at
    step 2 and 27 at step 3; it never drops below 3.
    """
    _check_kernel_size(kernel_size)
    _check_downsample(downsample)
    radius = (kernel_size - 1) // 2
    return 2 * max(1, (radius + downsample // 2) // downsample) + 1


def _watershed_points(
    flow: np.ndarray,
    kernel_size: int,
    edge_threshold: float,
    edge_floor: float,
    rng: np.random.Generator,
    downsample: int = 1,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    # The authors subsample large flow as flow[::ds, ::ds] "to reduce computation"; the step is
    # capped so the subsampled field stays at least 3 x 3.
    step = max(1, min(downsample, flow.shape[0] // 3, flow.shape[1] // 3))
    height, width = flow.shape[0] // step, flow.shape[1] // step
    scratch = _scratch_for((height, width))
    if step > 1:
        # Nearest-neighbour resizing by exactly 1/step picks pixel (step*y, step*x): the values
        # of flow[::step, ::step] at half the cost of numpy's strided copy. Cropping to whole
        # steps first keeps the factor exact; it leaves out the last H mod step rows (and
        # columns), which lie within step-1 pixels of the border.
        flow = cv2.resize(
            flow[: height * step, : width * step],
            (width, height),
            dst=scratch["flow"],
            interpolation=cv2.INTER_NEAREST,
        )
        kernel_size = downsampled_kernel_size(kernel_size, step)
    edges = _sobel_edges(flow, scratch)
    cut = _edge_cut(edges, edge_threshold, edge_floor)
    non_edge = cv2.compare(edges, cut, cv2.CMP_LE, dst=scratch["non_edge"])
    if valid is not None:
        # Invalid pixels (issue 12) count as boundaries: their distance is 0, so no NMS candidate
        # lies on one and the watershed centres keep away from them.
        non_edge[~valid[: height * step : step, : width * step : step]] = 0
    distance = _distance_to_edges(non_edge, scratch["distance"])
    if distance is None:
        return np.zeros((0, 2), np.int32)  # no motion boundary
    candidates = _nms_candidates(distance, kernel_size, scratch)
    # NMS candidates are distinct, in-image pixels: no need for the public checks.
    kept = _remove_near_duplicates(candidates, kernel_size, flow.shape[:2], rng)
    # Subsampled pixel (y, x) is full-resolution pixel (step*y, step*x), whose flow it holds;
    # off the subsampled border means off the full-resolution border too.
    return kept * np.int32(step)
