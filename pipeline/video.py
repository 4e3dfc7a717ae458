"""Decoding videos with OpenCV: probe by actually decoding, and iterate frames as RGB.

Containers lie about frame counts (truncated downloads, variable frame rate, broken indices), so
the probe decodes every frame and counts what it gets instead of trusting CAP_PROP_FRAME_COUNT.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np


class VideoError(ValueError):
    """A file that cannot be used as a video; the message is a one-line reason."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    p = Path(path)
    if not p.exists():
        raise VideoError(f"file does not exist: {p.name}")
    if not p.is_file():
        raise VideoError(f"not a regular file: {p.name}")
    if p.stat().st_size == 0:
        raise VideoError("zero-byte file")
    if not os.access(p, os.R_OK):
        raise VideoError("file is not readable (permission denied)")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoError("OpenCV cannot open the file as a video (unknown or corrupt container)")
    return cap


def iter_frames(
    path: str | os.PathLike, *, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for frames ``start <= index < stop``, frames RGB uint8.

    Decodes sequentially (seeking is unreliable in many containers); frames before ``start``
    are grabbed without being converted.
    """
    cap = _open(path)
    try:
        index = 0
        while stop is None or index < stop:
            if index < start:
                if not cap.grab():
                    return
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok or bgr is None:
                return
            yield index, _to_rgb(bgr)
            index += 1
    finally:
        cap.release()


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Frames at ``indices`` (any order, duplicates allowed), decoded in one sequential pass."""
    wanted = set(int(i) for i in indices)
    if not wanted:
        return {}
    out: dict[int, np.ndarray] = {}
    for index, frame in iter_frames(path, start=min(wanted), stop=max(wanted) + 1):
        if index in wanted:
            out[index] = frame
    missing = wanted - out.keys()
    if missing:
        raise VideoError(f"video ended before frame {min(missing)} could be decoded")
    return out


def probe_video(
    path: str | os.PathLike, *, min_frames: int = 2, max_missing_fraction: float = 0.05
) -> dict:
    """Decode the whole file and describe it; raise VideoError with a one-line reason if unusable.

    The decoded count is the truth, but when it falls short of the count the container announces
    by more than ``max_missing_fraction`` the file is truncated or damaged, and is rejected.
    """
    p = Path(path)
    cap = _open(p)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames = 0
        shape: tuple[int, ...] | None = None
        channels = 0
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if shape is None:
                shape = frame.shape[:2]
                channels = 1 if frame.ndim == 2 else int(frame.shape[2])
            elif frame.shape[:2] != shape:
                raise VideoError(
                    f"frame size changes at frame {frames}: {shape} -> {frame.shape[:2]}"
                )
            frames += 1
    finally:
        cap.release()
    if frames == 0:
        raise VideoError("no frame could be decoded (not a video, or corrupt)")
    if frames < min_frames:
        raise VideoError(f"only {frames} decodable frame(s); at least {min_frames} needed")
    assert shape is not None
    if claimed > 0 and frames < claimed * (1.0 - max_missing_fraction):
        raise VideoError(
            f"truncated or damaged: decoded {frames} of the {claimed} frames the container announces"
        )
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = 0.0
    return {
        "frames": frames,
        "frames_claimed": claimed,
        "fps": fps,
        "height": int(shape[0]),
        "width": int(shape[1]),
        "channels": channels,
        "duration_s": frames / fps if fps > 0 else None,
        "file_bytes": p.stat().st_size,
        "sha256": file_sha256(p),
    }
