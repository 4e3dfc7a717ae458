"""Synthetic videos with exact ground truth: flow, instance/class masks and shot cuts.

The project's ground truth for flow EPE, motion-mask IoU, shot-cut F1 and a downstream
segmentation/classification benchmark. A video is a few shots joined by hard cuts. Every shot is a
stack of layers: a textured background that pans and zooms slowly (the camera) and a few textured
objects of distinct shapes (the classes) that translate, rotate and scale faster, in a fixed
z-order. Textures are cut from the real photographs bundled with scikit-image (no download).

Each layer k carries one affine map A_k(t) from its texture to frame t, and the frame is rendered by
inverse warping (``cv2.warpAffine`` with ``WARP_INVERSE_MAP``). The ground-truth forward flow of a
pixel p is then exactly ``A_k(t+1) A_k(t)^-1 p - p`` for the layer k visible at p, the same map
used to render, so the flow is exact up to bilinear resampling, as in the layered synthetic sets of
Sintel/FlyingChairs. The moving foreground objects are what the papers' motion segmenters are meant
to find (Pathak et al. 2017 Sec. 3, uNLC; Mahendran et al. 2018 S3-CNN), and the flow is what CMP
(Zhan et al. 2019 Sec. 3) samples its guidance from. Ground-truth layout: docs/CONTRACTS.md,
"Ground truth of the synthetic set".

Everything here is pure and deterministic from a seed except the two writers, which write
atomically (temporary name in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import functools
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("background", "disc", "square", "triangle", "star", "cross")
"""Name of each class id; 0 is the background, objects are 1..C."""

# Photographs bundled inside the scikit-image wheel (skimage/data/*.png|jpg): loading them never
# touches the network. Colour ones first; the grey ones get a random colour tint per use.
TEXTURE_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
    "moon",
    "page",
)

MIN_SIZE = 32  # frames smaller than this leave no room for an object and its motion
MAX_OBJECTS = 16  # instance ids are uint8; more objects than this would not fit a frame anyway

# Seed-sequence tags so that clips and labelled stills drawn from the same seed never share a stream.
_STREAM_CLIP = 0
_STREAM_STILLS = 1


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class _Motion:
    """Validated shape, motion and appearance ranges shared by clips and stills."""

    object_area: tuple[float, float]
    object_speed: tuple[float, float]
    object_rotation: tuple[float, float]
    object_scale_rate: tuple[float, float]
    object_margin: float
    background_speed: tuple[float, float]
    background_zoom: tuple[float, float]
    background_scale_spread: float
    object_texture_zoom: float
    gray_tint: tuple[float, float]
    texture_blur: float
    noise_std: float


def _check_int_range(name: str, value: Any, lowest: int, highest: int) -> tuple[int, int]:
    """Return an inclusive integer range (lo, hi) with lowest <= lo <= hi <= highest."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (lo, hi), got {value!r}") from None
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must hold integers, got {value!r}")
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"{name} is an empty range: lo={lo} > hi={hi}")
    if lo < lowest or hi > highest:
        raise ValueError(f"{name} must lie within [{lowest}, {highest}], got ({lo}, {hi})")
    return lo, hi


