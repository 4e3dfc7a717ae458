"""Which frames of a video become training samples: seeded frame/pair sampling policies.

A pure function from a video's shots to a sorted list of :class:`Pair` (frame ``t`` of shot
``shot`` and the flow target ``t + gap``, both inside the shot). Three published policies:

``cpfs``
    Mahendran et al. 2018 (CPFS, §4.2 "Dataset"): "8 random frames from each video", flow
    between ``t`` and ``t + 5``. Frames are drawn uniformly from all positions of the video whose
    ``t + gap`` stays in the same shot.
``pathak``
    Pathak et al. 2017 (§5.1): "sampled 5-10 frames per shot"; the uNLC shot rules (REFERENCE.md
    "uNLC": shots under 10 frames skipped, longer shots strided to ≈110 frames) decide where the
    frames can fall: a shot longer than ``max_shot_frames`` is strided, then 5–10 of the strided
    frames are drawn. The flow pair is ``t → t + gap`` (gap 1: uNLC's saliency uses i±1..3).
``cmp``
    Zhan et al. 2019 (§4, "YFCC100m-Videos"): the frames are those sampled by Pathak et al. [29];
    consecutive sampled frames whose interval is below 10 form a pair (frames 1, 4, 10, 21, 28 give
    {1,4}, {4,10}, {21,28}). So frames are drawn per shot as in ``pathak`` and each pair's gap is
    the distance to the next drawn frame of the same shot, kept when ``gap < max_gap``.

The random generator is derived from ``(seed, video_key)`` with SHA-256 (not Python's salted
``hash()``), and for the per-shot policies further from the shot index, so a video's samples do
not depend on which other videos (or, for pathak/cmp, which other shots) exist.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, order=True)
class Pair:
    """Frame ``t`` (index in the original video) of shot ``shot`` and its flow target
    ``t + gap``."""

    shot: int
    t: int
    gap: int


POLICY_DEFAULTS: dict[str, dict[str, int]] = {
    "cpfs": {"frames_per_video": 8, "gap": 5},
    "pathak": {
        "min_frames": 5,
        "max_frames": 10,
        "max_shot_frames": 110,
        "min_shot_len": 10,
        "gap": 1,
    },
    "cmp": {
        "min_frames": 5,
        "max_frames": 10,
        "max_shot_frames": 110,
        "min_shot_len": 10,
        "max_gap": 10,
    },
}


def rng_for(seed: int, video_key: str, *extra: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, video_key, *extra)``, stable across runs,
    processes and Python versions."""
    digest = hashlib.sha256(f"{int(seed)}\x00{video_key}".encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]
    return np.random.default_rng(np.random.SeedSequence([*words, *(int(e) for e in extra)]))


def _normalise_shots(shots: Sequence[Any]) -> list[tuple[int, int, int]]:
    """(index, start, end) per shot from ``(start, end)`` tuples or dicts with start/end and an
    optional ``index`` (the shot's index in the shots file, kept in :class:`Pair`)."""
    normalised = []
    for position, shot in enumerate(shots):
        if isinstance(shot, Mapping):
            if "start" not in shot or "end" not in shot:
                raise ValueError(f"shot {position} has no start/end")
            index, start, end = shot.get("index", position), shot["start"], shot["end"]
        elif isinstance(shot, Sequence) and len(shot) == 2:
            index, (start, end) = position, shot
        else:
            raise ValueError(f"shot {position} is neither (start, end) nor a dict: {shot!r}")
        values = (index, start, end)
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
            raise ValueError(f"shot {position} has non-integer index/start/end: {values}")
        index, start, end = (int(v) for v in values)
        if start < 0 or end <= start:
            raise ValueError(f"shot {position} is not a range [start, end): {start}, {end}")
        normalised.append((index, start, end))
    ordered = sorted(normalised, key=lambda s: s[1])
    for (_, _, end), (_, start, _) in zip(ordered, ordered[1:], strict=False):
        if start < end:
            raise ValueError(f"shots overlap: one ends at {end}, the next starts at {start}")
    if len({index for index, _, _ in normalised}) != len(normalised):
        raise ValueError("shot indices are not unique")
    return ordered


