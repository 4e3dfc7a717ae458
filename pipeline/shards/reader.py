"""Reading shards back: schema checks, ``index.json``, and random access to one shard's samples.

:class:`ShardReader` is what ``models/data.py`` wraps in a torch ``Dataset``: it decodes a sample
whole or only a window of it (tiled arrays are read and checksummed only where the window overlaps
them), verifies the CRC-32 of encoded blobs, and survives being sent to DataLoader workers. Reads
every layout of :mod:`pipeline.shards` and schema versions 1 and 2. No torch here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  registers the Blosc filter with HDF5 (needed to read)
import numpy as np

from pipeline.shards.codec import (
    BLOB_FIELDS,
    FLOAT_META,
    INDEX_NAME,
    INT_META,
    LAYOUT_BLOBS,
    SAMPLE_FIELDS,
    SUPPORTED_SCHEMA_VERSIONS,
    ShapeMismatch,
    blob_crc,
    decode_flow_png,
    decode_jpeg_rgb,
    decode_mask_png,
    kitti_to_flow,
)


def check_schema(attrs: Any, where: str) -> None:
    """Raise ``ValueError`` unless ``attrs`` (a shard's or an index's) has a known schema version."""
    version = attrs.get("schema_version") if hasattr(attrs, "get") else None
    if version is None:
        raise ValueError(f"{where}: no schema_version; not a motion-ssl shard")
    if int(version) not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(
            f"{where}: shard schema version {int(version)} is not supported by this reader "
            f"(supports {list(SUPPORTED_SCHEMA_VERSIONS)}); rebuild the shards or upgrade motion-ssl"
        )


def read_index(index_path: str | os.PathLike) -> dict[str, Any]:
    """Load an ``index.json`` and check its schema version."""
    path = Path(index_path)
    if path.is_dir():
        path = path / INDEX_NAME
    with open(path) as handle:
        index = json.load(handle)
    check_schema(index, str(path))
    return index


def split_samples(index: dict[str, Any], entry: dict[str, Any], split: str) -> np.ndarray:
    """Local indices of the samples of shard ``entry`` (one of ``index["shards"]``) in ``split``.

    A set packed in one job has one split per shard (``entry["split"]``); a set packed per chunk
    (``pipeline.shards.chunked``) lists each shard's videos with their sample ranges, and the
    index says which split each video is in.
    """
    if "split" in entry:
        n = int(entry["n_samples"]) if entry["split"] == split else 0
        return np.arange(n)
    videos = index["videos"]
    parts = [
        np.arange(start, stop)
        for vid, start, stop in entry["videos"]
        if videos.get(vid, {}).get("split") == split
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class ShardReader:
    """Random access to the samples of one shard.

    The HDF5 file is opened on first access and re-opened when the process id changes, and the
    handle is dropped when pickled: a Dataset holding readers can be sent to DataLoader workers
    under fork (an inherited HDF5 handle corrupts reads) and spawn (a handle cannot be pickled).
    """

    def __init__(self, path: str | os.PathLike, *, verify_crc: bool = True) -> None:
        self.path = Path(path)
        self.verify_crc = verify_crc
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._attrs: dict[str, Any] = {}
        self._meta: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_file=None, _pid=None, _meta={})
        return state

    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            handle = h5py.File(self.path, "r")
            try:
                check_schema(handle.attrs, str(self.path))
            except ValueError:
                handle.close()
                raise
            self._attrs = {k: handle.attrs[k] for k in handle.attrs}
            # The per-sample metadata is small: read it once (13 dataset reads per sample cost
            # more than decoding the JPEG).
            self._meta = {k: handle[k][()] for k in ("sample_id", "video_id") + INT_META}
            self._meta.update({k: handle[k][()] for k in FLOAT_META})
            self._file, self._pid = handle, os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._pid = None

    @property
    def attrs(self) -> dict[str, Any]:
        self._open()
        return self._attrs

    def __len__(self) -> int:
        if self._file is not None and self._pid == os.getpid():
            return int(self._file.attrs["n_samples"])
        with h5py.File(self.path, "r") as handle:  # do not leave a handle open in this process
            check_schema(handle.attrs, str(self.path))
            return int(handle.attrs["n_samples"])

    def sample_shape(self, i: int) -> tuple[int, int]:
        """(height, width) of sample ``i`` from the metadata, without reading the sample."""
        self._open()
        return int(self._meta["height"][i]), int(self._meta["width"][i])

    def read_sample(
        self,
        i: int,
        fields: Collection[str] | None = None,
        *,
        window: tuple[int, int, int, int] | None = None,
    ) -> dict[str, Any]:
        """Decode sample ``i``. ``fields`` limits the work to a subset of :data:`SAMPLE_FIELDS`.

        Returns ``image`` (uint8 H×W×3 RGB), ``flow`` (float32 H×W×2), ``valid`` (bool H×W),
        ``trimap`` (uint8 H×W: 0/1/255) and ``soft`` (float32 H×W in [0, 1]) or ``None`` when the
        frame has no mask, ``points`` (int32 P×2, y x), ``vectors`` (float32 P×2, dx dy), and the
        metadata (``sample_id``, ``video_id``, ``shot``, ``t``, ``gap``, ``height``, ``width``, ...).

        ``window = (top, bottom, left, right)`` returns only those rows and columns of the image
        fields (``origin`` in the result is ``(top, left)``; guidance points stay in full-frame
        coordinates). Arrays stored in tiles are then read and checksummed only where the window
        overlaps them; encoded blobs are decoded whole and cut.
        Raises ``ValueError`` on a checksum or shape mismatch (``OSError`` from h5py on a
        ``fletcher32`` failure).
        """
        f = self._open()
        n = int(f.attrs["n_samples"])
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {self.path.name} ({n} samples)")
        wanted = set(SAMPLE_FIELDS if fields is None else fields)
        unknown = wanted - set(SAMPLE_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; known: {SAMPLE_FIELDS}")
        meta = self._meta
        out: dict[str, Any] = {
            "sample_id": meta["sample_id"][i].decode(),
            "video_id": meta["video_id"][i].decode(),
            "index": i,
        }
        for key in INT_META:
            out[key] = int(meta[key][i])
        for key in FLOAT_META:
            out[key] = float(meta[key][i])
        shape = (out["height"], out["width"])
        rows, cols = _window_slices(window, shape)
        out["origin"] = (rows.start, cols.start)
        has_mask = bool(out["has_mask"])
        self._decode_blobs(f, i, wanted, has_mask, out)
        for name in ("image", "flow", "valid", "trimap", "soft"):
            if out.get(name) is not None:  # blobs decode whole: check, then cut
                _check_shape(i, name, out[name].shape, shape)
                out[name] = out[name][rows, cols]
        self._read_arrays(f, i, wanted, has_mask, out, shape, rows, cols)
        if "guidance" in wanted:
            lo, hi = f["guidance_offsets"][i : i + 2]
            out["points"] = f["guidance_points"][lo:hi]
            out["vectors"] = f["guidance_vectors"][lo:hi]
        return out

    def _decode_blobs(
        self, f: h5py.File, i: int, wanted: set[str], has_mask: bool, out: dict[str, Any]
    ) -> None:
        stored = LAYOUT_BLOBS[str(self._attrs["layout"])]
        names = [n for n in stored if n in wanted and (has_mask or n in ("image", "flow"))]
        blobs = {name: f[name][i] for name in names}
        if self.verify_crc:
            crc = f["crc32"][i]
            for name, blob in blobs.items():
                if blob_crc(blob) != int(crc[BLOB_FIELDS.index(name)]):
                    raise ValueError(f"sample {i}: {name} bytes fail their CRC-32 (corrupt shard)")
        if "image" in blobs:
            out["image"] = decode_jpeg_rgb(blobs["image"])
        if "flow" in blobs:
            scale, offset = float(self._attrs["flow_scale"]), int(self._attrs["flow_offset"])
            out["flow"], out["valid"] = decode_flow_png(blobs["flow"], scale=scale, offset=offset)
        if "trimap" in stored and "trimap" in wanted:
            out["trimap"] = decode_mask_png(blobs["trimap"], "trimap") if has_mask else None
        if "soft" in stored and "soft" in wanted:
            soft = decode_mask_png(blobs["soft"], "soft") if has_mask else None
            out["soft"] = None if soft is None else soft.astype(np.float32) / 255.0

    def _read_arrays(
        self,
        f: h5py.File,
        i: int,
        wanted: set[str],
        has_mask: bool,
        out: dict[str, Any],
        shape: tuple[int, int],
        rows: slice,
        cols: slice,
    ) -> None:
        names = [n for n in BLOB_FIELDS if n in wanted and n not in out]
        if not names:
            return
        group = f[f"arrays/{i:06d}"]

        def window_of(name: str) -> np.ndarray:
            # The stored shape is checked whole (HDF5 metadata, no read), then the window read.
            _check_shape(i, name, group[name].shape, shape)
            return group[name][rows, cols]

        if "image" in names:
            out["image"] = window_of("image")
        if "flow" in names:
            scale, offset = float(self._attrs["flow_scale"]), int(self._attrs["flow_offset"])
            out["flow"], out["valid"] = kitti_to_flow(window_of("flow"), scale=scale, offset=offset)
        if "trimap" in names:
            out["trimap"] = window_of("trimap") if has_mask else None
        if "soft" in names:
            soft = window_of("soft") if has_mask else None
            out["soft"] = None if soft is None else soft.astype(np.float32) / 255.0


def _check_shape(i: int, name: str, stored: tuple[int, ...], shape: tuple[int, int]) -> None:
    if tuple(stored[:2]) != shape:
        raise ShapeMismatch(f"sample {i}: {name} is {tuple(stored[:2])}, expected {shape}")


def _window_slices(
    window: tuple[int, int, int, int] | None, shape: tuple[int, int]
) -> tuple[slice, slice]:
    if window is None:
        return slice(0, shape[0]), slice(0, shape[1])
    top, bottom, left, right = (int(v) for v in window)
    if not (0 <= top < bottom <= shape[0] and 0 <= left < right <= shape[1]):
        raise ValueError(f"window {tuple(window)} is not inside the {shape[0]}x{shape[1]} sample")
    return slice(top, bottom), slice(left, right)
