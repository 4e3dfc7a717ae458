"""Per-pixel validity of a forward flow: forward-backward consistency and photometric error.

A stored flow vector is only worth learning from when two independent checks agree with it:

- **Forward-backward consistency** (Sundaram, Brox & Keutzer, ECCV 2010, sec. 4.1; the same test
  with the same constants in UnFlow, Meister et al. AAAI 2018, eq. 3): with the backward flow
  ``b`` warped to frame t, ``b_w(x) = b(x + f(x))``, a pixel is consistent when
  ``|f + b_w|^2 < alpha (|f|^2 + |b_w|^2) + beta``; alpha = 0.01, beta = 0.5 px^2 in both papers.
  It catches occlusions and pixels where the two directions disagree; a pixel whose target leaves
  the frame has nothing to compare with and fails it too.
- **Photometric error**: frame t+g warped back by the flow, ``I1(x + f(x))``, against ``I0(x)``;
  the mean absolute difference over R, G, B in grey levels, box-filtered over ``photo_window`` px
  (a single pixel is dominated by sampling noise on texture). It catches what the first check
  cannot: when a backend loses a fast object, both directions give it the background's motion
  (consistent with each other) but the warped frame shows background where the object was.

A pixel failing either check is invalid, and so is a fringe of ``margin`` px around the pixels
that fail (measured on the mover benchmark: at 416 px the fringe holds a third of the bad pixels
both tests miss).

Issue 27: the absolute test fires on correct flow over fine texture (bilinear resampling alone
exceeds 8 grey levels there) and under an exposure change. ``photo_test="relative"`` divides the
box-filtered error by the box-filtered image gradient (plus ``photo_floor`` grey levels per px):
a flow off by d px changes the image by about |grad I| d, so the ratio reads as a flow error in
px, independent of texture and resolution. Frame t+g is first matched to frame t's exposure by a
per-channel gain fitted on the forward-backward consistent pixels. ``margin_min_area`` grows only
failures of at least that many pixels (isolated speckles stay invalid but are not grown). `chain_flows` composes gap-1 flows t -> t+1 -> ... ->
t+g, carrying validity: a pixel stays valid only while every link it lands on is valid.
All functions are pure numpy / OpenCV on arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Validity:
    """Per-pixel validity of one forward flow and its pair-level summary."""

    valid: np.ndarray  # (H, W) bool
    consistent: np.ndarray  # (H, W) bool: passed forward-backward (and lands inside the frame)
    photometric: np.ndarray  # (H, W) float32: smoothed warped-frame error, grey levels

    @property
    def invalid_fraction(self) -> float:
        return 1.0 - float(self.valid.mean())

    @property
    def photometric_mean(self) -> float:
        return float(self.photometric.mean())


@functools.lru_cache(maxsize=8)
def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(
        np.arange(shape[1], dtype=np.float32), np.arange(shape[0], dtype=np.float32)
    )
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def _maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of frame t lands: x + u, y + v (float32 maps for cv2.remap)."""
    xs, ys = _grid(flow.shape[:2])
    return xs + flow[..., 0], ys + flow[..., 1]


