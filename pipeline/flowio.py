"""Optical-flow file codecs: KITTI 16-bit PNG, Middlebury .flo, and the CPFS log normalisation.

KITTI PNG (Geiger et al., KITTI flow devkit): a 3-channel uint16 PNG whose channels, in RGB order,
are (u, v, valid) with u = (R - 2^15) / 64 and v = (G - 2^15) / 64. The code range 0..65535 covers
flow in [-512, 511.984375] px with a rounding error of at most 1/128 px — about 25x finer than the
8-bit JPEG flow released with CMP (REFERENCE.md, "Flow formats"). CPFS stored its flow the same way
(Mahendran et al. 2018, sec. 4.2 footnote 1).

Middlebury .flo (Baker et al. 2011): the float32 tag 202021.25 (bytes b"PIEH"), int32 width,
int32 height, then float32 (u, v) interleaved row by row, all little-endian.

`log_normalise_flow` is CPFS eq. (6): each component becomes
sign(f) * min(1, log(|f| + 1) / log(M + 1)), so occasional large flows do not dominate learning.

All functions here are numpy / OpenCV only.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from pipeline.atomic import write_bytes

PNG_OFFSET = 32768  # 2^15: the code of zero flow
PNG_SCALE = 64.0  # codes per pixel of flow
PNG_FLOW_MIN = (0 - PNG_OFFSET) / PNG_SCALE  # -512.0
PNG_FLOW_MAX = (65535 - PNG_OFFSET) / PNG_SCALE  # 511.984375
PNG_MAX_ERROR = 0.5 / PNG_SCALE  # 1/128 px: half a code step

FLO_TAG = b"PIEH"  # the float32 202021.25, little-endian
_FLO_HEADER = np.dtype([("tag", "S4"), ("width", "<i4"), ("height", "<i4")])


def _check_flow(flow: np.ndarray) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be H x W x 2, got shape {flow.shape}")
    if flow.shape[0] == 0 or flow.shape[1] == 0:
        raise ValueError(f"flow must not be empty, got shape {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating):
        raise ValueError(f"flow must be a floating-point array, got {flow.dtype}")
    return flow


# --------------------------------------------------------------------------- KITTI 16-bit PNG


def encode_flow_png(
    flow: np.ndarray, valid: np.ndarray | None = None, *, compression: int = 3
) -> tuple[bytes, int]:
    """Encode flow (H x W x 2, dx dy in px) as a KITTI 16-bit PNG; return (png bytes, n_saturated).

    The valid channel is 1 where `valid` (all true when None) holds, the flow is finite and both
    components lie in [PNG_FLOW_MIN, PNG_FLOW_MAX]. Out-of-range components saturate to the
    nearest code, their pixel is marked invalid and counted in n_saturated. Non-finite pixels are
    stored as zero flow and marked invalid (not counted as saturated). `compression` is the zlib
    level 0-9 (on DIS flow of a real clip, 3 gives ~10% of float32 size against ~8% for 9, at a
    small fraction of the time).
    """
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    if valid is None:
        valid = np.ones((h, w), dtype=bool)
    else:
        valid = np.asarray(valid)
        if valid.shape != (h, w):
            raise ValueError(f"valid mask shape {valid.shape} does not match flow {(h, w)}")
        valid = valid.astype(bool)
    if not 0 <= compression <= 9:
        raise ValueError(f"PNG compression must be in 0..9, got {compression}")

    if flow.dtype.itemsize < 4:  # float16 cannot hold the codes exactly
        flow = flow.astype(np.float32)
    u, v = flow[..., 0], flow[..., 1]
    finite = np.isfinite(u) & np.isfinite(v)
    # NaN compares false, so non-finite pixels are never in range; the bounds are exact floats.
    in_range = (u >= PNG_FLOW_MIN) & (u <= PNG_FLOW_MAX) & (v >= PNG_FLOW_MIN) & (v <= PNG_FLOW_MAX)
    saturated = finite & ~in_range
    # Multiplying by 64 and rounding are exact in any float type, and so is adding the offset to
    # an integer-valued code, so the error stays within half a code step (1/128 px).
    with np.errstate(over="ignore", invalid="ignore"):
        steps = np.clip(np.rint(flow * PNG_SCALE), -PNG_OFFSET, 65535 - PNG_OFFSET)
    steps[~finite] = 0.0
    codes = (steps + PNG_OFFSET).astype(np.uint16)

    image = np.empty((h, w, 3), dtype=np.uint16)
    # OpenCV writes BGR: channel order (valid, v, u) on its side is (u, v, valid) in the PNG's RGB.
    image[..., 2] = codes[..., 0]
    image[..., 1] = codes[..., 1]
    image[..., 0] = valid & finite & in_range
    ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:  # pragma: no cover - OpenCV only fails here on a broken build
        raise ValueError("OpenCV could not encode the flow PNG")
    return buffer.tobytes(), int(saturated.sum())


def decode_flow_png(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode KITTI 16-bit PNG bytes into (flow float32 H x W x 2, valid bool H x W)."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("not a readable PNG image")
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"flow PNG must be 3-channel 16-bit, got {image.dtype} with shape {image.shape}"
        )
    flow = np.empty(image.shape[:2] + (2,), dtype=np.float32)
    flow[..., 0] = (image[..., 2].astype(np.float32) - PNG_OFFSET) / PNG_SCALE
    flow[..., 1] = (image[..., 1].astype(np.float32) - PNG_OFFSET) / PNG_SCALE
    return flow, image[..., 0] > 0


def write_flow_png(
    path: str | os.PathLike,
    flow: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    compression: int = 3,
) -> int:
    """Write flow as a KITTI 16-bit PNG atomically; return the number of saturated pixels."""
    data, n_saturated = encode_flow_png(flow, valid, compression=compression)
    write_bytes(path, data)
    return n_saturated


def read_flow_png(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI 16-bit PNG into (flow float32 H x W x 2, valid bool H x W)."""
    data = Path(path).read_bytes()
    try:
        return decode_flow_png(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


# --------------------------------------------------------------------------- Middlebury .flo


def encode_flo(flow: np.ndarray) -> bytes:
    """Encode flow (H x W x 2) as Middlebury .flo bytes (float32, little-endian)."""
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    header = np.array([(FLO_TAG, w, h)], dtype=_FLO_HEADER)
    return header.tobytes() + np.ascontiguousarray(flow, dtype="<f4").tobytes()


def decode_flo(data: bytes) -> np.ndarray:
    """Decode Middlebury .flo bytes into float32 H x W x 2; ValueError on a malformed file."""
    if len(data) < _FLO_HEADER.itemsize:
        raise ValueError(f"not a .flo file: {len(data)} bytes is shorter than the 12-byte header")
    header = np.frombuffer(data, dtype=_FLO_HEADER, count=1)[0]
    if header["tag"] != FLO_TAG:
        raise ValueError(f"not a .flo file: tag {bytes(header['tag'])!r}, expected {FLO_TAG!r}")
    w, h = int(header["width"]), int(header["height"])
    if w <= 0 or h <= 0:
        raise ValueError(f"bad .flo size {w} x {h}")
    expected = _FLO_HEADER.itemsize + 8 * w * h
    if len(data) != expected:
        raise ValueError(f".flo of {w} x {h} needs {expected} bytes, file has {len(data)}")
    flow = np.frombuffer(data, dtype="<f4", offset=_FLO_HEADER.itemsize).reshape(h, w, 2)
    return flow.astype(np.float32)  # native byte order, writable copy


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write a Middlebury .flo file atomically."""
    write_bytes(path, encode_flo(flow))


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a Middlebury .flo file into float32 H x W x 2."""
    try:
        return decode_flo(Path(path).read_bytes())
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


# --------------------------------------------------------------------------- CPFS normalisation


def _check_bound(M: float) -> float:
    if not (np.isfinite(M) and M > 0):
        raise ValueError(f"flow bound M must be a positive finite number, got {M}")
    return float(M)


def log_normalise_flow(flow: np.ndarray, M: float = 56.0) -> np.ndarray:
    """CPFS eq. (6): sign(f) * min(1, log(|f|+1) / log(M+1)) per component; float32 in [-1, 1].

    M is "a loose upper bound on the flow magnitude" (56.0 in the paper); components beyond it
    map to +-1.
    """
    M = _check_bound(M)
    flow = np.asarray(flow, dtype=np.float32)
    scaled = np.log1p(np.abs(flow)) / np.float32(np.log1p(M))
    return (np.sign(flow) * np.minimum(scaled, 1.0)).astype(np.float32)


def log_denormalise_flow(normalised: np.ndarray, M: float = 56.0) -> np.ndarray:
    """Inverse of `log_normalise_flow` for |f| <= M: sign(g) * ((M+1)^|g| - 1); float32.

    Inputs are clipped to [-1, 1], so a saturated component comes back as +-M.
    """
    M = _check_bound(M)
    g = np.clip(np.asarray(normalised, dtype=np.float32), -1.0, 1.0)
    return (np.sign(g) * np.expm1(np.abs(g) * np.float32(np.log1p(M)))).astype(np.float32)
