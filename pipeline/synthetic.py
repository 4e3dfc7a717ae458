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

This module renders (``render_clip``, ``render_labelled_frames``), pure and deterministic from a
seed. Its parts live beside it: ``pipeline.synthetic_params`` validates the parameters,
``pipeline.synthetic_scene`` holds the classes, shapes, photo textures and moving layers, and
``pipeline.synthetic_io`` writes a clip's video and ground truth atomically (temporary name in the
same folder, then ``os.replace``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.synthetic_params import (
    _check_int_range,
    _check_seed,
    _check_size,
    _Motion,
    _motion_params,
)
from pipeline.synthetic_scene import (
    CLASS_NAMES,
    TEXTURE_PHOTOS,
    _background_layer,
    _object_layer,
    _photos,
)

MAX_OBJECTS = 16  # instance ids are uint8; more objects than this would not fit a frame anyway

# Seed-sequence tags so that clips and labelled stills drawn from the same seed never share a stream.
_STREAM_CLIP = 0
_STREAM_STILLS = 1


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
