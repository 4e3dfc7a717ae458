"""Packing per chunk of videos: one job per chunk writes its shard files, one small job the index.

Issue 28. A set's videos fall into chunks by a hash of their id (``pipeline/stages/chunk.py``);
:func:`write_chunk_shards` packs one chunk's accepted samples, video by video in id order, into
``shard-NNNNN.h5`` files (the layouts of :mod:`pipeline.shards`) plus ``chunk.json`` (the shards,
each with the sample range of every video it holds, the rejected samples, the fields held).
:func:`write_set_index` reads every chunk's ``chunk.json`` and writes the set's ``index.json``:
the train / validation split by video (:func:`split_videos_stable`) and the shards with paths
relative to the set's folder. A chunk's shards hold both splits; the index says which samples
are whose (``pipeline.shards.reader.split_samples``). Adding a video repacks its chunk only:
every other chunk's files stay as they are, byte for byte, and the index is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.shards.codec import INDEX_NAME, SCHEMA_VERSION, SHARD_PATTERN
from pipeline.shards.loose import VideoInput, iter_loose_samples
from pipeline.shards.writer import (
    _shard_attrs,
    _ShardWriter,
    _write_json_atomic,
    check_pack_options,
    n_val_videos,
)

CHUNK_INDEX = "chunk.json"
# a chunked shard's ``split`` attribute: its samples' splits are in the set's index.json
MIXED_SPLIT = "by-index"


def split_videos_stable(
    video_ids: Sequence[str], *, val_fraction: float, seed: int
) -> dict[str, str]:
    """Assign whole videos to ``train`` / ``val``: the ``n_val`` videos with the smallest
    sha1(seed, id) go to val (``n_val`` as :func:`pipeline.shards.writer.split_videos`: at least
    one when ``val_fraction > 0`` and two or more videos, never all).

    Deterministic and independent of the input order; unlike a permutation of the sorted ids, an
    added video moves at most one other video between the splits.
    """
    ids = sorted(set(video_ids))
    if len(ids) != len(video_ids):
        raise ValueError("duplicate video ids")
    n_val = n_val_videos(len(ids), val_fraction)
    rank = sorted(ids, key=lambda v: hashlib.sha1(f"{seed}:{v}".encode()).hexdigest())
    val = set(rank[:n_val])
    return {vid: ("val" if vid in val else "train") for vid in ids}


def write_chunk_shards(
    videos: Sequence[VideoInput | tuple],
    out_dir: str | os.PathLike,
    *,
    fields: Sequence[str],
    target_mb: float = 512.0,
    flow_method: str = "",
    layout: str = "raw",
    array_compression: str = "blosc-lz4",
    tile_size: int = 128,
) -> dict[str, Any]:
    """Pack one chunk's videos (id order) into ``out_dir/shard-NNNNN.h5`` + ``chunk.json``.

    A shard is closed once its payload reaches ``target_mb`` MiB. ``fields``: what the shards hold
    (``pipeline.fields``), recorded for the index. An empty chunk (every video rejected upstream)
    writes a ``chunk.json`` without shards. Returns the chunk index (written last, atomically).
    """
    check_pack_options(target_mb, layout, array_compression, tile_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CHUNK_INDEX).unlink(missing_ok=True)
    attrs = _shard_attrs(layout, array_compression, tile_size, flow_method)
    shards: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    writer: _ShardWriter | None = None
    ranges: list[list[Any]] = []

    def close() -> None:
        nonlocal writer, ranges
        if writer is not None:
            entry = writer.commit()
            del entry["split"]
            entry["videos"] = [r for r in ranges if r[2] > r[1]]
            shards.append(entry)
        writer, ranges = None, []

    try:
        for video in sorted((VideoInput(*v) for v in videos), key=lambda v: v.video_id):
            counts[video.video_id] = 0
            for sample in iter_loose_samples(video):
                if "rejected" in sample:
                    keys = ("sample_id", "video_id")
                    rejected.append({**{k: sample[k] for k in keys}, "reason": sample["rejected"]})
                    continue
                if writer is None:
                    writer = _ShardWriter(
                        out / SHARD_PATTERN.format(len(shards)),
                        layout=layout,
                        split=MIXED_SPLIT,
                        attrs=attrs,
                        compression=array_compression,
                        tile_size=tile_size,
                    )
                if not ranges or ranges[-1][0] != video.video_id:
                    ranges.append([video.video_id, len(writer), len(writer)])
                writer.add(sample)
                ranges[-1][2] += 1
                counts[video.video_id] += 1
                if writer.nbytes >= target_mb * 2**20:
                    close()
        close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    _drop_unlisted(out, shards)
    chunk = {
        "schema_version": SCHEMA_VERSION,
        "layout": layout,
        "flow_method": flow_method,
        "fields": list(fields),
        "shards": shards,
        "videos": counts,
        "rejected": rejected,
    }
    _write_json_atomic(out / CHUNK_INDEX, chunk)
    return chunk


def _drop_unlisted(out: Path, shards: list[dict[str, Any]]) -> None:
    """Delete shard files of an earlier packing of the chunk that this one did not rewrite."""
    keep = {s["file"] for s in shards}
    for stale in out.glob("shard-*.h5"):
        if stale.name not in keep:
            stale.unlink()


def write_set_index(
    chunk_dirs: Sequence[str | os.PathLike],
    set_dir: str | os.PathLike,
    *,
    val_fraction: float = 0.05,
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the chunks' ``chunk.json`` and write ``set_dir/index.json`` (atomically).

    Shard paths in the index are relative to ``set_dir``; every shard entry keeps the sample
    range of each of its videos, and ``videos`` says each video's split.
    """
    root = Path(set_dir)
    chunks = []
    for folder in map(Path, chunk_dirs):
        with open(folder / CHUNK_INDEX) as handle:
            chunks.append((folder, json.load(handle)))
    if not chunks:
        raise ValueError("no chunks to index")
    first = chunks[0][1]
    for folder, chunk in chunks:
        for key in ("layout", "flow_method", "fields"):
            if chunk[key] != first[key]:
                raise ValueError(f"{folder}: {key} {chunk[key]!r} differs from {first[key]!r}")
    counts = {v: n for _, c in chunks for v, n in c["videos"].items()}
    packed = [v for v, n in counts.items() if n > 0]
    if not packed:
        raise ValueError("no video has an accepted sample")
    splits = split_videos_stable(packed, val_fraction=val_fraction, seed=seed)
    shards = []
    for folder, chunk in chunks:
        rel = os.path.relpath(folder, root)
        shards += [{**s, "file": f"{rel}/{s['file']}"} for s in chunk["shards"]]
    summary = {}
    for split in ("train", "val"):
        mine = sorted(v for v, s in splits.items() if s == split)
        summary[split] = {
            "videos": mine,
            "n_samples": sum(counts[v] for v in mine),
            "n_shards": sum(any(splits[r[0]] == split for r in s["videos"]) for s in shards),
        }
    notes = ["one video only: it is in train and the validation split is empty"]
    index = {
        "schema_version": SCHEMA_VERSION,
        "layout": first["layout"],
        "packing": "chunked",
        "flow_method": first["flow_method"],
        "fields": first["fields"],
        "config": config or {},
        "shards": shards,
        "splits": summary,
        "videos": {v: {"split": splits[v], "n_samples": counts[v]} for v in sorted(splits)},
        "totals": {
            "n_videos": len(splits),
            "n_shards": len(shards),
            "n_samples": sum(s["n_samples"] for s in shards),
            "n_rejected": sum(len(c["rejected"]) for _, c in chunks),
            "bytes": sum(s["bytes"] for s in shards),
        },
        "rejected": [r for _, c in chunks for r in c["rejected"]],
        "notes": notes if len(splits) == 1 else [],
    }
    root.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(root / INDEX_NAME, index)
    _remove_stale(root, [folder for folder, _ in chunks])
    return index


def _remove_stale(root: Path, current: Sequence[Path]) -> None:
    """Delete what the index no longer names: shards of a set packed in one job (top level)
    and chunk folders of an earlier chunk count (the set grew past a power of two)."""
    keep = {p.resolve() for p in current}
    for stale in root.glob(SHARD_PATTERN.replace("{:05d}", "*")):
        stale.unlink()
    for folder in root.iterdir():
        if folder.is_dir() and (folder / CHUNK_INDEX).exists() and folder.resolve() not in keep:
            shutil.rmtree(folder)
