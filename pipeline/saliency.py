"""Per-frame motion saliency for uNLC, with an appearance fallback.

Follows Pathak et al. 2017, section 5.1 ("pixels that move in a mostly static frame or, if the
frame contains significant motion, pixels that move in a direction different from the dominant
one") as implemented in the authors' uNLC code (see REFERENCE.md, "uNLC"):

* Flow is computed at low resolution (``flow_size`` x ``flow_size``, 100 in the reference) from
  frame t to each of t±1 … t±``radius``.
* A pair is *static* when the median flow magnitude is below ``static_median_px``; the deviation is
  then the squared magnitude. Otherwise a magnitude-weighted orientation histogram is built; when
  its top bin holds more than ``dominant_fraction`` of the weight the camera is taken to translate
  and the deviation is the squared (wrapped) angular difference to that bin's centre. Any other
  pair is skipped.
* Deviations are box-filtered, averaged over the usable pairs of a frame and, by the caller,
  upsampled, cleared near the border and divided by the shot's maximum.

When fewer than ``min_usable_fraction`` of the frames have a usable pair, every frame falls back to
the spectral-residual saliency of Hou & Zhang (CVPR 2007). The reference falls back to MR saliency
but subtracts the shot maximum from it, which leaves no positive score and hence empty masks; the
spectral residual is non-negative and peaks on the salient structure, so the fallback yields
non-empty masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.flow.validity import flow_validity

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

PAIR_STATIC = "static"
PAIR_TRANSLATION = "translation"
PAIR_SKIPPED = "skipped"


@dataclass(frozen=True)
class ShotSaliency:
    """Low-resolution saliency of a shot and how it was obtained."""

    maps: np.ndarray  # (T, s, s) float32, raw units (px² or rad²; appearance: arbitrary), >= 0
    source: str  # "motion", "appearance", or "none" (no motion anywhere in the shot)
    frame_paths: tuple[str, ...]  # per frame: static / translation / mixed / skipped / appearance
    static_pairs: np.ndarray  # (T,) int: usable static-camera pairs per frame
    translation_pairs: np.ndarray  # (T,) int: usable dominant-translation pairs per frame
    skipped_pairs: np.ndarray  # (T,) int: pairs with neither a static nor a dominant motion
    peak: float  # maximum of the raw motion maps (before any fallback)


def pair_deviation(
    flow: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    static_median_px: float = 1.0,
    orientation_bins: int = 20,
    dominant_fraction: float = 0.75,
    bin_offset: float = 0.5,
) -> tuple[str, np.ndarray | None]:
    """Classify one flow field and return its per-pixel deviation from the dominant motion.

    Returns ``(kind, deviation)`` with kind one of ``"static"``, ``"translation"`` (deviation in
    px² resp. rad², float32 H×W) or ``"skipped"`` (deviation ``None``).

    ``bin_offset`` rotates the orientation bins by that fraction of a bin. The reference (0) has
    bin edges at ±pi, ±pi/2 and 0 for 20 bins, so a horizontal pan or a vertical tilt splits its
    weight between two bins and rarely reaches ``dominant_fraction``; 0.5 centres bins on the axes.

    ``valid`` (bool H×W; issue 12) leaves invalid pixels out of the median and the histogram and
    gives them zero deviation; a pair without a valid pixel is skipped.
    """
    u = flow[..., 0].astype(np.float32)
    v = flow[..., 1].astype(np.float32)
    magnitude = np.hypot(u, v)
    if valid is not None:
        if not valid.any():
            return PAIR_SKIPPED, None
        magnitude = np.where(valid, magnitude, np.float32(0.0))
    counted = magnitude if valid is None else magnitude[valid]
    if float(np.median(counted)) < static_median_px:
        return PAIR_STATIC, magnitude * magnitude
    # Magnitude-weighted histogram over (-pi, pi]: slow, noisy pixels barely vote for a direction
    # (and invalid ones, at zero weight, not at all).
    angle = np.arctan2(v, u)
    low = -np.pi + bin_offset * 2.0 * np.pi / orientation_bins
    shifted = np.where(angle < low, angle + 2.0 * np.pi, angle)
    hist, edges = np.histogram(
        shifted, bins=orientation_bins, range=(low, low + 2.0 * np.pi), weights=magnitude
    )
    total = float(hist.sum())
    top = int(np.argmax(hist))
    if total <= 0.0 or hist[top] / total <= dominant_fraction:
        return PAIR_SKIPPED, None
    centre = 0.5 * (edges[top] + edges[top + 1])
    # Wrap the difference into [-pi, pi) so that -pi+e and pi-e are close.
    diff = np.mod(angle - centre + np.pi, 2.0 * np.pi) - np.pi
    deviation = (diff * diff).astype(np.float32)
    if valid is not None:
        deviation[~valid] = 0.0
    return PAIR_TRANSLATION, deviation


def _checked_flow(flow_fn: FlowFn, img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
    flow = np.asarray(flow_fn(img0, img1))
    expected = (*img0.shape[:2], 2)
    if flow.shape != expected:
        raise ValueError(f"flow_fn returned shape {flow.shape}, expected {expected}")
    if not np.isfinite(flow).all():
        raise ValueError("flow_fn returned non-finite flow values")
    return flow


def motion_saliency_maps(
    small_frames: np.ndarray,
    flow_fn: FlowFn,
    *,
    radius: int = 3,
    static_median_px: float = 1.0,
    orientation_bins: int = 20,
    dominant_fraction: float = 0.75,
    bin_offset: float = 0.5,
    box_size: int = 5,
    flow_checks: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Motion saliency of every frame of ``small_frames`` (T,s,s,3 uint8 RGB).

    Returns ``(maps, static_pairs, translation_pairs, skipped_pairs)``; a frame without a usable
    pair gets an all-zero map. With ``flow_checks`` (keyword arguments of
    `pipeline.flow.validity.flow_validity`) each flow t -> t±k is checked against its reverse,
    which the reference computes anyway when it reaches frame t±k (so no flow is computed
    twice), and invalid pixels are skipped: out of the pair's statistics, and each pixel's map
    is the mean over the pairs where it (box-filtered) is valid.
    """
    n = small_frames.shape[0]
    maps = np.zeros(small_frames.shape[:3], dtype=np.float32)
    counts = {kind: np.zeros(n, dtype=np.int64) for kind in (PAIR_STATIC, PAIR_TRANSLATION)}
    skipped = np.zeros(n, dtype=np.int64)
    cache: dict[tuple[int, int], np.ndarray] = {}

    def flow_between(a: int, b: int) -> np.ndarray:
        if (a, b) not in cache:
            cache[(a, b)] = _checked_flow(flow_fn, small_frames[a], small_frames[b])
        return cache[(a, b)]

    blur = {"ksize": (box_size, box_size), "borderType": cv2.BORDER_REFLECT}
    for t in range(n):
        for key in [k for k in cache if max(k) < t]:  # never needed again
            del cache[key]
        total = np.zeros(small_frames.shape[1:3], dtype=np.float32)
        weight = np.zeros(small_frames.shape[1:3], dtype=np.float32)
        for offset in range(-radius, radius + 1):
            other = t + offset
            if offset == 0 or other < 0 or other >= n:
                continue
            flow = flow_between(t, other)
            valid = None
            if flow_checks is not None:
                valid = flow_validity(
                    small_frames[t],
                    small_frames[other],
                    flow,
                    flow_between(other, t),
                    **flow_checks,
                ).valid
            kind, deviation = pair_deviation(
                flow,
                valid=valid,
                static_median_px=static_median_px,
                orientation_bins=orientation_bins,
                dominant_fraction=dominant_fraction,
                bin_offset=bin_offset,
            )
            if deviation is None:
                skipped[t] += 1
                continue
            counts[kind][t] += 1
            # Box filter with symmetric padding, as the reference's convolve2d(boundary="symm").
            total += cv2.blur(deviation, **blur)
            weight += 1.0 if valid is None else cv2.blur(valid.astype(np.float32), **blur)
        if counts[PAIR_STATIC][t] + counts[PAIR_TRANSLATION][t]:
            np.divide(total, weight, out=maps[t], where=weight > 1e-6)
    return maps, counts[PAIR_STATIC], counts[PAIR_TRANSLATION], skipped