def _check_float_range(
    name: str, value: Any, lowest: float, highest: float, *, open_low: bool = False
) -> tuple[float, float]:
    """Return a float range (lo, hi), lo <= hi, both finite and within [lowest, highest]."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (lo, hi), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got ({lo}, {hi})")
    if lo > hi:
        raise ValueError(f"{name} is an empty range: lo={lo} > hi={hi}")
    too_low = lo <= lowest if open_low else lo < lowest
    if too_low or hi > highest:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must lie within {bracket}{lowest}, {highest}], got ({lo}, {hi})")
    return lo, hi


def _check_float(name: str, value: Any, lowest: float, highest: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and lowest <= v <= highest):
        raise ValueError(f"{name} must lie within [{lowest}, {highest}], got {value!r}")
    return v


def _check_size(height: Any, width: Any) -> tuple[int, int]:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
        if v < MIN_SIZE:
            raise ValueError(f"{name} must be at least {MIN_SIZE} pixels, got {v}")
    return int(height), int(width)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _motion_params(
    *,
    object_area: Sequence[float],
    object_speed: Sequence[float],
    object_rotation: Sequence[float],
    object_scale_rate: Sequence[float],
    object_margin: float,
    background_speed: Sequence[float],
    background_zoom: Sequence[float],
    background_scale_spread: float,
    object_texture_zoom: float,
    gray_tint: Sequence[float],
    texture_blur: float,
    noise_std: float,
) -> _Motion:
    return _Motion(
        object_area=_check_float_range("object_area", object_area, 0.0, 0.5, open_low=True),
        object_speed=_check_float_range("object_speed", object_speed, 0.0, 64.0),
        object_rotation=_check_float_range("object_rotation", object_rotation, -45.0, 45.0),
        object_scale_rate=_check_float_range(
            "object_scale_rate", object_scale_rate, 0.5, 2.0, open_low=True
        ),
        object_margin=_check_float("object_margin", object_margin, 0.0, 1.0),
        background_speed=_check_float_range("background_speed", background_speed, 0.0, 64.0),
        background_zoom=_check_float_range(
            "background_zoom", background_zoom, 0.5, 2.0, open_low=True
        ),
        background_scale_spread=_check_float(
            "background_scale_spread", background_scale_spread, 1.0, 8.0
        ),
        object_texture_zoom=_check_float("object_texture_zoom", object_texture_zoom, 1.0, 8.0),
        gray_tint=_check_float_range("gray_tint", gray_tint, 0.0, 2.0),
        texture_blur=_check_float("texture_blur", texture_blur, 0.0, 5.0),
        noise_std=_check_float("noise_std", noise_std, 0.0, 64.0),
    )


# --------------------------------------------------------------------------------------------------
# Textures and shapes


def photo_rgb(image: Any, dtype: Any) -> tuple[np.ndarray, bool]:
    """A photograph as contiguous RGB of ``dtype`` (grey repeated to 3 channels, alpha dropped),
    and whether it was grey."""
    image = np.asarray(image)
    gray = image.ndim == 2
    if gray:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3], dtype=dtype), gray


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[tuple[np.ndarray, bool], ...]:
    """The bundled photographs as read-only float32 RGB arrays, with a flag 'was greyscale'."""
    from skimage import data  # imported lazily: skimage.data pulls in a lot at import time

    photos = []
    for name in TEXTURE_PHOTOS:
        image, gray = photo_rgb(getattr(data, name)(), np.float32)
        image.setflags(write=False)
        photos.append((image, gray))
    return tuple(photos)


def _unit_polygon(class_id: int) -> np.ndarray:
    """Outline of a class's shape, circumradius 1, centred at 0, as (N, 2) float64 (x, y)."""
    name = CLASS_NAMES[class_id]
    if name == "disc":
        a = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if name == "square":
        h = 1.0 / math.sqrt(2.0)
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    if name == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2.0 * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if name == "star":
        # five points; inner radius 0.45 keeps the arms thick enough to survive downsampling
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    if name == "cross":
        w, s = 0.3, 1.0 / math.sqrt(1.0 + 0.3**2)  # arm half-width w; tips on the unit circle
        w, e = w * s, s
        return np.array(
            [[-w, -e], [w, -e], [w, -w], [e, -w], [e, w], [w, w], [w, e], [-w, e], [-w, w],
             [-e, w], [-e, -w], [-w, -w]]
        )  # fmt: skip
    raise ValueError(f"unknown class id {class_id}")


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _shape_alpha(class_id: int, radius: float, size: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage (size×size float32 in [0,1]) of the shape centred in the patch."""
    big = size * supersample
    centre = (big - 1) / 2.0
    poly = _unit_polygon(class_id) * radius * supersample + centre
    canvas = np.zeros((big, big), np.uint8)
    shift = 4  # fillPoly's fixed-point bits: sub-pixel vertex placement
    cv2.fillPoly(canvas, [np.round(poly * (1 << shift)).astype(np.int32)], 255, cv2.LINE_8, shift)
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _texture_window(
    rng: np.random.Generator,
    photo: tuple[np.ndarray, bool],
    scale: float,
    out_height: int,
    out_width: int,
    params: _Motion,
) -> np.ndarray:
    """A random out_height×out_width window of the photo resized by ``scale``, flipped or turned
    at random, grey photos tinted, blurred to limit aliasing. float32 RGB.

    Only the part of the photo that the window needs is resized (much faster for small windows).
    The caller picks ``scale`` so that the resized photo covers the window.
    """
    image, gray = photo
    ph, pw = image.shape[:2]
    pad = 2 + math.ceil(3.0 * params.texture_blur)  # so the blur sees real pixels at the border
    src_w = min(pw, math.ceil((out_width + 2 * pad) / scale) + 1)
    src_h = min(ph, math.ceil((out_height + 2 * pad) / scale) + 1)
    x0 = int(rng.integers(0, pw - src_w + 1))
    y0 = int(rng.integers(0, ph - src_h + 1))
    crop = image[y0 : y0 + src_h, x0 : x0 + src_w]
    size = (max(out_width, round(src_w * scale)), max(out_height, round(src_h * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    tex = cv2.resize(crop, size, interpolation=interp)
    if rng.random() < 0.5:
        tex = tex[:, ::-1]
    if rng.random() < 0.5:
        tex = tex[::-1, ::-1]  # a half turn keeps the aspect
    if gray:
        tex = tex * rng.uniform(*params.gray_tint, size=3).astype(np.float32)
    tex = np.ascontiguousarray(np.clip(tex, 0.0, 255.0), dtype=np.float32)
    if params.texture_blur > 0:
        tex = cv2.GaussianBlur(tex, (0, 0), params.texture_blur)
    th, tw = tex.shape[:2]
    wy = (th - out_height) // 2  # centre window: the random crop above already chose the place
    wx = (tw - out_width) // 2
    return np.ascontiguousarray(tex[wy : wy + out_height, wx : wx + out_width])


# --------------------------------------------------------------------------------------------------
# Affine maps


def _similarity(centre: np.ndarray, angle: float, scale: float, anchor: np.ndarray) -> np.ndarray:
    """3×3 map taking texture point ``anchor`` to frame point ``centre``, rotated and scaled."""
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    ax, ay = anchor
    return np.array(
        [[c, -s, centre[0] - (c * ax - s * ay)], [s, c, centre[1] - (s * ax + c * ay)], [0, 0, 1]]
    )


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect an unbounded path into [lo, hi]: a straight line becomes one that bounces."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, (lo + hi) / 2.0)
    y = np.mod(x - lo, 2.0 * span)
    return lo + np.where(y > span, 2.0 * span - y, y)


@dataclass
class _Layer:
    texture: np.ndarray  # float32 h×w×3
    alpha: np.ndarray | None  # float32 h×w coverage; None for the (opaque) background
    affines: np.ndarray  # (n_frames, 3, 3) texture -> frame
    class_id: int
    instance_id: int


def _background_layer(
    rng: np.random.Generator,
    n_frames: int,
    height: int,
    width: int,
    photo: tuple[np.ndarray, bool],
    params: _Motion,
) -> _Layer:
    """Camera motion: the texture pans at a slow constant velocity and zooms at a constant rate."""
    speed = rng.uniform(*params.background_speed)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    velocity = speed * np.array([math.cos(direction), math.sin(direction)])
    zoom = rng.uniform(*params.background_zoom)
    t = np.arange(n_frames)
    scales = zoom**t
    # Texture big enough that the frame never leaves it (border reflection is only a safety net).
    travel = np.abs(velocity) * (n_frames - 1)
    half_need = (np.array([width, height]) / 2.0 + travel) / min(1.0, scales.min()) + 2.0
    tex_w, tex_h = (2 * math.ceil(v) for v in half_need)
    ph, pw = photo[0].shape[:2]
    fit = max(tex_w / pw, tex_h / ph)  # the smallest scale at which the photo covers the texture
    scale = fit * rng.uniform(1.0, params.background_scale_spread)
    texture = _texture_window(rng, photo, scale, tex_h, tex_w, params)
    anchor = np.array([(tex_w - 1) / 2.0, (tex_h - 1) / 2.0])
    frame_centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    affines = np.stack(
        [_similarity(frame_centre + velocity * k, 0.0, scales[k], anchor) for k in t]
    )
    return _Layer(texture, None, affines, 0, 0)


def _object_layer(
    rng: np.random.Generator,
    n_frames: int,
    height: int,
    width: int,
    photo: tuple[np.ndarray, bool],
    instance_id: int,
    params: _Motion,
) -> _Layer:
    """A textured shape that translates (bouncing inside the frame), rotates and scales."""
    class_id = int(rng.integers(1, len(CLASS_NAMES)))
    area = rng.uniform(*params.object_area) * height * width
    radius = math.sqrt(area / _polygon_area(_unit_polygon(class_id)))  # circumradius in pixels
    size = 2 * math.ceil(radius) + 4
    alpha = _shape_alpha(class_id, radius, size)
    ph, pw = photo[0].shape[:2]
    fit = max(size / pw, size / ph)  # the smallest scale at which the photo covers the patch
    scale = fit * rng.uniform(1.0, params.object_texture_zoom)
    texture = _texture_window(rng, photo, scale, size, size, params)

    t = np.arange(n_frames)
    scales = rng.uniform(*params.object_scale_rate) ** t
    angles = rng.uniform(0.0, 2.0 * np.pi) + np.deg2rad(rng.uniform(*params.object_rotation)) * t
    speed = rng.uniform(*params.object_speed)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    # Keep the centre at least object_margin × (largest) radius from every edge: mostly inside.
    margin = params.object_margin * radius * scales.max()
    lo = np.array([margin, margin])
    hi = np.array([width - 1 - margin, height - 1 - margin])
    start = rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi))
    path = start + speed * np.outer(t, [math.cos(direction), math.sin(direction)])
    centres = np.stack([_fold(path[:, 0], lo[0], hi[0]), _fold(path[:, 1], lo[1], hi[1])], axis=1)
    anchor = np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    affines = np.stack([_similarity(centres[k], angles[k], scales[k], anchor) for k in t])
    return _Layer(texture, alpha, affines, class_id, instance_id)


# --------------------------------------------------------------------------------------------------
# Rendering


def _warp_roi(
    image: np.ndarray, affine: np.ndarray, height: int, width: int, border: int
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Inverse-warp ``image`` into the frame's bounding box of its footprint (speed for objects)."""
    h, w = image.shape[:2]
    corners = np.array([[-1, -1, 1], [w, -1, 1], [w, h, 1], [-1, h, 1]], np.float64)
    xy = (affine @ corners.T)[:2]
    x0 = max(0, math.floor(xy[0].min()))
    y0 = max(0, math.floor(xy[1].min()))
    x1 = min(width, math.ceil(xy[0].max()) + 1)
    y1 = min(height, math.ceil(xy[1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    inverse = np.linalg.inv(affine)
    # a ROI pixel (x, y) is frame pixel (x + x0, y + y0)
    inverse[:2, 2] += inverse[:2, :2] @ np.array([x0, y0], np.float64)
    out = cv2.warpAffine(
        image,
        inverse[:2],
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=border,
        borderValue=0,
    )
    return out, (y0, y1, x0, x1)


def _render_shot(
    rng: np.random.Generator,
    n_frames: int,
    n_objects: int,
    height: int,
    width: int,
    background_photo: int,
    params: _Motion,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames (n,H,W,3) uint8, instances (n,H,W) uint8, classes (n,H,W) uint8, flow (n-1,H,W,2)."""
    photos = _photos()
    background = _background_layer(rng, n_frames, height, width, photos[background_photo], params)
    # objects take their texture from any photo but the background's, so they stand out from it
    others = [i for i in range(len(photos)) if i != background_photo]
    objects = [
        _object_layer(
            rng, n_frames, height, width, photos[others[rng.integers(len(others))]], k + 1, params
        )
        for k in range(n_objects)
    ]
    z_order = [objects[i] for i in rng.permutation(n_objects)]  # bottom to top
    layers = [background, *z_order]
    class_of_layer = np.array([layer.class_id for layer in layers], np.uint8)
    instance_of_layer = np.array([layer.instance_id for layer in layers], np.uint8)

    frames = np.empty((n_frames, height, width, 3), np.uint8)
    visible = np.empty((n_frames, height, width), np.uint8)  # index into `layers`
    for t in range(n_frames):
        inverse = np.linalg.inv(background.affines[t])[:2]
        canvas = cv2.warpAffine(
            background.texture,
            inverse,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT101,
        )
        top = np.zeros((height, width), np.uint8)
        for index, layer in enumerate(z_order, start=1):
            warped_alpha = _warp_roi(
                layer.alpha, layer.affines[t], height, width, cv2.BORDER_CONSTANT
            )
            if warped_alpha is None:
                continue
            alpha, (y0, y1, x0, x1) = warped_alpha
            colour, _ = _warp_roi(
                layer.texture, layer.affines[t], height, width, cv2.BORDER_REFLECT101
            )
            region = canvas[y0:y1, x0:x1]
            region += alpha[:, :, None] * (colour - region)  # soft edges, like a real camera
            # the hard ground-truth boundary is where coverage crosses one half
            top[y0:y1, x0:x1][alpha >= 0.5] = index
        if params.noise_std > 0:
            canvas += rng.normal(0.0, params.noise_std, canvas.shape).astype(np.float32)
        frames[t] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        visible[t] = top

    flow = np.empty((max(n_frames - 1, 0), height, width, 2), np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for t in range(n_frames - 1):
        for index, layer in enumerate(layers):
            where = visible[t] == index
            if not where.any():
                continue
            # the layer's flow field is affine: (A(t+1) A(t)^-1 - I) p
            m = (layer.affines[t + 1] @ np.linalg.inv(layer.affines[t]) - np.eye(3))[:2]
            x, y = xs[where], ys[where]
            flow[t, where, 0] = m[0, 0] * x + m[0, 1] * y + m[0, 2]
            flow[t, where, 1] = m[1, 0] * x + m[1, 1] * y + m[1, 2]
    return frames, instance_of_layer[visible], class_of_layer[visible], flow


def _pick_backgrounds(rng: np.random.Generator, n_shots: int) -> list[int]:
    """A background photo per shot, never the same as the previous shot's (visible cuts)."""
    n = len(TEXTURE_PHOTOS)
    picks = [int(rng.integers(n))]
    for _ in range(n_shots - 1):
        step = int(rng.integers(1, n))  # any other photo
        picks.append((picks[-1] + step) % n)
    return picks


def render_clip(
    *,
    seed: int,
    height: int = 144,
    width: int = 192,
    shots_per_video: Sequence[int] = (2, 4),
    frames_per_shot: Sequence[int] = (20, 30),
    objects_per_shot: Sequence[int] = (1, 3),
    object_area: Sequence[float] = (0.08, 0.2),
    object_speed: Sequence[float] = (1.5, 4.0),
    object_rotation: Sequence[float] = (-3.0, 3.0),
    object_scale_rate: Sequence[float] = (0.993, 1.007),
    object_margin: float = 0.6,
    background_speed: Sequence[float] = (0.3, 1.2),
    background_zoom: Sequence[float] = (0.997, 1.003),
    background_scale_spread: float = 2.0,
    object_texture_zoom: float = 2.5,
    gray_tint: Sequence[float] = (0.6, 1.2),
    texture_blur: float = 0.6,
    noise_std: float = 0.0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one multi-shot clip and its exact ground truth.

    Integer ranges are inclusive; float ranges are sampled uniformly once per shot/object.
    Speeds are in pixels per frame, rotation in degrees per frame, scale/zoom rates are
    multiplicative per frame, ``object_area`` is a fraction of the frame's area per object.

    Returns ``frames`` (T, H, W, 3) uint8 RGB and a dict with ``flow`` (T-1, H, W, 2) float32
    (dx, dy) from t to t+1, zero across cuts; ``instances`` and ``classes`` (T, H, W) uint8;
    ``cuts`` (n_shots-1,) int64; ``shots`` (n_shots, 2) int64 [start, end); ``class_names``.
    """
    seed = _check_seed(seed)
    height, width = _check_size(height, width)
    shots_lo, shots_hi = _check_int_range("shots_per_video", shots_per_video, 1, 1000)
    frames_lo, frames_hi = _check_int_range("frames_per_shot", frames_per_shot, 2, 100_000)
    objects_lo, objects_hi = _check_int_range("objects_per_shot", objects_per_shot, 0, MAX_OBJECTS)
    params = _motion_params(
        object_area=object_area,
        object_speed=object_speed,
        object_rotation=object_rotation,
        object_scale_rate=object_scale_rate,
        object_margin=object_margin,
        background_speed=background_speed,
        background_zoom=background_zoom,
        background_scale_spread=background_scale_spread,
        object_texture_zoom=object_texture_zoom,
        gray_tint=gray_tint,
        texture_blur=texture_blur,
        noise_std=noise_std,
    )
    rng = np.random.default_rng([seed, _STREAM_CLIP])
    n_shots = int(rng.integers(shots_lo, shots_hi + 1))
    lengths = rng.integers(frames_lo, frames_hi + 1, size=n_shots)
    backgrounds = _pick_backgrounds(rng, n_shots)

    frames, instances, classes, flows = [], [], [], []
    for shot in range(n_shots):
        n_objects = int(rng.integers(objects_lo, objects_hi + 1))
        f, i, c, fl = _render_shot(
            rng, int(lengths[shot]), n_objects, height, width, backgrounds[shot], params
        )
        frames.append(f)
        instances.append(i)
        classes.append(c)
        if shot > 0:  # the pair that straddles a cut has no correspondence: zero flow
            flows.append(np.zeros((1, height, width, 2), np.float32))
        flows.append(fl)

    ends = np.cumsum(lengths).astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    gt = {
        "flow": np.concatenate(flows, axis=0),
        "instances": np.concatenate(instances, axis=0),
        "classes": np.concatenate(classes, axis=0),
        "cuts": starts[1:].copy(),
        "shots": np.stack([starts, ends], axis=1),
        "class_names": np.array(CLASS_NAMES),
    }
    return np.concatenate(frames, axis=0), gt


def render_labelled_frames(
    *,
    seed: int,
    n: int,
    height: int = 96,
    width: int = 128,
    objects_per_image: Sequence[int] = (1, 3),
    object_area: Sequence[float] = (0.08, 0.2),
    object_margin: float = 0.6,
    background_scale_spread: float = 2.0,
    object_texture_zoom: float = 2.5,
    gray_tint: Sequence[float] = (0.6, 1.2),
    texture_blur: float = 0.6,
    noise_std: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Still frames from the same generator, for segmentation and classification benchmarks.

    Returns ``images`` (n, H, W, 3) uint8 RGB, ``classes`` (n, H, W) uint8 (0 background,
    1..C as in ``CLASS_NAMES``) and ``labels`` (n,) int64: the class of the object with the most
    visible pixels (ties go to the lower instance id). Uses a random stream separate from
    ``render_clip``'s, so stills never repeat a clip's frames even under the same seed.
    """
    seed = _check_seed(seed)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    height, width = _check_size(height, width)
    objects_lo, objects_hi = _check_int_range(
        "objects_per_image", objects_per_image, 1, MAX_OBJECTS
    )
    params = _motion_params(
        object_area=object_area,
        object_speed=(0.0, 0.0),
        object_rotation=(0.0, 0.0),
        object_scale_rate=(1.0, 1.0),
        object_margin=object_margin,
        background_speed=(0.0, 0.0),
        background_zoom=(1.0, 1.0),
        background_scale_spread=background_scale_spread,
        object_texture_zoom=object_texture_zoom,
        gray_tint=gray_tint,
        texture_blur=texture_blur,
        noise_std=noise_std,
    )
    rng = np.random.default_rng([seed, _STREAM_STILLS])
    images = np.empty((n, height, width, 3), np.uint8)
    classes = np.empty((n, height, width), np.uint8)
    labels = np.empty(n, np.int64)
    for k in range(n):
        n_objects = int(rng.integers(objects_lo, objects_hi + 1))
        background = int(rng.integers(len(TEXTURE_PHOTOS)))
        frame, inst, cls, _ = _render_shot(rng, 1, n_objects, height, width, background, params)
        images[k], classes[k] = frame[0], cls[0]
        counts = np.bincount(inst[0].ravel(), minlength=n_objects + 1)[1:]
        largest = int(np.argmax(counts)) + 1  # argmax returns the first maximum: lower id wins
        labels[k] = int(cls[0][inst[0] == largest][0]) if counts.max() > 0 else 0
    return images, classes, labels


# --------------------------------------------------------------------------------------------------
# Writers


def _temporary_sibling(path: Path) -> Path:
    # same folder (so os.replace is atomic) and same suffix (VideoWriter picks the container by it)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float = 25.0,
    codec: str = "FFV1",
    quality: int | None = None,
) -> None:
    """Write RGB uint8 frames (T, H, W, 3) with OpenCV's VideoWriter, atomically.

    ``codec`` is a four-character code; the container follows the file's suffix. FFV1 in .avi
    is lossless with this OpenCV build. ``quality`` (0..100) applies to MJPG only, via OpenCV's
    built-in MJPEG writer.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got {frames.shape}")
    if not (isinstance(codec, str) and len(codec) == 4):
        raise ValueError(f"codec must be a four-character code, got {codec!r}")
    if not (math.isfinite(float(fps)) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps!r}")
    api, writer_params = cv2.CAP_ANY, []
    if quality is not None:
        if codec.upper() != "MJPG":
            raise ValueError(f"quality applies to the MJPG codec only, not {codec!r}")
        if not 0 <= quality <= 100:
            raise ValueError(f"quality must lie within [0, 100], got {quality!r}")
        # FFmpeg's backend rejects the quality property; OpenCV's own MJPEG writer honours it
        api, writer_params = cv2.CAP_OPENCV_MJPEG, [cv2.VIDEOWRITER_PROP_QUALITY, int(quality)]
    height, width = frames.shape[1:3]
    tmp = _temporary_sibling(path)
    writer = cv2.VideoWriter(
        str(tmp), api, cv2.VideoWriter_fourcc(*codec), float(fps), (width, height), writer_params
    )
    try:
        if not writer.isOpened():
            raise ValueError(f"OpenCV cannot write codec {codec!r} to {path.suffix!r} files")
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(tmp, path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)


def write_ground_truth(
    path: str | Path, gt: dict[str, np.ndarray], compress_level: int = 1
) -> None:
    """Write the ground-truth arrays as one .npz file (``np.load`` reads it), atomically.

    ``compress_level`` is zlib's 0..9 (0 stores). Level 1 is ~3× faster than numpy's
    ``savez_compressed`` (level 6) and no bigger here: float32 flow mantissas barely compress.
    """
    if isinstance(compress_level, bool) or compress_level not in range(10):
        raise ValueError(f"compress_level must be an integer in [0, 9], got {compress_level!r}")
    path = Path(path)
    tmp = _temporary_sibling(path)
    method = zipfile.ZIP_DEFLATED if compress_level > 0 else zipfile.ZIP_STORED
    try:
        with zipfile.ZipFile(tmp, "w", compression=method, compresslevel=compress_level) as archive:
            for name, array in gt.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_synthetic_video(
    out_video: str | Path,
    out_gt: str | Path,
    *,
    seed: int,
    fps: float = 25.0,
    codec: str = "FFV1",
    quality: int | None = None,
    compress_level: int = 1,
    **render_params: Any,
) -> dict[str, Any]:
    """Render a clip with ``render_clip(seed=seed, **render_params)`` and write video + GT.

    Returns a JSON-able summary: paths, seed, frame count and size, shots, cuts, objects per shot.
    """
    frames, gt = render_clip(seed=seed, **render_params)
    write_video(out_video, frames, fps=fps, codec=codec, quality=quality)
    write_ground_truth(out_gt, gt, compress_level=compress_level)
    # objects seen at some point in each shot (one may be hidden behind another throughout)
    objects = [int(np.count_nonzero(np.unique(gt["instances"][a:b]))) for a, b in gt["shots"]]
    return {
        "video": str(out_video),
        "gt": str(out_gt),
        "seed": int(seed),
        "frames": int(frames.shape[0]),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "fps": float(fps),
        "codec": codec,
        "shots": gt["shots"].tolist(),
        "cuts": gt["cuts"].tolist(),
        "objects": objects,
    }