def _checked_params(policy: str, params: Mapping[str, Any]) -> dict[str, int]:
    unknown = sorted(set(params) - set(POLICY_DEFAULTS[policy]))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for sampling policy {policy!r}; "
            f"accepted: {sorted(POLICY_DEFAULTS[policy])}"
        )
    merged = {**POLICY_DEFAULTS[policy], **params}
    for name, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    merged = {name: int(value) for name, value in merged.items()}
    if "min_frames" in merged and merged["min_frames"] > merged["max_frames"]:
        raise ValueError(
            f"min_frames ({merged['min_frames']}) must not exceed max_frames "
            f"({merged['max_frames']})"
        )
    if policy == "cmp" and merged["max_gap"] < 2:
        raise ValueError("max_gap must be >= 2 (pairs need a gap of at least 1 below it)")
    return merged


def _cpfs(shots, rng, *, frames_per_video: int, gap: int) -> list[Pair]:
    # every t whose target t + gap stays in its shot is a candidate, uniformly over the video
    candidates = [(index, t) for index, start, end in shots for t in range(start, end - gap)]
    if not candidates:
        return []
    chosen = rng.choice(len(candidates), size=min(frames_per_video, len(candidates)), replace=False)
    return [Pair(candidates[i][0], candidates[i][1], gap) for i in chosen]


def _pathak_frames(
    start: int, end: int, rng, *, min_frames: int, max_frames: int, max_shot_frames: int
) -> np.ndarray:
    """5–10 sorted frames of a shot, drawn from the shot strided to at most
    ``max_shot_frames`` positions (uNLC processes long shots strided to ≈110 frames)."""
    stride = math.ceil((end - start) / max_shot_frames)
    positions = np.arange(start, end, stride)
    count = min(int(rng.integers(min_frames, max_frames + 1)), len(positions))
    return np.sort(rng.choice(positions, size=count, replace=False))


def _pathak(
    shots, seed, video_key, *, min_frames, max_frames, max_shot_frames, min_shot_len, gap
) -> list[Pair]:
    pairs = []
    for index, start, end in shots:
        # the flow target t + gap must stay in the shot, so t ranges over [start, end - gap)
        if end - start < max(min_shot_len, gap + 1):
            continue
        rng = rng_for(seed, video_key, index)
        frames = _pathak_frames(
            start,
            end - gap,
            rng,
            min_frames=min_frames,
            max_frames=max_frames,
            max_shot_frames=max_shot_frames,
        )
        pairs += [Pair(index, int(t), gap) for t in frames]
    return pairs


def _cmp(
    shots, seed, video_key, *, min_frames, max_frames, max_shot_frames, min_shot_len, max_gap
) -> list[Pair]:
    pairs = []
    for index, start, end in shots:
        if end - start < min_shot_len:
            continue
        rng = rng_for(seed, video_key, index)
        frames = _pathak_frames(
            start,
            end,
            rng,
            min_frames=min_frames,
            max_frames=max_frames,
            max_shot_frames=max_shot_frames,
        )
        pairs += [
            Pair(index, int(a), int(b - a))
            for a, b in zip(frames[:-1], frames[1:], strict=True)
            if b - a < max_gap
        ]
    return pairs


POLICIES = ("cpfs", "cmp", "pathak")


def sample_pairs(
    shots: Sequence[tuple[int, int]] | Sequence[Mapping[str, Any]],
    *,
    policy: str,
    seed: int,
    video_key: str,
    **policy_params: int,
) -> list[Pair]:
    """Training pairs of one video under a named policy (see the module docstring).

    ``shots`` are ``[start, end)`` frame ranges, as tuples or dicts (``index`` kept if present).
    Parameters per policy and their defaults are in :data:`POLICY_DEFAULTS`. The result is
    sorted, deterministic in ``(seed, video_key, shots, params)``, and every pair has ``t`` and
    ``t + gap`` inside its shot. Unknown policies or parameters, and bad shots, raise ValueError.
    """
    if policy not in POLICY_DEFAULTS:
        raise ValueError(f"unknown sampling policy {policy!r}; choose one of {sorted(POLICIES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(video_key, str) or not video_key:
        raise ValueError("video_key must be a non-empty string")
    params = _checked_params(policy, policy_params)
    normalised = _normalise_shots(shots)
    if policy == "cpfs":
        pairs = _cpfs(normalised, rng_for(seed, video_key), **params)
    elif policy == "pathak":
        pairs = _pathak(normalised, seed, video_key, **params)
    else:
        pairs = _cmp(normalised, seed, video_key, **params)
    return sorted(pairs)
