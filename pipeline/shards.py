"""HDF5 shards: pack the per-video loose stage outputs into a few large files, and read them back.

This module is the one door between ``pipeline/`` and ``models/``. The flow stage leaves thousands
of small JPEG / 16-bit PNG files per video (docs/CONTRACTS.md); training reads random samples
from them for days. Packing them into ``shard-NNNNN.h5`` files of about ``target_mb`` each keeps
the file count small and the reads sequential within a file, and gives every byte a checksum.

Layout (schema version 2), chosen by measurement (benchmarks/bench_loader.py, docs/BENCHMARKS.md):

* ``raw`` (default): every field a decoded array in one group per sample (``arrays/NNNNNN``):
  the RGB image ``uint8``, the flow as the KITTI ``uint16`` (u, v, valid) array the flow stage's
  PNG holds, trimap and soft mask ``uint8``; each stored in square tiles of ``tile_size`` px with
  ``fletcher32`` and ``array_compression`` (Blosc-LZ4 with byte shuffle by default, through
  ``hdf5plugin``). A training crop reads, checks and decompresses only the tiles it overlaps
  (``ShardReader.read_sample(..., window=...)``), so no JPEG or PNG is decoded while training.
  3.5x the bytes of the loose files; a training read is ~4x faster than decoding them.
* ``mixed``: the JPEG frame byte-for-byte as the flow stage wrote it, in a variable-length
  ``uint8`` dataset (``h5py.vlen_dtype(np.uint8)``, one element per sample); the rest as in
  ``raw``. About half the size of ``raw``, ~30 % slower to read.
* ``encoded``: every field as the stage's encoded bytes (JPEG, 16-bit PNG, 8-bit PNGs): the loose
  files' size and speed, in few files.

h5py's built-in ``lzf`` (``array_compression: lzf``) stores the flow as small as Blosc-LZ4 but
decompressed at ~150 MB/s here, 5x slower; shards written with it need no ``hdf5plugin`` to read.
Schema version 1 shards (single-chunk ``lzf`` arrays) are still read.

HDF5 (2.x) refuses filters on variable-length data (and before, filters only covered the
descriptors, not the heap holding the bytes), so ``fletcher32`` cannot protect encoded bytes:
every blob carries a CRC-32 (dataset ``crc32``, itself ``fletcher32``-checked) that the reader
verifies on every read.

Per-sample metadata and the guidance points of the guidance stage (CMP, Zhan et al. 2019, Sec. 3.2)
are small fixed-type datasets with ``fletcher32`` in every layout. The split into train and
validation is by video, so no video is seen on both sides. Every shard and ``index.json`` is
written under a temporary name in the same folder and renamed when complete, so a killed job
leaves nothing that looks complete; ``index.json`` is written last and marks the set as complete.

No torch here: ``models/data.py`` wraps :class:`ShardReader` in a torch ``Dataset``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zlib
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import h5py
import hdf5plugin  # registers the Blosc filter with HDF5 (needed to write and to read)
import numpy as np

from pipeline.atomic import read_tsv

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

_VLEN_U8 = h5py.vlen_dtype(np.dtype(np.uint8))
_STR = h5py.string_dtype("utf-8")
_INT_META = ("shot", "t", "gap", "height", "width", "static", "has_mask", "n_watershed", "n_grid")
_FLOAT_META = ("mean_mag", "max_mag", "frac_saturated", "fg_fraction")


class ShapeMismatch(ValueError):
    """A decoded array does not have the size the sample's metadata says."""


class VideoInput(NamedTuple):
    """Where one video's loose stage outputs live (any of the optional parts may be ``None``)."""

    video_id: str
    flow_dir: Path
    masks_dir: Path | None = None
    guidance: Path | None = None


# ----------------------------------------------------------------------------------------------
# Codecs (numpy / OpenCV only)


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


def _crc(blob: bytes | np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(blob, dtype=np.uint8))) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------
# Reading the loose stage outputs