def spectral_residual_saliency(rgb: np.ndarray, *, sigma: float = 3.0) -> np.ndarray:
    """Spectral-residual appearance saliency (Hou & Zhang 2007) of one RGB uint8 image.

    Non-negative float32 map of the image's size; its maximum is positive for any image.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    spectrum = np.fft.fft2(gray)
    log_amplitude = np.log(np.abs(spectrum) + 1e-8)
    phase = np.angle(spectrum)
    # The residual is what the locally averaged log spectrum does not explain: the "novel" part.
    residual = log_amplitude - cv2.blur(log_amplitude.astype(np.float32), (3, 3))
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    saliency = cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), sigma)
    # A blank image has a flat spectrum: give it a flat (still positive) map.
    if not float(saliency.max()) > 0.0:
        saliency = np.ones_like(saliency)
    return saliency


def shot_saliency(
    small_frames: np.ndarray,
    flow_fn: FlowFn,
    *,
    radius: int = 3,
    static_median_px: float = 1.0,
    orientation_bins: int = 20,
    dominant_fraction: float = 0.75,
    bin_offset: float = 0.5,
    box_size: int = 5,
    min_usable_fraction: float = 0.5,
    min_motion_peak: float = 0.25,
    appearance_sigma: float = 3.0,
    flow_checks: dict | None = None,
) -> ShotSaliency:
    """Saliency of a shot at low resolution: motion where possible, else appearance.

    ``min_motion_peak`` (raw units, px² at flow resolution or rad², after the box filter) guards
    the shot-wide max normalisation: a shot whose strongest deviation is below it has no moving
    object, and dividing flow noise by its own maximum would invent one. Such a shot gets all-zero
    maps (``source="none"``). 0.25 = a coherent 5x5 patch moving 0.5 px at 100x100 (about 3 px
    at 640 wide); flow noise on a still, slightly noisy clip peaks near 0.1 here.
    """
    maps, n_static, n_trans, n_skip = motion_saliency_maps(
        small_frames,
        flow_fn,
        radius=radius,
        static_median_px=static_median_px,
        orientation_bins=orientation_bins,
        dominant_fraction=dominant_fraction,
        bin_offset=bin_offset,
        box_size=box_size,
        flow_checks=flow_checks,
    )
    paths = []
    for s, tr in zip(n_static, n_trans, strict=True):
        if s and tr:
            paths.append("mixed")
        elif s:
            paths.append(PAIR_STATIC)
        elif tr:
            paths.append(PAIR_TRANSLATION)
        else:
            paths.append(PAIR_SKIPPED)
    peak = float(maps.max()) if maps.size else 0.0
    n = small_frames.shape[0]
    usable_frames = int(np.count_nonzero(n_static + n_trans))
    if usable_frames < min_usable_fraction * n:
        maps = np.stack(
            [spectral_residual_saliency(f, sigma=appearance_sigma) for f in small_frames]
        )
        return ShotSaliency(
            maps, "appearance", ("appearance",) * n, n_static, n_trans, n_skip, peak
        )
    if peak < min_motion_peak:
        return ShotSaliency(
            np.zeros_like(maps), "none", tuple(paths), n_static, n_trans, n_skip, peak
        )
    return ShotSaliency(maps, "motion", tuple(paths), n_static, n_trans, n_skip, peak)


def upsample_saliency(
    small_map: np.ndarray, shape: tuple[int, int], *, border_fraction: float = 0.125
) -> np.ndarray:
    """Bilinearly upsample a low-resolution map to ``shape`` (h, w) and zero its border.

    The border band is ``border_fraction`` of the shorter side: flow there is unreliable and the
    paper's pruning rejects objects touching it anyway.
    """
    h, w = shape
    big = cv2.resize(small_map.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    band = int(min(h, w) * border_fraction)
    if band > 0:
        big[:band] = 0.0
        big[-band:] = 0.0
        big[:, :band] = 0.0
        big[:, -band:] = 0.0
    return big
