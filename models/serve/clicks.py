"""Simulated annotators and a reference without CMP, for the clicks-to-IoU measurement.

The usual interactive-segmentation protocol (Xu et al., CVPR 2016, "Deep interactive object
selection"; the "centre of the largest error region" robot): start from an empty mask; each next
click goes to the point farthest from the boundary of the largest connected error region, positive
when that region is a false negative (object missed), negative when it is a false positive.

The non-CMP reference, :func:`geodesic_mask`, floods from the clicks along the image: a pixel
belongs to the object when its geodesic distance to the nearest positive click is smaller than to
the nearest negative click or the image border (the border as background seed, as in geodesic
segmentation, Bai & Sapiro, ICCV 2007). The path cost is the CIE-Lab gradient magnitude divided
by its mean, plus a small Euclidean term (0.1 per pixel), so the flood stops at colour edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
from skimage.color import rgb2lab
from skimage.filters import sobel
from skimage.graph import MCP_Geometric

__all__ = ["GEODESIC_EUCLIDEAN", "geodesic_mask", "iou", "next_click", "simulate_clicks"]

GEODESIC_EUCLIDEAN = 0.1

Segmenter = Callable[[Sequence[tuple[int, int]], Sequence[tuple[int, int]]], np.ndarray]


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 when both are empty)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, bool] | None:
    """(x, y, positive) at the centre of the largest error region; None when there is none.

    The centre is the region's pixel farthest from its boundary (the image border counts as
    boundary); ties go to the first pixel in row-major order.
    """
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    best: tuple[int, np.ndarray, bool] | None = None
    for error, positive in ((gt & ~pred, True), (pred & ~gt, False)):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), 8)
        for k in range(1, count):
            area = int(stats[k, cv2.CC_STAT_AREA])
            if best is None or area > best[0]:
                best = (area, labels == k, positive)
    if best is None:
        return None
    region = np.pad(best[1], 1).astype(np.uint8)
    distance = cv2.distanceTransform(region, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y), best[2]


def simulate_clicks(segment: Segmenter, gt: np.ndarray, n_clicks: int = 5) -> list[float]:
    """IoU after each of ``n_clicks`` simulated clicks on object ``gt`` (H, W) bool.

    ``segment(positive, negative)`` returns the mask for click lists of (x, y). When the mask is
    already exact the remaining clicks keep its IoU of 1.
    """
    gt = np.asarray(gt, bool)
    positive: list[tuple[int, int]] = []
    negative: list[tuple[int, int]] = []
    pred = np.zeros_like(gt)
    scores = []
    for _ in range(n_clicks):
        click = next_click(pred, gt)
        if click is not None:
            x, y, is_positive = click
            (positive if is_positive else negative).append((x, y))
            pred = np.asarray(segment(positive, negative), bool)
        scores.append(iou(pred, gt))
    return scores


def _distance(cost: np.ndarray, seeds: list[tuple[int, int]]) -> np.ndarray:
    if not seeds:
        return np.full(cost.shape, np.inf)
    distance, _ = MCP_Geometric(cost).find_costs(seeds)
    return distance


def geodesic_mask(
    image: np.ndarray,
    positive: Sequence[tuple[int, int]],
    negative: Sequence[tuple[int, int]] = (),
    euclidean: float = GEODESIC_EUCLIDEAN,
) -> np.ndarray:
    """Object mask flooded from the positive clicks (x, y) against the negative clicks and the
    image border along the Lab-gradient geodesic distance; empty without a positive click."""
    height, width = image.shape[:2]
    if not positive:
        return np.zeros((height, width), bool)
    lab = rgb2lab(np.asarray(image, np.uint8))
    gradient = np.sqrt(sum(sobel(lab[..., c]) ** 2 for c in range(3)))
    cost = gradient / max(float(gradient.mean()), 1e-6) + euclidean
    border = [(0, x) for x in range(width)] + [(height - 1, x) for x in range(width)]
    border += [(y, 0) for y in range(height)] + [(y, width - 1) for y in range(height)]
    fg = _distance(cost, [(int(y), int(x)) for x, y in positive])
    bg = _distance(cost, [(int(y), int(x)) for x, y in negative] + border)
    return fg < bg
