"""Superpixel regions, their descriptors and the sparse nearest-neighbour graph of uNLC.

Follows Pathak et al. 2017, section 5.1 ("a nearest neighbor graph is computed over the superpixels
in the video using location and appearance (color histograms and HOG) as features"), with the
numbers of the authors' code (REFERENCE.md, "uNLC"): SLIC with ~400 segments and sigma 5; a 15x15
patch at each superpixel centre gives a HOG (6 orientations, 5x5-pixel cells, one 3x3-cell block:
54-d); R, G, B, L, a, b histograms of 20 bins each, L1-normalised (120-d); the normalised position
(2-d). Each region links to its 62 nearest neighbours (L2) among the regions of frames within ±15,
with affinity exp(-d²/sigma), sigma 0.1, a unit diagonal and rows normalised.

Speed (issue 28, docs/DEVIATIONS.md U10-U11): SLIC is OpenCV ximgproc's by default (scikit-image's
remains), and the caller may build regions on a frame smaller than the one HOG patches come from
(``region_descriptors(hog_rgb=...)``).

The reference stores that matrix dense (regions x regions, ~15 GB for a 110-frame shot); here it is
a scipy.sparse CSR matrix of regions x (neighbours + 1) entries.

Colour histograms are taken over the superpixel's own pixels (the region) rather than over the
15x15 patch: same dimensions, more pixels per histogram, and computed for a whole frame at once.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree
from skimage.segmentation import slic


def working_shape(height: int, width: int, *, max_side: int = 650) -> tuple[int, int]:
    """(h, w) after shrinking so that the longer side is at most ``max_side`` (never enlarges)."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


SUPERPIXEL_METHODS = ("opencv", "skimage")


