"""Chunked jobs: one Snakemake job runs a per-video stage driver over every video of a chunk.

ARCHITECTURE.md, "Jobs per chunk of videos": the DAG holds one job per chunk of videos and stage,
not one per video, so a 100k-video set stays a few thousand jobs; every video keeps its own output
files where docs/CONTRACTS.md puts them, written by the unchanged per-video driver.

Chunk membership is a hash of the video id modulo a power-of-two chunk count, the smallest one that
keeps the expected chunk at or below ``chunk_size`` videos. An added video lands in one chunk and
leaves every other chunk's membership as it was (only when the set grows past a power of two does
the count double and the chunks change names). Chunks are uneven (binomial sizes around the mean).

Each chunk job writes a manifest TSV (``video_id``, one column per per-video output, ``bytes``
written for the video, ``seconds``), atomically, after every video's outputs exist; per-set jobs
read the manifests instead of one path per video (``python -m pipeline --expand-chunks COLUMN``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline import atomic

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".chunk.tsv"
# placeholders of the per-video argument template, filled from each --video JSON object
PLACEHOLDER_RE = re.compile(r"\{(vid|path|relpath)\}")


def chunk_count(n_videos: int, chunk_size: int) -> int:
    """Smallest power of two ``m`` with ``n_videos / m <= chunk_size`` (at least 1)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    m = 1
    while n_videos > m * chunk_size:
        m *= 2
    return m


def chunk_index(video_id: str, n_chunks: int) -> int:
    """The chunk of a video: its id's sha1 modulo the chunk count (stable across runs)."""
    return int(hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:12], 16) % n_chunks


def chunk_name(index: int, n_chunks: int) -> str:
    return f"{index:04d}of{n_chunks:04d}"


def assign_chunks(video_ids: Iterable[str], chunk_size: int) -> dict[str, list[str]]:
    """Chunk name -> its video ids (in the given order); chunks without a video are left out."""
    ids = list(video_ids)
    n = chunk_count(len(ids), chunk_size)
    chunks: dict[int, list[str]] = {}
    for vid in ids:
        chunks.setdefault(chunk_index(vid, n), []).append(vid)
    return {chunk_name(k, n): chunks[k] for k in sorted(chunks)}


def split_by_size(rows: Sequence[list[str]], limit: int) -> list[list[list[str]]]:
    """Consecutive groups of rows whose JSON stays under ``limit`` bytes (one row at least)."""
    parts: list[list[list[str]]] = [[]]
    size = 0
    for row in rows:
        n = len(json.dumps(row, separators=(",", ":"))) + 1
        if parts[-1] and size + n > limit:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += n
    return parts


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    return atomic.read_tsv(path)


def manifest_rows(paths: Sequence[str | Path], column: str) -> list[dict[str, str]]:
    """The rows of all ``paths`` sorted by video id (a per-set job sees the same order whatever
    the chunk size); every row must have ``column``."""
    rows = [row for path in paths for row in read_manifest(path)]
    if any(column not in r for r in rows):
        raise ValueError(f"chunk manifests have no column {column!r}")
    return sorted(rows, key=lambda r: r["video_id"])


def expand_manifests(argv: Sequence[str], column: str) -> list[str]:
    """Replace the ``*.chunk.tsv`` arguments by the ``column`` values of their rows
    (:func:`manifest_rows`), where the first of them stood."""
    out: list[str] = []
    manifests: list[str] = []
    insert_at = None
    for arg in argv:
        if arg.endswith(MANIFEST_SUFFIX) and not arg.startswith("-"):
            insert_at = len(out) if insert_at is None else insert_at
            manifests.append(arg)
        else:
            out.append(arg)
    if insert_at is None:
        return out
    values = [r[column] for r in manifest_rows(manifests, column)]
    return out[:insert_at] + values + out[insert_at:]


def fill_template(template: Sequence[str], video: dict[str, str]) -> list[str]:
    """The per-video driver's arguments: ``{vid}``, ``{path}``, ``{relpath}`` filled in."""
    return [PLACEHOLDER_RE.sub(lambda m: video[m.group(1)], token) for token in template]


