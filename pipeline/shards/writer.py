"""Packing: the train / validation split by video, the HDF5 shard writer and ``index.json``.

:func:`write_shards` packs every accepted sample of a video set (:mod:`pipeline.shards.loose`) into
``shard-NNNNN.h5`` files of about ``target_mb`` each, one split per shard, in the layout chosen
(described in :mod:`pipeline.shards`), and writes ``index.json`` last. Every shard and the index
are written under a temporary name in the same folder and renamed when complete, so a killed job
leaves nothing that looks complete. Per-sample metadata and the guidance points (CMP, Zhan et al.
2019, Sec. 3.2) are fixed-type datasets with ``fletcher32``; encoded blobs carry a CRC-32.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # registers the Blosc filter with HDF5 (needed to write and to read)
import numpy as np

from pipeline.shards.codec import (
    ARRAY_COMPRESSIONS,
    BLOB_FIELDS,
    FLOAT_META,
    FLOW_OFFSET,
    FLOW_SCALE,
    INDEX_NAME,
    INT_META,
    LAYOUT_BLOBS,
    LAYOUTS,
    SCHEMA_VERSION,
    SHARD_PATTERN,
    blob_crc,
)
from pipeline.shards.loose import VideoInput, iter_loose_samples
from pipeline.video import file_sha256

_VLEN_U8 = h5py.vlen_dtype(np.dtype(np.uint8))
_STR = h5py.string_dtype("utf-8")


def n_val_videos(n_videos: int, val_fraction: float) -> int:
    """Videos of ``n_videos`` that go to validation: ``round(val_fraction * n)``, at least one when
    ``val_fraction > 0`` and there are two or more videos, never all of them."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(val_fraction * n_videos)
    if val_fraction > 0 and n_videos >= 2:
        n_val = max(n_val, 1)
    return min(n_val, n_videos - 1) if n_videos else 0


def split_videos(video_ids: Sequence[str], *, val_fraction: float, seed: int) -> dict[str, str]:
    """Assign whole videos to ``train`` / ``val``.

    Seeded and independent of the input order. ``round(val_fraction * n)`` videos go to val, at
    least one when ``val_fraction > 0`` and there are two or more videos, and never all of them:
    at least one video stays in train. A single video always goes to train (val is then empty).
    """
    ids = sorted(set(video_ids))
    if len(ids) != len(video_ids):
        raise ValueError("duplicate video ids")
    n_val = n_val_videos(len(ids), val_fraction)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = {ids[i] for i in order[:n_val]}
    return {vid: ("val" if vid in val else "train") for vid in ids}


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
        self.meta.update({k: [] for k in INT_META + FLOAT_META})
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
        self.meta["crc32"].append([blob_crc(b) for b in blobs])
        for key in ("sample_id", "video_id") + INT_META + FLOAT_META:
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
        for key in INT_META:
            f.create_dataset(key, data=np.asarray(self.meta[key], np.int32), fletcher32=True)
        for key in FLOAT_META:
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
            "sha256": file_sha256(self.tmp),
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


def _shard_attrs(
    layout: str, array_compression: str, tile_size: int, flow_method: str
) -> dict[str, Any]:
    """The attributes every shard of a set carries: schema, codecs per field, flow quantisation."""
    return {
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


def check_pack_options(
    target_mb: float, layout: str, array_compression: str, tile_size: int
) -> None:
    """Refuse packing options no writer accepts, with the option's name and value."""
    if target_mb <= 0:
        raise ValueError(f"target_mb must be > 0, got {target_mb}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    array_filter(array_compression, 2)  # validates the name
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 8:
        raise ValueError(f"tile_size must be an integer >= 8, got {tile_size!r}")


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
    check_pack_options(target_mb, layout, array_compression, tile_size)
    videos = [VideoInput(*v) for v in videos]
    if not videos:
        raise ValueError("no videos to pack")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The old index goes first: until the new one lands, the folder must not look complete.
    (out / INDEX_NAME).unlink(missing_ok=True)
    splits = split_videos([v.video_id for v in videos], val_fraction=val_fraction, seed=seed)
    attrs = _shard_attrs(layout, array_compression, tile_size, flow_method)
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