def _dense_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..n-1 without gaps, keeping their order (a lookup table, no sort)."""
    present = np.bincount(labels.ravel()) > 0
    lookup = (np.cumsum(present) - 1).astype(np.int32)
    return lookup[labels]


def _opencv_slic(
    rgb: np.ndarray, *, n_segments: int, sigma: float, compactness: float, iterations: int
) -> np.ndarray:
    """SLIC with OpenCV's ximgproc on float Lab (L 0..100, as scikit-image uses), so that
    ``compactness`` means what it means in skimage: the ruler of the spatial term per grid step."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    if sigma > 0:
        lab = cv2.GaussianBlur(lab, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    h, w = lab.shape[:2]
    step = max(2, int(round(np.sqrt(h * w / n_segments))))
    slic_ = cv2.ximgproc.createSuperpixelSLIC(lab, cv2.ximgproc.SLIC, step, float(compactness))
    slic_.iterate(iterations)
    # Segments below half the grid cell are merged into a neighbour (skimage's min_size_factor).
    slic_.enforceLabelConnectivity(50)
    return slic_.getLabels()


def superpixels(
    rgb: np.ndarray,
    *,
    n_segments: int = 400,
    sigma: float = 5.0,
    compactness: float = 10.0,
    method: str = "opencv",
    iterations: int = 10,
) -> np.ndarray:
    """SLIC superpixels of one RGB uint8 frame: int32 labels 0..n-1 with no gaps.

    ``method`` "skimage" is scikit-image's SLIC (the authors' choice); "opencv" is OpenCV
    ximgproc's SLIC on the same float Lab image (about 4x faster, docs/DEVIATIONS.md).
    """
    if method not in SUPERPIXEL_METHODS:
        raise ValueError(f"superpixel method must be one of {SUPERPIXEL_METHODS}, got {method!r}")
    if method == "opencv":
        labels = _opencv_slic(
            rgb, n_segments=n_segments, sigma=sigma, compactness=compactness, iterations=iterations
        )
    else:
        labels = slic(
            rgb,
            n_segments=n_segments,
            sigma=sigma,
            compactness=compactness,
            max_num_iter=iterations,
            start_label=0,
        )
    # SLIC's connectivity pass can leave unused label values; make them contiguous.
    return _dense_labels(labels.astype(np.intp))


def region_centroids(labels: np.ndarray, n_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts (n,) and centroids (n, 2) as (row, col) of each label."""
    h, w = labels.shape
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n_regions).astype(np.float64)
    rows = np.repeat(np.arange(h, dtype=np.float64), w)
    cols = np.tile(np.arange(w, dtype=np.float64), h)
    safe = np.maximum(area, 1.0)
    cy = np.bincount(flat, weights=rows, minlength=n_regions) / safe
    cx = np.bincount(flat, weights=cols, minlength=n_regions) / safe
    return area, np.stack([cy, cx], axis=1)


def extract_patches(gray: np.ndarray, centres: np.ndarray, patch: int) -> np.ndarray:
    """(n, patch, patch, ...) windows of ``gray`` (H, W, ...) centred on ``centres`` (row, col),
    kept inside."""
    h, w = gray.shape[:2]
    if h < patch or w < patch:
        raise ValueError(f"frame {h}x{w} is smaller than the {patch}x{patch} descriptor patch")
    top = np.clip(np.round(centres[:, 0]).astype(np.int64) - patch // 2, 0, h - patch)
    left = np.clip(np.round(centres[:, 1]).astype(np.int64) - patch // 2, 0, w - patch)
    offsets = np.arange(patch)
    rr = top[:, None, None] + offsets[None, :, None]
    cc = left[:, None, None] + offsets[None, None, :]
    return gray[rr, cc]


HOG_BLOCK_NORMS = ("l1", "l2-hys")


def normalise_hog_block(hist: np.ndarray, method: str = "l1") -> np.ndarray:
    """Normalise HOG blocks, one per row of ``hist`` (n, block size), as scikit-image does.

    ``l1`` is the authors' normalisation (scikit-image < 0.13, which their code ran on):
    ``block / sqrt(sum(block)² + 1e-5)``; ``l2-hys`` is today's scikit-image default: L2 norm
    (eps 1e-5 squared), clip at 0.2, L2 norm again. Histograms are non-negative, so the ``l1``
    sum is the L1 norm.
    """
    if method == "l1":
        return hist / np.sqrt(hist.sum(axis=1, keepdims=True) ** 2 + 1e-5)
    if method == "l2-hys":
        eps = 1e-5
        out = hist / np.sqrt((hist * hist).sum(axis=1, keepdims=True) + eps * eps)
        out = np.minimum(out, 0.2)
        return out / np.sqrt((out * out).sum(axis=1, keepdims=True) + eps * eps)
    raise ValueError(f"block_norm must be one of {HOG_BLOCK_NORMS}, got {method!r}")


def hog_patches(
    patches: np.ndarray, *, cell: int = 5, orientations: int = 6, block_norm: str = "l1"
) -> np.ndarray:
    """HOG of many square patches at once, one block spanning all cells.

    Matches ``skimage.feature.hog(p, orientations, (cell, cell), (patch//cell,)*2)`` per patch:
    central differences (zero on the patch border), unsigned orientation in [0, 180) hard-binned,
    per-cell mean magnitude, then the block normalisation ``block_norm`` (``normalise_hog_block``:
    the authors' L1 by default, or L2-Hys). Output (n, cells² · orientations) in (cell row,
    cell col, orientation) order.
    """
    if block_norm not in HOG_BLOCK_NORMS:
        raise ValueError(f"block_norm must be one of {HOG_BLOCK_NORMS}, got {block_norm!r}")
    p = patches.astype(np.float64)
    n, size, _ = p.shape
    cells = size // cell
    g_row = np.zeros_like(p)
    g_col = np.zeros_like(p)
    g_row[:, 1:-1, :] = p[:, 2:, :] - p[:, :-2, :]
    g_col[:, :, 1:-1] = p[:, :, 2:] - p[:, :, :-2]
    magnitude = np.hypot(g_row, g_col)
    orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180.0
    bin_index = np.minimum(
        (orientation / (180.0 / orientations)).astype(np.int64), orientations - 1
    )
    magnitude = magnitude[:, : cells * cell, : cells * cell]
    bin_index = bin_index[:, : cells * cell, : cells * cell]
    # Cell id of every pixel, then one bincount over (patch, cell, orientation) triples.
    cell_of_pixel = (np.arange(cells * cell) // cell)[:, None] * cells + (
        np.arange(cells * cell) // cell
    )[None, :]
    key = (
        np.arange(n)[:, None, None] * (cells * cells * orientations)
        + cell_of_pixel[None] * orientations
        + bin_index
    )
    hist = np.bincount(
        key.ravel(), weights=magnitude.ravel(), minlength=n * cells * cells * orientations
    ).reshape(n, cells * cells * orientations)
    hist /= cell * cell
    return normalise_hog_block(hist, block_norm)


def colour_histograms(
    rgb: np.ndarray, labels: np.ndarray, n_regions: int, *, bins: int = 20
) -> np.ndarray:
    """Per-region R, G, B, L, a, b histograms (``bins`` each), each L1-normalised: (n, 6·bins)."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    flat_labels = labels.ravel().astype(np.intp) * bins
    rgb_bin = np.minimum(np.arange(256) * bins // 256, bins - 1).astype(np.intp)  # lookup table
    out = np.empty((n_regions, 6 * bins), dtype=np.float64)
    for i in range(6):
        if i < 3:
            b = rgb_bin[rgb[..., i].ravel()]
        else:
            lo, hi = (0.0, 100.0) if i == 3 else (-128.0, 128.0)
            scaled = (lab[..., i - 3].ravel() - np.float32(lo)) * np.float32(bins / (hi - lo))
            b = np.clip(scaled.astype(np.intp), 0, bins - 1)
        b += flat_labels
        counts = np.bincount(b, minlength=n_regions * bins).reshape(n_regions, bins)
        out[:, i * bins : (i + 1) * bins] = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    return out


def region_descriptors(
    rgb: np.ndarray,
    labels: np.ndarray,
    *,
    patch: int = 15,
    hog_cell: int = 5,
    hog_orientations: int = 6,
    hog_block_norm: str = "l1",
    colour_bins: int = 20,
    hog_rgb: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors (n, hog + 6·bins + 2) float32 and pixel areas (n,) of a frame's regions.

    ``labels`` and ``rgb`` share a size; colour histograms, areas and positions are taken there.
    ``hog_rgb`` (default ``rgb``) is the same frame at the size whose ``patch`` x ``patch`` window
    the HOG describes (the authors': longer side 650), the region centres scaled to it.
    """
    n_regions = int(labels.max()) + 1
    area, centres = region_centroids(labels, n_regions)
    hog_rgb = rgb if hog_rgb is None else hog_rgb
    scale = np.array(hog_rgb.shape[:2], dtype=np.float64) / labels.shape
    # Grey as skimage.color.rgb2gray (ITU-R 709 luma) in [0, 1], which the reference feeds to HOG
    # (only on the patches: a few hundred 15x15 windows, not the whole frame).
    luma = np.array([0.2125, 0.7154, 0.0721]) / 255.0
    hog = hog_patches(
        extract_patches(hog_rgb, (centres + 0.5) * scale - 0.5, patch).astype(np.float64) @ luma,
        cell=hog_cell,
        orientations=hog_orientations,
        block_norm=hog_block_norm,
    )
    colour = colour_histograms(rgb, labels, n_regions, bins=colour_bins)
    h, w = labels.shape
    position = centres / np.array([h, w], dtype=np.float64)
    return np.hstack([hog, colour, position]).astype(np.float32), area


def _knn_brute(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    *,
    scaled: np.ndarray | None = None,
    squared: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by one float32 matrix product (a k-d tree degenerates to a slow
    brute force in 176 dimensions): |q|² + |c|² - 2 q·c, the selection made without |q|².
    ``scaled`` (-2·candidates) and ``squared`` (|c|²) may be passed precomputed."""
    q32 = np.ascontiguousarray(queries, dtype=np.float32)
    c32 = np.ascontiguousarray(candidates, dtype=np.float32)
    scaled = -2.0 * c32 if scaled is None else scaled
    d2 = q32 @ scaled.T
    d2 += ((c32 * c32).sum(1) if squared is None else squared)[None, :]
    if k < d2.shape[1]:
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(d2, idx, 1)
    else:
        idx, part = np.broadcast_to(np.arange(d2.shape[1]), d2.shape), d2
    order = np.argsort(part, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, 1)
    d2 = np.take_along_axis(part, order, 1).astype(np.float64)
    d2 += (q32.astype(np.float64) ** 2).sum(1)[:, None]
    return np.sqrt(np.maximum(d2, 0.0)), idx


def _knn_kdtree(
    queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    dist, idx = cKDTree(candidates).query(queries, k=k)
    return dist.reshape(-1, k), idx.reshape(-1, k)


def knn_affinity_graph(
    descriptors: np.ndarray,
    frame_of_region: np.ndarray,
    *,
    temporal_radius: int = 15,
    neighbours: int = 62,
    sigma: float = 0.1,
    method: str = "brute",
    temporal_stride: int = 1,
) -> sp.csr_matrix:
    """Row-stochastic sparse affinity between regions (rows: a region; columns: its neighbours).

    ``frame_of_region`` must be non-decreasing (regions grouped by frame). Each region of frame i
    takes its ``neighbours`` nearest regions (L2) among frames i-radius … i+radius, weighted
    exp(-d²/sigma); the diagonal is 1 and every row sums to 1. ``method`` "brute" (exact, BLAS)
    or "kdtree" (scipy cKDTree, as the reference; same neighbours, ~40x slower at 176-d).
    ``temporal_stride`` s > 1 keeps, of the frames beyond i±1, only those whose distance to i is
    a multiple of s (i±s, i±2s, …): the kNN search costs about 1/s as much (docs/DEVIATIONS.md).
    """
    n = descriptors.shape[0]
    if frame_of_region.shape != (n,) or np.any(np.diff(frame_of_region) < 0):
        raise ValueError("frame_of_region must give one non-decreasing frame index per region")
    if method not in ("brute", "kdtree"):
        raise ValueError(f"unknown kNN method {method!r}: expected 'brute' or 'kdtree'")
    if temporal_stride < 1:
        raise ValueError(f"temporal_stride must be >= 1, got {temporal_stride}")
    n_frames = int(frame_of_region[-1]) + 1 if n else 0
    starts = np.searchsorted(frame_of_region, np.arange(n_frames + 1))
    data = descriptors.astype(np.float32 if method == "brute" else np.float64)
    offsets = np.arange(-temporal_radius, temporal_radius + 1)
    offsets = offsets[(np.abs(offsets) <= 1) | (offsets % temporal_stride == 0)]
    if method == "brute":  # once per shot rather than once per frame's window
        scaled, squared = -2.0 * data, (data * data).sum(1)
    rows, cols, vals = [], [], []
    for f in range(n_frames):
        window = f + offsets[(f + offsets >= 0) & (f + offsets < n_frames)]
        if temporal_stride == 1:  # one contiguous block: no copy
            candidates = np.arange(starts[window[0]], starts[window[-1] + 1])
            pick = slice(candidates[0], candidates[-1] + 1)
        else:
            candidates = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in window])
            pick = candidates
        k = min(neighbours, len(candidates))
        queries = data[starts[f] : starts[f + 1]]
        if method == "brute":
            extra = {"scaled": scaled[pick], "squared": squared[pick]}
            dist, idx = _knn_brute(queries, data[pick], k, **extra)
        else:
            dist, idx = _knn_kdtree(queries, data[pick], k)
        idx = candidates[idx]
        own = np.repeat(np.arange(starts[f], starts[f + 1]), k)
        keep = idx.ravel() != own  # the diagonal is added below, once, with weight 1
        rows.append(own[keep])
        cols.append(idx.ravel()[keep])
        vals.append(np.exp(-(dist.ravel()[keep] ** 2) / sigma))
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(np.ones(n))
    graph = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    row_sums = np.asarray(graph.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / row_sums) @ graph)


def region_adjacency(labels: np.ndarray, offset: int = 0) -> np.ndarray:
    """Unique pairs (m, 2) of 4-connected neighbouring labels of one frame, shifted by ``offset``,
    sorted, smaller label first."""
    first = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()]).astype(np.int64)
    second = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()]).astype(np.int64)
    boundary = first != second  # only the few pixels on a region boundary go to np.unique
    first, second = first[boundary], second[boundary]
    n = int(labels.max()) + 1
    keys = np.unique(np.minimum(first, second) * n + np.maximum(first, second))
    return np.stack([keys // n, keys % n], axis=1) + offset
