"""Synthetic mover clips: one textured object moving fast over a panning photo, exact flow t -> t+g.

The flow benchmark of issue 12 needs what `pipeline.synthetic.render_clip` does not isolate: a
small object whose displacement *relative to the background* over one training pair (frame 0 ->
frame ``gap``, the gaps CMP's sampling policy picks) is large, 10-60 px, so the error on the
object pixels can be read apart from the background's. CMP (Zhan et al. 2019, sec. 4.1) pairs
frames up to 9 apart; objects that move fast relative to the camera are what its guidance is meant
to propagate.

A clip has ``gap + 1`` frames. The background is a photo window panning at a constant velocity
``b`` px/frame; the object (a class shape of `pipeline.synthetic`, textured with another photo)
translates at ``b + r`` px/frame where ``|r| * gap`` is the pair's relative displacement. Both
layers are rendered by inverse warping with the same translation maps used for the ground truth
(the layered construction of `pipeline.synthetic`, Sintel/FlyingChairs style), so the forward flow
0 -> gap is exact up to bilinear resampling: ``b * gap`` on the background, ``(b + r) * gap`` on the
object. The intermediate frames let a backend chain gap-1 flows.

Pure and deterministic from the seed; textures come from the photographs bundled with
scikit-image (no download).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.synthetic import _warp_roi
from pipeline.synthetic_params import _Motion
from pipeline.synthetic_scene import (
    CLASS_NAMES,
    _photos,
    _shape_alpha,
    _similarity,
    _texture_window,
)

# Texture look as in render_clip's defaults; no rotation, scaling or noise (pure translations).
_LOOK = _Motion(
    object_area=(0.1, 0.1),
    object_speed=(0.0, 0.0),
    object_rotation=(0.0, 0.0),
    object_scale_rate=(1.0, 1.0),
    object_margin=0.0,
    background_speed=(0.0, 0.0),
    background_zoom=(1.0, 1.0),
    background_scale_spread=2.0,
    object_texture_zoom=2.5,
    gray_tint=(0.6, 1.2),
    texture_blur=0.6,
    noise_std=0.0,
)


@dataclass(frozen=True)
class MoverClip:
    """Frames 0..gap and the exact ground truth of the pair 0 -> gap."""

    frames: np.ndarray  # (gap+1, H, W, 3) uint8 RGB
    flow: np.ndarray  # (H, W, 2) float32, frame 0 -> frame gap
    mover: np.ndarray  # (H, W) bool: object pixels of frame 0 (coverage >= 1/2)
    occluded: np.ndarray  # (H, W) bool: pixels of frame 0 hidden or off-frame in frame gap
    object_size: int  # side of the object's square bounding patch, px
    relative_px: float  # |r| * gap: displacement relative to the background over the pair


def _translation(offset: np.ndarray) -> np.ndarray:
    """Texture -> frame map of a patch whose top-left corner sits at ``offset`` (x, y)."""
    return _similarity(np.asarray(offset, np.float64), 0.0, 1.0, np.zeros(2))


def render_mover_clip(
    *,
    seed: int,
    gap: int,
    short_side: int = 416,
    aspect: float = 4.0 / 3.0,
    object_size: tuple[int, int] = (32, 128),
    relative_px: tuple[float, float] = (10.0, 60.0),
    background_speed: tuple[float, float] = (0.5, 2.0),
) -> MoverClip:
    """Render one mover clip of ``gap + 1`` frames, landscape ``short_side`` x ``aspect``.

    ``object_size`` (px, the side of the shape's bounding square) is capped at half the short
    side so the object and its path fit the frame; ``relative_px`` is the range of the object's
    displacement over the whole pair relative to the background; ``background_speed`` is the
    camera pan in px per frame.
    """
    if gap < 1:
        raise ValueError(f"gap must be >= 1, got {gap}")
    if short_side < 32:
        raise ValueError(f"short_side must be >= 32, got {short_side}")
    height, width = short_side, round(short_side * aspect)
    rng = np.random.default_rng([seed, gap, short_side])
    photos = _photos()
    bg_index = int(rng.integers(len(photos)))
    obj_index = int(rng.choice([i for i in range(len(photos)) if i != bg_index]))

    speed = rng.uniform(*background_speed)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    b = speed * np.array([math.cos(angle), math.sin(angle)])
    travel = np.ceil(np.abs(b) * gap).astype(int) + 4
    tex_h, tex_w = height + 2 * travel[1], width + 2 * travel[0]
    fit = max(tex_w / photos[bg_index][0].shape[1], tex_h / photos[bg_index][0].shape[0])
    background = _texture_window(rng, photos[bg_index], fit * 1.5, tex_h, tex_w, _LOOK)

    size = int(rng.integers(object_size[0], min(object_size[1], short_side // 2) + 1))
    class_id = int(rng.integers(1, len(CLASS_NAMES)))
    alpha = _shape_alpha(class_id, 0.5 * size - 1.0, size)  # circumradius: the patch's half side
    photo = photos[obj_index]
    fit = max(size / photo[0].shape[1], size / photo[0].shape[0])
    texture = _texture_window(rng, photo, fit * 2.5, size, size, _LOOK)

    relative = rng.uniform(*relative_px)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    r = relative / gap * np.array([math.cos(angle), math.sin(angle)])
    o = b + r
    # Start so the object's path stays inside the frame where it can (else it is clamped).
    end_shift = o * gap
    lo = np.maximum(0.0, -end_shift)
    hi = np.array([width - size, height - size]) - np.maximum(0.0, end_shift)
    start = np.where(hi >= lo, rng.uniform(lo, np.maximum(lo, hi)), (lo + hi) / 2.0)

    frames = np.empty((gap + 1, height, width, 3), np.uint8)
    top = np.zeros((gap + 1, height, width), bool)
    for t in range(gap + 1):
        bg_map = _translation(b * t - travel)
        canvas = cv2.warpAffine(
            background,
            np.linalg.inv(bg_map)[:2],
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT101,
        )
        obj_map = _translation(start + o * t)
        warped = _warp_roi(alpha, obj_map, height, width, cv2.BORDER_CONSTANT)
        if warped is not None:
            cover, (y0, y1, x0, x1) = warped
            colour, _ = _warp_roi(texture, obj_map, height, width, cv2.BORDER_REFLECT101)
            region = canvas[y0:y1, x0:x1]
            region += cover[:, :, None] * (colour - region)
            top[t, y0:y1, x0:x1] = cover >= 0.5
        frames[t] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

    mover = top[0]
    flow = np.empty((height, width, 2), np.float32)
    flow[...] = b * gap
    flow[mover] = o * gap
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    tx = np.rint(xs + flow[..., 0]).astype(int)
    ty = np.rint(ys + flow[..., 1]).astype(int)
    inside = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
    hidden = np.zeros_like(mover)
    hidden[inside] = top[gap][ty[inside], tx[inside]] & ~mover[inside]
    return MoverClip(
        frames=frames,
        flow=flow,
        mover=mover,
        occluded=~inside | hidden,
        object_size=size,
        relative_px=float(relative),
    )


__all__ = ["MoverClip", "render_mover_clip"]