def _read_guidance(path: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray, int, int]]:
    if path is None:
        return {}
    with np.load(path, allow_pickle=False) as npz:
        ids, offsets = npz["sample_ids"], npz["offsets"]
        points, vectors = npz["points"], npz["vectors"]
        n_ws, n_grid = npz["n_watershed"], npz["n_grid"]
    if len(offsets) != len(ids) + 1 or offsets[-1] != len(points) or len(vectors) != len(points):
        raise ValueError(f"{path}: offsets / points / vectors lengths disagree")
    return {
        str(sid): (
            points[offsets[i] : offsets[i + 1]].astype(np.int32),
            vectors[offsets[i] : offsets[i + 1]].astype(np.float32),
            int(n_ws[i]),
            int(n_grid[i]),
        )
        for i, sid in enumerate(ids)
    }


def _read_masks(masks_dir: Path | None) -> dict[str, dict[str, str]]:
    if masks_dir is None:
        return {}
    rows = read_tsv(Path(masks_dir) / "frames.tsv")
    return {row["key"]: row for row in rows if row["status"] == "kept"}


def iter_loose_samples(video: VideoInput) -> Iterator[dict[str, Any]]:
    """Yield one dict per pair listed in the video's ``pairs.tsv``.

    A pair whose files are missing, undecodable or of the wrong shape comes back as
    ``{"sample_id", "video_id", "rejected": reason}`` so the caller can record it.
    """
    flow_dir = Path(video.flow_dir)
    masks = _read_masks(video.masks_dir)
    guidance = _read_guidance(Path(video.guidance) if video.guidance else None)
    for row in read_tsv(flow_dir / "pairs.tsv"):
        sample_id = row["sample_id"]
        try:
            yield _load_pair(video, flow_dir, row, masks, guidance)
        except (ValueError, OSError, KeyError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            yield {"sample_id": sample_id, "video_id": video.video_id, "rejected": reason}


def _load_pair(
    video: VideoInput,
    flow_dir: Path,
    row: dict[str, str],
    masks: dict[str, dict[str, str]],
    guidance: dict[str, tuple[np.ndarray, np.ndarray, int, int]],
) -> dict[str, Any]:
    height, width = int(row["height"]), int(row["width"])
    image_blob = (flow_dir / row["frame"]).read_bytes()
    flow_blob = (flow_dir / row["flow"]).read_bytes()
    # Decode once while packing so a truncated or mis-sized file is rejected here, with a reason,
    # instead of failing a training job days later.
    image = decode_jpeg_rgb(image_blob)
    flow, valid = decode_flow_png(flow_blob)
    if image.shape[:2] != (height, width) or flow.shape[:2] != (height, width):
        raise ValueError(
            f"size mismatch: pairs.tsv {height}x{width}, image {image.shape[:2]}, flow {flow.shape[:2]}"
        )
    sample: dict[str, Any] = {
        "sample_id": row["sample_id"],
        "video_id": video.video_id,
        "shot": int(row["shot"]),
        "t": int(row["t"]),
        "gap": int(row["gap"]),
        "height": height,
        "width": width,
        "static": int(row.get("static") or 0),
        "mean_mag": float(row.get("mean_mag") or "nan"),
        "max_mag": float(row.get("max_mag") or "nan"),
        "frac_saturated": float(row.get("frac_saturated") or "nan"),
        "fg_fraction": float("nan"),
        "image_blob": image_blob,
        "flow_blob": flow_blob,
        "trimap_blob": b"",
        "soft_blob": b"",
        "image": image,
        "flow": flow,
        "valid": valid,
        "trimap": None,
        "soft": None,
    }
    mask_row = masks.get(Path(row["frame"]).stem)
    if mask_row is not None:
        masks_dir = Path(video.masks_dir)  # type: ignore[arg-type]
        for name in ("trimap", "soft"):
            blob = (masks_dir / mask_row[name]).read_bytes()
            mask = decode_mask_png(blob, name)
            if mask.shape != (height, width):
                raise ValueError(f"{name} is {mask.shape}, frame is {(height, width)}")
            sample[f"{name}_blob"], sample[name] = blob, mask
        sample["fg_fraction"] = float(mask_row.get("fg_fraction") or "nan")
    sample["has_mask"] = int(mask_row is not None)
    points, vectors, n_ws, n_grid = guidance.get(
        row["sample_id"], (np.zeros((0, 2), np.int32), np.zeros((0, 2), np.float32), 0, 0)
    )
    if len(points) and (
        points.min() < 0 or points[:, 0].max() >= height or points[:, 1].max() >= width
    ):
        raise ValueError("guidance point outside the frame")
    sample.update(points=points, vectors=vectors, n_watershed=n_ws, n_grid=n_grid)
    return sample


# ----------------------------------------------------------------------------------------------
# Split


def split_videos(video_ids: Sequence[str], *, val_fraction: float, seed: int) -> dict[str, str]:
    """Assign whole videos to ``train`` / ``val``.

    Seeded and independent of the input order. ``round(val_fraction * n)`` videos go to val, at
    least one when ``val_fraction > 0`` and there are two or more videos, and never all of them:
    at least one video stays in train. A single video always goes to train (val is then empty).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = sorted(set(video_ids))
    if len(ids) != len(video_ids):
        raise ValueError("duplicate video ids")
    n_val = round(val_fraction * len(ids))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(ids) - 1) if ids else 0
    order = np.random.default_rng(seed).permutation(len(ids))
    val = {ids[i] for i in order[:n_val]}
    return {vid: ("val" if vid in val else "train") for vid in ids}


# ----------------------------------------------------------------------------------------------
# Writer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _ShardWriter:
    """Writes one shard under a temporary name; :meth:`commit` renames it into place."""

    def __init__(
        self,
        path: Path,
        *,
        layout: str,
        split: str,
        attrs: dict[str, Any],
        compression: str = "blosc-lz4",
        tile_size: int = 128,
    ) -> None:
        self.path = path
        self.compression = compression
        self.tile_size = tile_size
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.layout = layout
        self.split = split
        self.file = h5py.File(self.tmp, "w", libver="latest")
        self.file.attrs.update(attrs)
        self.file.attrs["split"] = split
        self.meta: dict[str, list[Any]] = {k: [] for k in ("sample_id", "video_id", "crc32")}
        self.meta.update({k: [] for k in _INT_META + _FLOAT_META})
        self.points: list[np.ndarray] = []
        self.vectors: list[np.ndarray] = []
        self.resolutions: set[tuple[int, int]] = set()
        self.blob_fields = LAYOUT_BLOBS[layout]
        for name in self.blob_fields:
            # HDF5 refuses filters on variable-length data ("not suitable for filters"), so
            # these blobs are protected by their CRC-32 instead of fletcher32.
            self.file.create_dataset(
                name, shape=(0,), maxshape=(None,), chunks=(64,), dtype=_VLEN_U8
            )

    def __len__(self) -> int:
        return len(self.meta["sample_id"])

    def add(self, sample: dict[str, Any]) -> None:
        i = len(self)
        blobs = [np.frombuffer(sample[f"{name}_blob"], np.uint8) for name in BLOB_FIELDS]
        for name, blob in zip(BLOB_FIELDS, blobs, strict=True):
            if name in self.blob_fields:
                dset = self.file[name]
                dset.resize((i + 1,))
                dset[i] = blob
        if len(self.blob_fields) < len(BLOB_FIELDS):
            self._add_arrays(i, sample)
        self.meta["crc32"].append([_crc(b) for b in blobs])
        for key in ("sample_id", "video_id") + _INT_META + _FLOAT_META:
            self.meta[key].append(sample[key])
        self.points.append(sample["points"])
        self.vectors.append(sample["vectors"])
        self.resolutions.add((sample["height"], sample["width"]))

    @property
    def nbytes(self) -> int:
        """Bytes allocated in the file so far (headers and heaps included), without a flush."""
        return self.file.id.get_filesize()

    def _add_arrays(self, i: int, sample: dict[str, Any]) -> None:
        group = self.file.create_group(f"arrays/{i:06d}")
        # The flow keeps the PNG's KITTI quantisation (u, v, valid as uint16): lossless w.r.t. the
        # stage output; byte-shuffle + lzf brings it to the PNG's size at ~3x its decode speed.
        kitti = np.empty(sample["flow"].shape[:2] + (3,), np.uint16)
        kitti[..., :2] = np.round(sample["flow"] * FLOW_SCALE + FLOW_OFFSET).clip(0, 65535)
        kitti[..., 2] = sample["valid"]
        arrays = {"image": sample["image"], "flow": kitti}
        if sample["trimap"] is not None:
            arrays.update(trimap=sample["trimap"], soft=sample["soft"])
        for name, array in arrays.items():
            if name in self.blob_fields:
                continue
            # Square tiles: a training crop reads and checks only the tiles it overlaps.
            tile = (min(self.tile_size, array.shape[0]), min(self.tile_size, array.shape[1]))
            group.create_dataset(
                name,
                data=array,
                chunks=tile + array.shape[2:],
                fletcher32=True,
                **array_filter(self.compression, array.itemsize),
            )

    def commit(self) -> dict[str, Any]:
        f = self.file
        n = len(self)
        # Variable-length strings cannot carry fletcher32; validate_shards compares them with index.json.
        f.create_dataset("sample_id", data=self.meta["sample_id"], dtype=_STR)
        f.create_dataset("video_id", data=self.meta["video_id"], dtype=_STR)
        crc = np.asarray(self.meta["crc32"], np.uint32).reshape(n, len(BLOB_FIELDS))
        f.create_dataset("crc32", data=crc, fletcher32=True)
        for key in _INT_META:
            f.create_dataset(key, data=np.asarray(self.meta[key], np.int32), fletcher32=True)
        for key in _FLOAT_META:
            f.create_dataset(key, data=np.asarray(self.meta[key], np.float32), fletcher32=True)
        counts = np.asarray([len(p) for p in self.points], np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        points = np.concatenate(self.points).astype(np.int32).reshape(-1, 2)
        vectors = np.concatenate(self.vectors).astype(np.float32).reshape(-1, 2)
        f.create_dataset("guidance_offsets", data=offsets, fletcher32=True)
        for name, data in (("guidance_points", points), ("guidance_vectors", vectors)):
            # maxshape None lets a shard without any guidance still carry a chunked, checksummed set.
            chunk = (max(1, min(len(data), 65536)), 2)
            f.create_dataset(name, data=data, maxshape=(None, 2), chunks=chunk, fletcher32=True)
        f.attrs["n_samples"] = n
        f.attrs["resolutions"] = json.dumps(sorted(self.resolutions))
        f.close()
        _fsync_file(self.tmp)
        entry = {
            "file": self.path.name,
            "split": self.split,
            "n_samples": n,
            "bytes": self.tmp.stat().st_size,
            "sha256": _sha256(self.tmp),
            "sample_ids": list(self.meta["sample_id"]),
            "video_ids": sorted(set(self.meta["video_id"])),
            "has_mask": [int(v) for v in self.meta["has_mask"]],
        }
        os.replace(self.tmp, self.path)
        return entry

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def array_filter(compression: str, itemsize: int) -> dict[str, Any]:
    """h5py ``create_dataset`` keywords for one of :data:`ARRAY_COMPRESSIONS`.

    ``blosc-lz4`` (byte shuffle inside Blosc) stores the flow as small as ``lzf`` + shuffle and
    reads ~5x faster (docs/BENCHMARKS.md); ``none`` is faster still at ~3x the size.
    """
    if compression == "blosc-lz4":
        shuffle = hdf5plugin.Blosc.SHUFFLE if itemsize > 1 else hdf5plugin.Blosc.NOSHUFFLE
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=shuffle))
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": itemsize > 1}
    if compression == "none":
        return {}
    raise ValueError(f"array_compression must be one of {ARRAY_COMPRESSIONS}, got {compression!r}")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_shards(
    videos: Sequence[VideoInput | tuple],
    out_dir: str | os.PathLike,
    *,
    target_mb: float = 512.0,
    val_fraction: float = 0.05,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    flow_method: str = "",
    layout: str = "raw",
    array_compression: str = "blosc-lz4",
    tile_size: int = 128,
) -> dict[str, Any]:
    """Pack every accepted sample of ``videos`` into ``shard-NNNNN.h5`` files plus ``index.json``.

    ``videos``: :class:`VideoInput` (or plain tuples) ``(video_id, flow_dir, masks_dir, guidance)``.
    A shard is closed once its payload reaches ``target_mb`` MiB; shards hold one split each.
    Arrays are stored in ``tile_size`` square chunks with ``array_compression``.
    Returns the index (also written to ``out_dir/index.json``, last, atomically).
    """
    if target_mb <= 0:
        raise ValueError(f"target_mb must be > 0, got {target_mb}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    array_filter(array_compression, 2)  # validates the name
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 8:
        raise ValueError(f"tile_size must be an integer >= 8, got {tile_size!r}")
    videos = [VideoInput(*v) for v in videos]
    if not videos:
        raise ValueError("no videos to pack")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The old index goes first: until the new one lands, the folder must not look complete.
    (out / INDEX_NAME).unlink(missing_ok=True)
    splits = split_videos([v.video_id for v in videos], val_fraction=val_fraction, seed=seed)
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "layout": layout,
        "image_codec": "jpeg" if layout != "raw" else f"array-rgb-uint8-{array_compression}",
        "flow_codec": "kitti-png16"
        if layout == "encoded"
        else f"array-kitti-uint16-{array_compression}",
        "mask_codec": "png8" if layout == "encoded" else f"array-uint8-{array_compression}",
        "array_compression": array_compression,
        "tile_size": tile_size,
        "blob_fields": json.dumps(LAYOUT_BLOBS[layout]),
        "flow_scale": FLOW_SCALE,
        "flow_offset": FLOW_OFFSET,
        "flow_method": flow_method,
    }
    target = target_mb * 2**20
    shards: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    video_counts: dict[str, int] = {}
    writer: _ShardWriter | None = None
    try:
        for split in ("train", "val"):
            for video in sorted(videos, key=lambda v: v.video_id):
                if splits[video.video_id] != split:
                    continue
                video_counts[video.video_id] = 0
                for sample in iter_loose_samples(video):
                    if "rejected" in sample:
                        rejected.append(
                            {
                                "sample_id": sample["sample_id"],
                                "video_id": sample["video_id"],
                                "reason": sample["rejected"],
                            }
                        )
                        continue
                    if writer is None:
                        path = out / SHARD_PATTERN.format(len(shards))
                        writer = _ShardWriter(
                            path,
                            layout=layout,
                            split=split,
                            attrs=attrs,
                            compression=array_compression,
                            tile_size=tile_size,
                        )
                    writer.add(sample)
                    video_counts[video.video_id] += 1
                    if writer.nbytes >= target:
                        shards.append(writer.commit())
                        writer = None
            if writer is not None:  # a shard never spans two splits
                shards.append(writer.commit())
                writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    keep = {s["file"] for s in shards}
    for stale in out.glob("shard-*.h5"):
        if stale.name not in keep:
            stale.unlink()
    index = _build_index(shards, splits, video_counts, rejected, config, flow_method, layout)
    _write_json_atomic(out / INDEX_NAME, index)
    return index


def _build_index(
    shards: list[dict[str, Any]],
    splits: dict[str, str],
    video_counts: dict[str, int],
    rejected: list[dict[str, str]],
    config: dict[str, Any] | None,
    flow_method: str,
    layout: str,
) -> dict[str, Any]:
    split_summary = {}
    for split in ("train", "val"):
        mine = [s for s in shards if s["split"] == split]
        split_summary[split] = {
            "videos": sorted(v for v, s in splits.items() if s == split),
            "n_samples": sum(s["n_samples"] for s in mine),
            "n_shards": len(mine),
        }
    notes = []
    if len(splits) == 1:
        notes.append("one video only: it is in train and the validation split is empty")
    return {
        "schema_version": SCHEMA_VERSION,
        "layout": layout,
        "flow_method": flow_method,
        "config": config or {},
        "shards": shards,
        "splits": split_summary,
        "videos": {v: {"split": splits[v], "n_samples": video_counts.get(v, 0)} for v in splits},
        "totals": {
            "n_videos": len(splits),
            "n_shards": len(shards),
            "n_samples": sum(s["n_samples"] for s in shards),
            "n_rejected": len(rejected),
            "bytes": sum(s["bytes"] for s in shards),
        },
        "rejected": rejected,
        "notes": notes,
    }


# ----------------------------------------------------------------------------------------------
# Reader


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
            self._meta = {k: handle[k][()] for k in ("sample_id", "video_id") + _INT_META}
            self._meta.update({k: handle[k][()] for k in _FLOAT_META})
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
        for key in _INT_META:
            out[key] = int(meta[key][i])
        for key in _FLOAT_META:
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
                if _crc(blob) != int(crc[BLOB_FIELDS.index(name)]):
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


# ----------------------------------------------------------------------------------------------
# Validation


def validate_shards(shard_dir: str | os.PathLike) -> dict[str, Any]:
    """Re-read every sample of the shard set in ``shard_dir`` and report every problem found.

    Checks: ``index.json`` present with a known schema; each listed shard present, its sha256
    and sample ids as listed; every sample decodes (``fletcher32`` / CRC-32 / codec errors are
    reported as corrupt samples with the reason) with the shapes its metadata says. Returns
    ``{"ok", "n_shards", "n_samples", "corrupt", "sha256_mismatch", "shape_mismatch", "errors"}``.
    """
    root = Path(shard_dir)
    report: dict[str, Any] = {
        "dir": str(root),
        "ok": False,
        "n_shards": 0,
        "n_samples": 0,
        "corrupt": [],
        "sha256_mismatch": [],
        "shape_mismatch": [],
        "errors": [],
    }
    try:
        index = read_index(root / INDEX_NAME)
    except (OSError, ValueError) as err:
        report["errors"].append(f"index.json: {err}")
        return report
    for entry in index["shards"]:
        path = root / entry["file"]
        report["n_shards"] += 1
        if not path.is_file():
            report["errors"].append(f"{entry['file']}: missing")
            continue
        actual = _sha256(path)
        if actual != entry["sha256"]:
            report["sha256_mismatch"].append(
                {"file": entry["file"], "expected": entry["sha256"], "actual": actual}
            )
        _validate_shard(path, entry, report)
    report["ok"] = not any(report[k] for k in ("corrupt", "sha256_mismatch", "shape_mismatch"))
    report["ok"] = report["ok"] and not report["errors"]
    return report


def _validate_shard(path: Path, entry: dict[str, Any], report: dict[str, Any]) -> None:
    reader = ShardReader(path)
    try:
        n = len(reader)
        ids = [s.decode() for s in reader._open()["sample_id"][()]]
    except (OSError, ValueError, KeyError) as err:
        report["errors"].append(f"{entry['file']}: {str(err).splitlines()[0]}")
        reader.close()
        return
    if n != entry["n_samples"] or ids != entry["sample_ids"]:
        report["errors"].append(f"{entry['file']}: sample ids / count differ from index.json")
    for i in range(n):
        report["n_samples"] += 1
        where = {"file": entry["file"], "index": i, "sample_id": ids[i] if i < len(ids) else ""}
        try:
            sample = reader.read_sample(i)
        except (OSError, ValueError, KeyError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            bucket = "shape_mismatch" if isinstance(err, ShapeMismatch) else "corrupt"
            report[bucket].append({**where, "reason": reason})
            continue
        shape = (sample["height"], sample["width"])
        problems = []
        if sample["soft"] is not None and sample["soft"].shape != shape:
            problems.append(f"soft is {sample['soft'].shape}")
        points = sample["points"]
        if len(points) != len(sample["vectors"]):
            problems.append("points and vectors differ in length")
        elif len(points) and (
            points.min() < 0 or points[:, 0].max() >= shape[0] or points[:, 1].max() >= shape[1]
        ):
            problems.append("guidance point outside the frame")
        if problems:
            report["shape_mismatch"].append({**where, "reason": "; ".join(problems)})
    reader.close()


def main_validate(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline validate-shards DIR``: print a JSON report; exit 1 on any problem."""
    parser = argparse.ArgumentParser(prog="validate-shards", description=validate_shards.__doc__)
    parser.add_argument("shard_dir", help="folder holding index.json and shard-NNNNN.h5")
    args = parser.parse_args(argv)
    report = validate_shards(args.shard_dir)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    if not report["ok"]:
        problems = sum(
            len(report[k]) for k in ("corrupt", "sha256_mismatch", "shape_mismatch", "errors")
        )
        print(f"validate-shards: {problems} problem(s) in {args.shard_dir}", file=sys.stderr)
        return 1
    return 0
