"""Optical-flow backends behind one signature, chosen by name.

`make_flow_fn(method, **params)` returns `compute_flow(img0, img1) -> float32 H x W x 2 (dx, dy)`
on uint8 RGB frames; `make_batch_flow_fn` returns the batched form (a list of pairs in, a list of
flows out): OpenCV methods loop over the pairs, RAFT runs them through the network in batches.
The backends live in `opencv_flow` (DIS, Farneback, DeepFlow, TV-L1, PCAFlow) and `raft`.
`flow_statistics` gives the per-pair summary the flow stage records (mean / max magnitude and the
near-static flag).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from pipeline.flow.opencv_flow import (
    make_deepflow,
    make_dis,
    make_dualtvl1,
    make_farneback,
    make_pcaflow,
)
from pipeline.flow.raft import make_raft

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
BatchFlowFn = Callable[[Sequence[tuple[np.ndarray, np.ndarray]]], list[np.ndarray]]

DEFAULT_METHOD = "dis_fast"

_OPENCV_BUILDERS: dict[str, Callable[..., FlowFn]] = {
    "dis_ultrafast": partial(make_dis, "ultrafast"),
    "dis_fast": partial(make_dis, "fast"),
    "dis_medium": partial(make_dis, "medium"),
    "farneback": make_farneback,
    "deepflow": make_deepflow,
    "dualtvl1": make_dualtvl1,
    "pcaflow": make_pcaflow,
}
_BATCH_BUILDERS: dict[str, Callable[..., BatchFlowFn]] = {
    "raft_small": partial(make_raft, "raft_small"),
    "raft_large": partial(make_raft, "raft_large"),
}
FLOW_METHODS: tuple[str, ...] = tuple(_OPENCV_BUILDERS) + tuple(_BATCH_BUILDERS)


def _build(method: str, params: dict) -> tuple[Callable, bool]:
    """Build the method's function; return it and whether it is already batched."""
    if method in _OPENCV_BUILDERS:
        builder, batched = _OPENCV_BUILDERS[method], False
    elif method in _BATCH_BUILDERS:
        builder, batched = _BATCH_BUILDERS[method], True
    else:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    try:
        inspect.signature(builder).bind(**params)
    except TypeError:
        accepted = [
            name
            for name, p in inspect.signature(builder).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        raise ValueError(
            f"flow method {method!r} does not accept parameters {sorted(params)}; "
            f"it accepts {accepted}"
        ) from None
    return builder(**params), batched


def make_flow_fn(method: str = DEFAULT_METHOD, **params) -> FlowFn:
    """Return `compute_flow(img0, img1) -> float32 H x W x 2 (dx, dy)` for the named method."""
    fn, batched = _build(method, params)
    if not batched:
        return fn

    def compute_flow(img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
        return fn([(img0, img1)])[0]

    return compute_flow


def make_batch_flow_fn(method: str = DEFAULT_METHOD, **params) -> BatchFlowFn:
    """Return `compute_flows(pairs) -> list of flows`; RAFT batches, OpenCV methods loop."""
    fn, batched = _build(method, params)
    if batched:
        return fn

    def compute_flows(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        return [fn(img0, img1) for img0, img1 in pairs]

    return compute_flows


def flow_statistics(
    flow: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    static_threshold: float = 0.5,
    static_quantile: float = 0.99,
) -> dict[str, float | bool]:
    """Mean and max flow magnitude over valid pixels and the near-static flag.

    A pair is near-static when the `static_quantile` quantile of the magnitude is below
    `static_threshold` px: a quantile rather than the mean, so a small moving object on a still
    background (exactly the signal motion masks need) does not count as static. With no valid
    pixel the pair is static with zero magnitudes.
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be H x W x 2, got shape {flow.shape}")
    if not 0.0 <= static_quantile <= 1.0:
        raise ValueError(f"static_quantile must be in [0, 1], got {static_quantile}")
    magnitude = np.hypot(flow[..., 0], flow[..., 1]).astype(np.float64)
    keep = np.isfinite(magnitude)
    if valid is not None:
        if np.shape(valid) != magnitude.shape:
            raise ValueError(f"valid mask shape {np.shape(valid)} does not match {magnitude.shape}")
        keep &= np.asarray(valid, dtype=bool)
    values = magnitude[keep]
    if values.size == 0:
        return {"mean_mag": 0.0, "max_mag": 0.0, "static": True}
    return {
        "mean_mag": float(values.mean()),
        "max_mag": float(values.max()),
        "static": bool(np.quantile(values, static_quantile) < static_threshold),
    }


__all__ = [
    "DEFAULT_METHOD",
    "FLOW_METHODS",
    "flow_statistics",
    "make_batch_flow_fn",
    "make_flow_fn",
]
