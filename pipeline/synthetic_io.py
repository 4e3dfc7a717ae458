"""Writers of the synthetic set: the video file and its ground-truth ``.npz``, both atomic.

``write_synthetic_video`` renders a clip with ``pipeline.synthetic.render_clip`` and writes it
(temporary name in the same folder, then ``os.replace``); the ground-truth layout is in
docs/CONTRACTS.md, "Ground truth of the synthetic set". The synthesize stage
(``python -m pipeline synthesize``) calls it.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.synthetic import render_clip


def _temporary_sibling(path: Path) -> Path:
    # same folder (so os.replace is atomic) and same suffix (VideoWriter picks the container by it)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float = 25.0,
    codec: str = "FFV1",
    quality: int | None = None,
) -> None:
    """Write RGB uint8 frames (T, H, W, 3) with OpenCV's VideoWriter, atomically.

    ``codec`` is a four-character code; the container follows the file's suffix. FFV1 in .avi
    is lossless with this OpenCV build. ``quality`` (0..100) applies to MJPG only, via OpenCV's
    built-in MJPEG writer.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got {frames.shape}")
    if not (isinstance(codec, str) and len(codec) == 4):
        raise ValueError(f"codec must be a four-character code, got {codec!r}")
    if not (math.isfinite(float(fps)) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps!r}")
    api, writer_params = cv2.CAP_ANY, []
    if quality is not None:
        if codec.upper() != "MJPG":
            raise ValueError(f"quality applies to the MJPG codec only, not {codec!r}")
        if not 0 <= quality <= 100:
            raise ValueError(f"quality must lie within [0, 100], got {quality!r}")
        # FFmpeg's backend rejects the quality property; OpenCV's own MJPEG writer honours it
        api, writer_params = cv2.CAP_OPENCV_MJPEG, [cv2.VIDEOWRITER_PROP_QUALITY, int(quality)]
    height, width = frames.shape[1:3]
    tmp = _temporary_sibling(path)
    writer = cv2.VideoWriter(
        str(tmp), api, cv2.VideoWriter_fourcc(*codec), float(fps), (width, height), writer_params
    )
    try:
        if not writer.isOpened():
            raise ValueError(f"OpenCV cannot write codec {codec!r} to {path.suffix!r} files")
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(tmp, path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)


def write_ground_truth(
    path: str | Path, gt: dict[str, np.ndarray], compress_level: int = 1
) -> None:
    """Write the ground-truth arrays as one .npz file (``np.load`` reads it), atomically.

    ``compress_level`` is zlib's 0..9 (0 stores). Level 1 is ~3× faster than numpy's
    ``savez_compressed`` (level 6) and no bigger here: float32 flow mantissas barely compress.
    """
    if isinstance(compress_level, bool) or compress_level not in range(10):
        raise ValueError(f"compress_level must be an integer in [0, 9], got {compress_level!r}")
    path = Path(path)
    tmp = _temporary_sibling(path)
    method = zipfile.ZIP_DEFLATED if compress_level > 0 else zipfile.ZIP_STORED
    try:
        with zipfile.ZipFile(tmp, "w", compression=method, compresslevel=compress_level) as archive:
            for name, array in gt.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_synthetic_video(
    out_video: str | Path,
    out_gt: str | Path,
    *,
    seed: int,
    fps: float = 25.0,
    codec: str = "FFV1",
    quality: int | None = None,
    compress_level: int = 1,
    **render_params: Any,
) -> dict[str, Any]:
    """Render a clip with ``render_clip(seed=seed, **render_params)`` and write video + GT.

    Returns a JSON-able summary: paths, seed, frame count and size, shots, cuts, objects per shot.
    """
    frames, gt = render_clip(seed=seed, **render_params)
    write_video(out_video, frames, fps=fps, codec=codec, quality=quality)
    write_ground_truth(out_gt, gt, compress_level=compress_level)
    # objects seen at some point in each shot (one may be hidden behind another throughout)
    objects = [int(np.count_nonzero(np.unique(gt["instances"][a:b]))) for a, b in gt["shots"]]
    return {
        "video": str(out_video),
        "gt": str(out_gt),
        "seed": int(seed),
        "frames": int(frames.shape[0]),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "fps": float(fps),
        "codec": codec,
        "shots": gt["shots"].tolist(),
        "cuts": gt["cuts"].tolist(),
        "objects": objects,
    }
