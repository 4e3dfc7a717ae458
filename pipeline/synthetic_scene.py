"""The synthetic scene's parts: object classes and their shapes, photo textures, layers in motion.

A shot of ``pipeline.synthetic`` is a stack of layers: a textured background that pans and zooms
slowly (the camera) and a few textured objects of distinct shapes (the classes, :data:`CLASS_NAMES`)
that translate, rotate and scale faster. Textures are cut from the real photographs bundled with
scikit-image (:data:`TEXTURE_PHOTOS`, no download). Each layer carries one affine map per frame
from its texture to the frame (``_Layer.affines``); the renderer warps with those maps and derives
the exact ground-truth flow from them (the layered construction of Sintel/FlyingChairs). The
moving objects are what the papers' motion segmenters are meant to find (Pathak et al. 2017
Sec. 3, uNLC; Mahendran et al. 2018 S3-CNN). Pure and deterministic from the caller's generator.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.synthetic_params import _Motion

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