def option_value(args: Sequence[str], name: str) -> str:
    """Value of ``--name=value`` in ``args`` (the template writes outputs in that form)."""
    prefix = f"--{name}="
    for token in args:
        if token.startswith(prefix):
            return token[len(prefix) :]
    raise ValueError(f"the per-video arguments have no --{name}=...")


def output_bytes(paths: Sequence[str], video_id: str) -> int:
    """Bytes a video's outputs take: a folder named after the video counts whole, else the file."""
    seen: set[Path] = set()
    total = 0
    for p in map(Path, paths):
        owned = p.parent if p.parent.name == video_id else p
        if owned in seen:
            continue
        seen.add(owned)
        files = owned.rglob("*") if owned.is_dir() else [owned]
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total


def run_chunk(
    stage: str,
    videos: Sequence[dict[str, str]],
    template: Sequence[str],
    outputs: Sequence[str],
    manifest: str,
) -> int:
    """Run ``python -m pipeline <stage>`` in-process for each video; then write the manifest."""
    from pipeline.__main__ import run_stage

    rows = []
    for i, video in enumerate(videos):
        args = fill_template(template, video)
        log.info("chunk video %d/%d: %s", i + 1, len(videos), video["vid"])
        start = time.perf_counter()
        code = run_stage(stage, args)
        if code != 0:
            log.error("%s failed on video %s (exit %d)", stage, video["vid"], code)
            return code
        paths = [option_value(args, name) for name in outputs]
        absent = [p for p in paths if not Path(p).exists()]
        if absent:
            raise FileNotFoundError(f"{stage} wrote no {absent[0]} for video {video['vid']}")
        seconds = time.perf_counter() - start
        rows.append([video["vid"], *paths, output_bytes(paths, video["vid"]), f"{seconds:.3f}"])
    atomic.write_tsv(manifest, ["video_id", *outputs, "bytes", "seconds"], rows)
    return 0


def stage_usage(manifests: dict[str, Sequence[str]]) -> list[list[object]]:
    """One row per stage: videos, bytes written, mean bytes per video, seconds, from the
    stage's chunk manifests."""
    rows: list[list[object]] = []
    for stage, paths in manifests.items():
        table = [r for p in paths for r in read_manifest(p)]
        total = sum(int(r["bytes"]) for r in table)
        seconds = sum(float(r["seconds"]) for r in table)
        mean = round(total / len(table)) if table else 0
        rows.append([stage, len(table), total, mean, round(seconds, 3)])
    return rows


def add_usage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stage",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "MANIFEST"),
        help="a stage's name and its chunk manifests (repeat per stage)",
    )
    p.add_argument("--out", required=True, help="TSV: stage, videos, bytes, ...")


def run_usage(args: argparse.Namespace) -> int:
    usage = stage_usage({name: paths for name, *paths in args.stage})
    header = ["stage", "videos", "bytes", "bytes_per_video", "seconds"]
    atomic.write_tsv(args.out, header, usage)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", required=True, help="per-video stage to run (python -m pipeline)")
    p.add_argument(
        "--videos",
        action="append",
        default=[],
        type=json.loads,
        help="videos of the chunk as a JSON list of [video_id, path, relpath] (repeatable)",
    )
    p.add_argument(
        "--outputs", nargs="+", required=True, help="per-video options naming output files"
    )
    p.add_argument("--manifest", required=True, help="chunk manifest TSV to write")
    p.add_argument(
        "template",
        nargs=argparse.REMAINDER,
        help="after --: the stage's arguments, {vid} / {path} / {relpath} filled per video",
    )


def run(args: argparse.Namespace) -> int:
    template = args.template[1:] if args.template[:1] == ["--"] else args.template
    videos = [
        dict(zip(("vid", "path", "relpath"), row, strict=True))
        for part in args.videos
        for row in part
    ]
    return run_chunk(args.stage, videos, template, args.outputs, args.manifest)
