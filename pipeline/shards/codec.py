"""The shard format: schema versions, layouts, field tables, and the codecs of the stored blobs.

Shared by the writer (:mod:`pipeline.shards.writer`), the reader (:mod:`pipeline.shards.reader`)
and the packing of the loose files (:mod:`pipeline.shards.loose`); the layouts themselves are
described in :mod:`pipeline.shards`. The decoders turn the flow stage's JPEG frames, KITTI 16-bit
flow PNGs (docs/CONTRACTS.md) and the masks stage's 8-bit PNGs back into arrays, and
:func:`blob_crc` is the CRC-32 every stored blob carries (``fletcher32`` cannot cover
variable-length data). numpy / OpenCV only.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
LAYOUTS = ("mixed", "encoded", "raw")
ARRAY_COMPRESSIONS = ("blosc-lz4", "lzf", "none")
# KITTI 16-bit flow PNG: stored = flow * 64 + 2**15 (docs/CONTRACTS.md).
FLOW_SCALE = 64.0
FLOW_OFFSET = 32768
INDEX_NAME = "index.json"
SHARD_PATTERN = "shard-{:05d}.h5"
BLOB_FIELDS = ("image", "flow", "trimap", "soft")
SAMPLE_FIELDS = ("image", "flow", "trimap", "soft", "guidance")
# Which fields each layout keeps as encoded bytes; every other field is a decoded array.
LAYOUT_BLOBS = {"mixed": ("image",), "encoded": BLOB_FIELDS, "raw": ()}

INT_META = ("shot", "t", "gap", "height", "width", "static", "has_mask", "n_watershed", "n_grid")
FLOAT_META = ("mean_mag", "max_mag", "frac_saturated", "fg_fraction")


class ShapeMismatch(ValueError):
    """A decoded array does not have the size the sample's metadata says."""


def _imdecode(blob: bytes | np.ndarray, flags: int, what: str) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(blob, dtype=np.uint8), flags)
    if array is None:
        raise ValueError(f"{what}: not a decodable image")
    return array


def decode_jpeg_rgb(blob: bytes | np.ndarray) -> np.ndarray:
    """JPEG bytes -> ``uint8`` H×W×3 RGB."""
    return cv2.cvtColor(_imdecode(blob, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


def kitti_to_flow(
    kitti: np.ndarray, *, scale: float = FLOW_SCALE, offset: int = FLOW_OFFSET
) -> tuple[np.ndarray, np.ndarray]:
    """KITTI ``uint16`` H×W×{2,3} in (u, v[, valid]) order -> (flow float32 H×W×2, valid bool)."""
    flow = kitti[..., :2].astype(np.float32)
    # In place: two passes over the flow, no temporaries (the (x - offset) / scale form made two).
    flow -= np.float32(offset)
    flow *= np.float32(1.0 / scale)  # exact for the power-of-two scale written (64)
    valid = kitti[..., 2] > 0 if kitti.shape[-1] > 2 else np.ones(kitti.shape[:2], bool)
    return flow, valid


def decode_flow_png(
    blob: bytes | np.ndarray, *, scale: float = FLOW_SCALE, offset: int = FLOW_OFFSET
) -> tuple[np.ndarray, np.ndarray]:
    """KITTI 16-bit PNG bytes -> (flow float32 H×W×2, valid bool H×W).

    The shard reader decodes with the scale / offset recorded in the shard's attributes rather
    than with ``pipeline.flowio``'s constants, so an old shard stays readable if those change.
    """
    png = _imdecode(blob, cv2.IMREAD_UNCHANGED, "flow")
    if png.dtype != np.uint16 or png.ndim != 3 or png.shape[2] != 3:
        raise ValueError(f"flow: expected a 3-channel 16-bit PNG, got {png.dtype} {png.shape}")
    return kitti_to_flow(png[..., ::-1], scale=scale, offset=offset)  # OpenCV reads BGR


def decode_mask_png(blob: bytes | np.ndarray, what: str) -> np.ndarray:
    """8-bit single-channel PNG bytes -> ``uint8`` H×W."""
    mask = _imdecode(blob, cv2.IMREAD_UNCHANGED, what)
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"{what}: expected an 8-bit 1-channel PNG, got {mask.dtype} {mask.shape}")
    return mask


def blob_crc(blob: bytes | np.ndarray) -> int:
    """CRC-32 of a blob's bytes (unsigned), as stored in a shard's ``crc32`` dataset."""
    return zlib.crc32(memoryview(np.ascontiguousarray(blob, dtype=np.uint8))) & 0xFFFFFFFF
