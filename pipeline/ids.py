"""Stable, filesystem- and wildcard-safe identifiers for videos and samples.

A video id is the sanitised path of the video relative to its set's root plus a short hash of
that path, so two files whose names sanitise alike (``a b.mp4`` and ``a_b.mp4``) still differ,
and the id of a file never depends on which other files are in the set.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
VIDEO_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
SET_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_MAX_STEM = 60


def video_id(relpath: str) -> str:
    """Id of the video at ``relpath`` (POSIX-style path relative to its set's root)."""
    if not relpath:
        raise ValueError("video_id needs a non-empty relative path")
    digest = hashlib.sha1(relpath.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    stem = _UNSAFE.sub("_", relpath).strip("._-")[:_MAX_STEM].rstrip("._-")
    return f"{stem}-{digest}" if stem else f"v-{digest}"


def frame_key(shot: int, frame: int) -> str:
    """File-name key of a frame: shot index and frame index in the original video."""
    return f"s{shot:03d}_f{frame:06d}"


def sample_id(video_set: str, vid: str, shot: int, frame: int) -> str:
    """Globally unique id of a training sample."""
    return f"{video_set}/{vid}/{shot}/{frame}"
