"""Validation of the synthetic generator's parameters (``pipeline.synthetic``).

Every range and number the renderers take is checked here, with a one-line ``ValueError`` naming
the parameter, before any pixel is drawn; :class:`_Motion` carries the validated shape, motion and
appearance ranges shared by clips and labelled stills (and by ``pipeline.synthetic_movers``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SIZE = 32  # frames smaller than this leave no room for an object and its motion


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