def _sample(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _inside(maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    h, w = maps[0].shape
    tx, ty = maps
    return (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)


def warp_to_source(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` (frame t+g, or a field on it) at ``x + flow(x)``: bilinear, border replicated."""
    return _sample(image, _maps(flow))


def lands_inside(flow: np.ndarray) -> np.ndarray:
    """True where ``x + flow(x)`` falls inside the frame."""
    return _inside(_maps(flow))


def _check_flows(forward: np.ndarray, backward: np.ndarray) -> None:
    if forward.shape != backward.shape or forward.ndim != 3 or forward.shape[2] != 2:
        raise ValueError(f"flows must both be H x W x 2, got {forward.shape} and {backward.shape}")


def _consistent(forward, backward, maps, alpha: float, beta: float) -> np.ndarray:
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got {alpha}, {beta}")
    fu, fv = cv2.split(np.ascontiguousarray(forward, np.float32))
    bu, bv = cv2.split(_sample(np.ascontiguousarray(backward, np.float32), maps))
    su, sv = fu + bu, fv + bv  # contiguous planes: several times faster than H x W x 2 reductions
    residual = su * su + sv * sv
    bound = alpha * (fu * fu + fv * fv + bu * bu + bv * bv) + beta
    return (residual < bound) & _inside(maps)


def forward_backward_consistent(
    forward: np.ndarray, backward: np.ndarray, *, alpha: float = 0.01, beta: float = 0.5
) -> np.ndarray:
    """Sundaram et al. 2010's test: |f + b_w|^2 < alpha (|f|^2 + |b_w|^2) + beta, inside the frame."""
    _check_flows(forward, backward)
    return _consistent(forward, backward, _maps(forward), alpha, beta)


def _check_frames(img0: np.ndarray, img1: np.ndarray, flow: np.ndarray, window: int) -> None:
    if img0.shape != img1.shape or img0.shape[:2] != flow.shape[:2]:
        raise ValueError(f"frames {img0.shape}, {img1.shape} and flow {flow.shape} differ in size")
    if window < 1:
        raise ValueError(f"photometric window must be >= 1, got {window}")


_CHANNEL_MEAN = np.full((1, 3), 1.0 / 3.0, np.float32)


def _photometric(img0, img1, maps, window: int) -> np.ndarray:
    warped = _sample(img1, maps)  # uint8 in, uint8 out: rounding adds at most 1/2 grey level
    diff = cv2.absdiff(warped, img0).astype(np.float32)
    error = cv2.transform(diff, _CHANNEL_MEAN) if diff.ndim == 3 else diff
    if window > 1:
        error = cv2.blur(error, (window, window), borderType=cv2.BORDER_REFLECT)
    return error


def _exposure_matched(img0: np.ndarray, warped: np.ndarray, consistent) -> np.ndarray:
    """``warped`` scaled per channel by the least-squares gain onto ``img0`` over the
    ``consistent`` pixels (float32 in, float32 out)."""
    mask = consistent.view(np.uint8) if consistent.any() else None
    cross = cv2.mean(cv2.multiply(warped, img0), mask=mask)
    power = cv2.mean(cv2.multiply(warped, warped), mask=mask)
    channels = img0.shape[2] if img0.ndim == 3 else 1
    gain = [min(max(c / max(p, 1e-6), 0.5), 2.0) for c, p in zip(cross, power, strict=True)]
    if channels == 1:
        return warped * np.float32(gain[0])
    return cv2.multiply(
        warped,
        np.array(gain[:channels], np.float64).reshape(1, 1, channels) + np.zeros(warped.shape),
    )


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float32)
    return cv2.transform(image, _CHANNEL_MEAN) if image.ndim == 3 else image


def _gradient(grey: np.ndarray) -> np.ndarray:
    """|grad I| in grey levels per px (Sobel / 8: central differences, smoothed across)."""
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
    return cv2.magnitude(gx, gy)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _half_range(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the min and max of the image linearly interpolated half a pixel around it
    (the pixel and the mid-points to its four neighbours; Birchfield & Tomasi 1998): the
    mid-point to neighbour n is (I + n) / 2, so the min is (I + min over the cross) / 2."""
    low = cv2.erode(image, _CROSS, borderType=cv2.BORDER_REPLICATE)
    high = cv2.dilate(image, _CROSS, borderType=cv2.BORDER_REPLICATE)
    return cv2.addWeighted(image, 0.5, low, 0.5, 0.0), cv2.addWeighted(image, 0.5, high, 0.5, 0.0)


def _sampling_insensitive(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Birchfield & Tomasi's dissimilarity (IEEE PAMI 1998): how far each of a, b lies outside
    the other's half-pixel interpolation range, the smaller of the two; zero wherever a sub-pixel
    shift of at most half a pixel explains the difference (bilinear resampling of fine texture)."""
    a_low, a_high = _half_range(a)
    b_low, b_high = _half_range(b)
    # max(a - b_high, b_low - a, 0): cv2.subtract saturates nothing on float, so clamp by max
    d_ab = cv2.max(cv2.max(cv2.subtract(a, b_high), cv2.subtract(b_low, a)), 0.0)
    d_ba = cv2.max(cv2.max(cv2.subtract(b, a_high), cv2.subtract(a_low, b)), 0.0)
    return cv2.min(d_ab, d_ba)


def _photometric_relative(img0, img1, maps, window: int, floor: float, consistent) -> np.ndarray:
    """Box-filtered sampling-insensitive |I1(x + f) * gain - I0| (mean over RGB) over the
    box-filtered |grad I0| + floor (grey levels per px): px of flow error beyond half a pixel."""
    frame0 = np.asarray(img0, np.float32)
    warped = _exposure_matched(frame0, _sample(img1, maps).astype(np.float32), consistent)
    diff = _sampling_insensitive(warped, frame0)
    error = cv2.transform(diff, _CHANNEL_MEAN) if diff.ndim == 3 else diff
    scale = _gradient(_grey(frame0)) + np.float32(floor)
    if window > 1:
        error = cv2.blur(error, (window, window), borderType=cv2.BORDER_REFLECT)
        scale = cv2.blur(scale, (window, window), borderType=cv2.BORDER_REFLECT)
    return error / scale


def _flow_range(flow: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per pixel: max - min of u plus of v over the kernel's window (px): motion boundaries."""
    total = np.zeros(flow.shape[:2], np.float32)
    for channel in cv2.split(np.ascontiguousarray(flow, np.float32)):
        total += cv2.morphologyEx(
            channel, cv2.MORPH_GRADIENT, kernel, borderType=cv2.BORDER_REPLICATE
        )
    return total


def grow_failures(
    valid: np.ndarray, margin: int, min_area: int, flow: np.ndarray, flow_step: float
) -> np.ndarray:
    """Invalidate a (2 margin + 1)^2 fringe around failures of at least ``min_area`` px, only
    where the flow varies by more than ``flow_step`` px across the fringe's window (0: everywhere)."""
    failed = (~valid).view(np.uint8)
    if min_area > 1:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(failed, connectivity=8)
        big = np.zeros(count, np.uint8)
        big[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
        failed = big[labels]
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    grown = cv2.dilate(failed, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    if flow_step > 0:
        grown &= _flow_range(flow, kernel) > flow_step
    return valid & ~grown


def photometric_error(
    img0: np.ndarray,
    img1: np.ndarray,
    flow: np.ndarray,
    *,
    window: int = 3,
    test: str = "absolute",
    floor: float = 4.0,
    fit_on: np.ndarray | None = None,
) -> np.ndarray:
    """The photometric error of ``flow``, float32: ``test="absolute"``: mean |I1(x + f(x)) - I0(x)|
    over RGB, box-filtered over ``window`` px (grey levels); ``"relative"``: that error after the
    exposure gain (fitted on ``fit_on``, default every pixel) over the box-filtered
    |grad I0| + ``floor`` (px of flow error)."""
    _check_frames(img0, img1, flow, window)
    maps = _maps(flow)
    if test == "absolute":
        return _photometric(img0, img1, maps, window)
    if test != "relative":
        raise ValueError(f"photo_test must be 'absolute' or 'relative', got {test!r}")
    if floor <= 0:
        raise ValueError(f"photo_floor must be > 0, got {floor}")
    keep = np.ones(flow.shape[:2], bool) if fit_on is None else np.asarray(fit_on, bool)
    return _photometric_relative(img0, img1, maps, window, floor, keep)


def flow_validity(
    img0: np.ndarray,
    img1: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray,
    *,
    fb_alpha: float = 0.01,
    fb_beta: float = 0.5,
    photo_test: str = "absolute",
    photo_threshold: float = 8.0,
    photo_window: int = 3,
    photo_floor: float = 4.0,
    margin: int = 1,
    margin_min_area: int = 1,
    margin_flow_step: float = 0.0,
) -> Validity:
    """Both checks on one pair: valid = forward-backward consistent and photometric error below
    ``photo_threshold`` (grey levels for ``photo_test="absolute"``, px of flow error for
    ``"relative"``), then the invalid region grown by ``margin`` px (a (2 margin + 1)^2 square)
    around failures of at least ``margin_min_area`` px, where the flow varies by more than
    ``margin_flow_step`` px within the square (a motion boundary): a failure's wrong vectors
    bleed into a fringe of neighbours that pass both tests (a DIS patch straddles the boundary);
    on smooth flow the neighbours of a failure are as right as the rest."""
    _check_flows(forward, backward)
    _check_frames(img0, img1, forward, photo_window)
    if margin < 0 or margin_min_area < 1:
        raise ValueError(
            f"margin must be >= 0 and margin_min_area >= 1, got {margin}, {margin_min_area}"
        )
    maps = _maps(forward)
    consistent = _consistent(forward, backward, maps, fb_alpha, fb_beta)
    if photo_test == "absolute":
        photometric = _photometric(img0, img1, maps, photo_window)
    else:
        photometric = photometric_error(
            img0, img1, forward, window=photo_window, test=photo_test, floor=photo_floor,
            fit_on=consistent,
        )  # fmt: skip
    valid = consistent & (photometric < photo_threshold)
    if margin:
        valid = grow_failures(valid, margin, margin_min_area, forward, margin_flow_step)
    return Validity(valid, consistent, photometric)


def check_params(validity_cfg: dict) -> dict | None:
    """`flow_validity`'s keyword arguments from the config's flow.validity section (None: off)."""
    if not validity_cfg.get("enabled", True):
        return None
    keys = (
        "fb_alpha",
        "fb_beta",
        "photo_test",
        "photo_threshold",
        "photo_window",
        "photo_floor",
        "margin",
        "margin_min_area",
        "margin_flow_step",
    )
    return {k: validity_cfg[k] for k in keys if k in validity_cfg}


def chain_flows(
    flows: Sequence[np.ndarray], valids: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Compose flows t->t+1->...->t+g into t->t+g; return (flow, valid carried through the chain).

    ``F(x) = f_0(x) + F_rest(x + f_0(x))``, evaluated from the far end back: each link's field is
    sampled bilinearly at where the previous links land. A pixel is valid when every link is valid
    where it lands (validity sampled by nearest neighbour: bilinear would blend across edges) and
    it stays inside the frame.
    """
    if not flows:
        raise ValueError("chain_flows needs at least one flow")
    total = np.ascontiguousarray(flows[-1], np.float32)
    valid = _inside(_maps(total))
    if valids is not None:
        valid &= np.asarray(valids[-1], bool)
    for index in range(len(flows) - 2, -1, -1):
        link = np.ascontiguousarray(flows[index], np.float32)
        if link.shape != total.shape:
            raise ValueError(f"chain flows differ in shape: {link.shape} vs {total.shape}")
        valid_far = _warp_nearest(valid, link)
        total = link + warp_to_source(total, link)
        valid = valid_far & lands_inside(link)
        if valids is not None:
            valid &= np.asarray(valids[index], bool)
    return total, valid


def _warp_nearest(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    mx, my = _maps(flow)
    out = cv2.remap(
        mask.astype(np.uint8),
        mx,
        my,
        cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return out > 0


__all__ = [
    "Validity",
    "chain_flows",
    "check_params",
    "flow_validity",
    "forward_backward_consistent",
    "grow_failures",
    "lands_inside",
    "photometric_error",
    "warp_to_source",
]
