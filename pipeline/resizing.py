"""Resolution policy for stored frames and flow.

Frames are resized once, before flow is computed, and the flow is stored at that resolution in
pixels of the stored image (docs/CONTRACTS.md, "Flow"). CMP resizes the shorter side to 416 before
cropping (REFERENCE.md, "CMP", training); uNLC caps the longer side at 650 (REFERENCE.md, "uNLC").
Shrinking uses area interpolation (averages, no aliasing); enlarging uses bilinear.
"""

from __future__ import annotations

import cv2
import numpy as np


def target_size(
    h: int,
    w: int,
    *,
    short_side: int | None = None,
    long_side: int | None = None,
    upscale: bool = True,
) -> tuple[int, int]:
    """Return the stored (h2, w2) for an h x w frame, keeping the aspect ratio.

    short_side: the shorter side becomes this many pixels. long_side: the longer side becomes this
    many pixels. Both: the smaller of the two scales, so neither limit is exceeded. Neither: the
    size is unchanged. upscale=False never enlarges (the scale is capped at 1).
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {h} x {w}")
    scales = []
    if short_side is not None:
        if short_side <= 0:
            raise ValueError(f"short_side must be positive, got {short_side}")
        scales.append(short_side / min(h, w))
    if long_side is not None:
        if long_side <= 0:
            raise ValueError(f"long_side must be positive, got {long_side}")
        scales.append(long_side / max(h, w))
    if not scales:
        return int(h), int(w)
    scale = min(scales)
    if not upscale:
        scale = min(scale, 1.0)
    # The constrained side gets its exact target; the other is rounded, never below one pixel.
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h2, w2 = size
    if h2 <= 0 or w2 <= 0:
        raise ValueError(f"target size must be positive, got {h2} x {w2}")
    h, w = array.shape[:2]
    if (h2, w2) == (h, w):
        return array.copy()
    shrinking = h2 <= h and w2 <= w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(array, (w2, h2), interpolation=interpolation)


def resize_frame(
    img: np.ndarray,
    *,
    short_side: int | None = None,
    long_side: int | None = None,
    upscale: bool = True,
) -> np.ndarray:
    """Resize an H x W (x C) image by the `target_size` policy (INTER_AREA when shrinking)."""
    img = np.asarray(img)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image must be a non-empty H x W or H x W x C array, got {img.shape}")
    size = target_size(
        img.shape[0], img.shape[1], short_side=short_side, long_side=long_side, upscale=upscale
    )
    return _resize(img, size)


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize flow (H x W x 2, dx dy) to size=(h2, w2) and scale the vectors with the image.

    dx is multiplied by w2 / w and dy by h2 / h, so the result is in pixels of the resized image.
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] == 0 or flow.shape[1] == 0:
        raise ValueError(f"flow must be a non-empty H x W x 2 array, got shape {flow.shape}")
    h, w = flow.shape[:2]
    h2, w2 = (int(s) for s in size)
    resized = _resize(flow.astype(np.float32, copy=False), (h2, w2))
    resized[..., 0] *= w2 / w
    resized[..., 1] *= h2 / h
    return resized
