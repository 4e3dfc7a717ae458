"""Superpixel regions, their descriptors and the sparse nearest-neighbour graph of uNLC.

Follows Pathak et al. 2017, section 5.1 ("a nearest neighbor graph is computed over the superpixels
in the video using location and appearance (color histograms and HOG) as features"), with the
numbers of the authors' code (REFERENCE.md, "uNLC"): SLIC with ~400 segments and sigma 5; a 15x15
patch at each superpixel centre gives a HOG (6 orientations, 5x5-pixel cells, one 3x3-cell block:
54-d); R, G, B, L, a, b histograms of 20 bins each, L1-normalised (120-d); the normalised position
(2-d). Each region links to its 62 nearest neighbours (L2) among the regions of frames within ±15,
with affinity exp(-d²/sigma), sigma 0.1, a unit diagonal and rows normalised.

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


def superpixels(
    rgb: np.ndarray, *, n_segments: int = 400, sigma: float = 5.0, compactness: float = 10.0
) -> np.ndarray:
    """SLIC superpixels of one RGB uint8 frame: int32 labels 0..n-1 with no gaps."""
    labels = slic(rgb, n_segments=n_segments, sigma=sigma, compactness=compactness, start_label=0)
    # SLIC's connectivity pass can leave unused label values; make them contiguous.
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape).astype(np.int32)


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
    """(n, patch, patch) windows of ``gray`` centred on ``centres`` (row, col), kept inside."""
    h, w = gray.shape
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
    channels = [
        (rgb[..., 0], 0.0, 256.0),
        (rgb[..., 1], 0.0, 256.0),
        (rgb[..., 2], 0.0, 256.0),
        (lab[..., 0], 0.0, 100.0),
        (lab[..., 1], -128.0, 128.0),
        (lab[..., 2], -128.0, 128.0),
    ]
    flat_labels = labels.ravel().astype(np.int64) * bins
    out = np.empty((n_regions, 6 * bins), dtype=np.float64)
    for i, (values, lo, hi) in enumerate(channels):
        b = ((values.ravel().astype(np.float64) - lo) * (bins / (hi - lo))).astype(np.int64)
        b = np.clip(b, 0, bins - 1)
        counts = np.bincount(flat_labels + b, minlength=n_regions * bins).reshape(n_regions, bins)
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
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors (n, hog + 6·bins + 2) float32 and pixel areas (n,) of a frame's regions."""
    n_regions = int(labels.max()) + 1
    area, centres = region_centroids(labels, n_regions)
    # Grey as skimage.color.rgb2gray (ITU-R 709 luma) in [0, 1], which the reference feeds to HOG.
    gray = rgb.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721]) / 255.0
    hog = hog_patches(
        extract_patches(gray, centres, patch),
        cell=hog_cell,
        orientations=hog_orientations,
        block_norm=hog_block_norm,
    )
    colour = colour_histograms(rgb, labels, n_regions, bins=colour_bins)
    h, w = labels.shape
    position = centres / np.array([h, w], dtype=np.float64)
    return np.hstack([hog, colour, position]).astype(np.float32), area


def _knn_brute(
    queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by one matrix product (a k-d tree degenerates to a slow brute
    force in 176 dimensions). Selection in float32, returned distances recomputed in float64."""
    q32 = queries.astype(np.float32)
    c32 = candidates.astype(np.float32)
    d2 = (q32 * q32).sum(1)[:, None] + (c32 * c32).sum(1)[None, :] - 2.0 * (q32 @ c32.T)
    # A few spare candidates absorb float32 rounding; the float64 re-ranking picks the exact k.
    shortlist = min(k + 8, d2.shape[1])
    if shortlist < d2.shape[1]:
        idx = np.argpartition(d2, shortlist - 1, axis=1)[:, :shortlist]
    else:
        idx = np.broadcast_to(np.arange(d2.shape[1]), d2.shape).copy()
    diff = queries[:, None, :] - candidates[idx]
    dist = np.sqrt((diff * diff).sum(-1))
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


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
) -> sp.csr_matrix:
    """Row-stochastic sparse affinity between regions (rows: a region; columns: its neighbours).

    ``frame_of_region`` must be non-decreasing (regions grouped by frame). Each region of frame i
    takes its ``neighbours`` nearest regions (L2) among frames i-radius … i+radius, weighted
    exp(-d²/sigma); the diagonal is 1 and every row sums to 1. ``method`` "brute" (exact, BLAS)
    or "kdtree" (scipy cKDTree, as the reference; same neighbours, ~40x slower at 176-d).
    """
    n = descriptors.shape[0]
    if frame_of_region.shape != (n,) or np.any(np.diff(frame_of_region) < 0):
        raise ValueError("frame_of_region must give one non-decreasing frame index per region")
    if method not in ("brute", "kdtree"):
        raise ValueError(f"unknown kNN method {method!r}: expected 'brute' or 'kdtree'")
    knn = _knn_brute if method == "brute" else _knn_kdtree
    n_frames = int(frame_of_region[-1]) + 1 if n else 0
    starts = np.searchsorted(frame_of_region, np.arange(n_frames + 1))
    data = descriptors.astype(np.float64)
    rows, cols, vals = [], [], []
    for f in range(n_frames):
        lo = starts[max(0, f - temporal_radius)]
        hi = starts[min(n_frames, f + temporal_radius + 1)]
        k = min(neighbours, hi - lo)
        dist, idx = knn(data[starts[f] : starts[f + 1]], data[lo:hi], k)
        idx = idx + lo
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
    """Unique pairs (m, 2) of 4-connected neighbouring labels of one frame, shifted by ``offset``."""
    right = np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1)
    down = np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1)
    pairs = np.concatenate([right, down])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    return pairs.astype(np.int64) + offset
