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
both tests miss). `chain_flows` composes gap-1 flows t -> t+1 -> ... ->
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


def photometric_error(
    img0: np.ndarray, img1: np.ndarray, flow: np.ndarray, *, window: int = 3
) -> np.ndarray:
    """Mean |I1(x + f(x)) - I0(x)| over RGB, box-filtered over ``window`` px; float32 grey levels."""
    _check_frames(img0, img1, flow, window)
    return _photometric(img0, img1, _maps(flow), window)


def flow_validity(
    img0: np.ndarray,
    img1: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray,
    *,
    fb_alpha: float = 0.01,
    fb_beta: float = 0.5,
    photo_threshold: float = 8.0,
    photo_window: int = 3,
    margin: int = 1,
) -> Validity:
    """Both checks on one pair: valid = forward-backward consistent and photometric error below,
    then the invalid region grown by ``margin`` px (a (2 margin + 1)^2 square): a failure's wrong
    vectors bleed into a fringe of neighbours that pass both tests (a DIS patch straddles it)."""
    _check_flows(forward, backward)
    _check_frames(img0, img1, forward, photo_window)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    maps = _maps(forward)
    consistent = _consistent(forward, backward, maps, fb_alpha, fb_beta)
    photometric = _photometric(img0, img1, maps, photo_window)
    valid = consistent & (photometric < photo_threshold)
    if margin:
        kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
        valid = cv2.erode(valid.view(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0
    return Validity(valid, consistent, photometric)


def check_params(validity_cfg: dict) -> dict | None:
    """`flow_validity`'s keyword arguments from the config's flow.validity section (None: off)."""
    if not validity_cfg.get("enabled", True):
        return None
    keys = ("fb_alpha", "fb_beta", "photo_threshold", "photo_window", "margin")
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
    "lands_inside",
    "photometric_error",
    "warp_to_source",
]
