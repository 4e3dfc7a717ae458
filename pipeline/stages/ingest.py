"""Ingest stage: probe one video by decoding it and record what it is, or why it is rejected.

Writes ``results/{set}/videos/{video_id}.json``; a rejected video gets ``status: rejected`` and a
one-line ``reason`` so later stages skip it and the DAG still completes. ``write_manifest`` gathers
the per-video records of a set into ``videos.tsv`` (id ↔ original path) and ``rejected.tsv``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline import atomic
from pipeline.video import VideoError, probe_video

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "video_id",
    "status",
    "relpath",
    "path",
    "frames",
    "fps",
    "width",
    "height",
    "duration_s",
    "file_bytes",
    "sha256",
]


def ingest_video(
    video_path: str,
    *,
    video_id: str,
    video_set: str,
    relpath: str,
    min_frames: int = 2,
    max_missing_fraction: float = 0.05,
) -> dict:
    """Probe record of one video: ``status`` ok with its properties, or rejected with a reason."""
    record: dict = {
        "video_id": video_id,
        "set": video_set,
        "relpath": relpath,
        "path": str(Path(video_path).absolute()),
    }
    try:
        record.update(
            status="ok",
            reason="",
            **probe_video(
                video_path, min_frames=min_frames, max_missing_fraction=max_missing_fraction
            ),
        )
    except VideoError as err:
        record.update(status="rejected", reason=str(err))
    except OSError as err:  # unreadable, vanished mid-read, I/O error
        record.update(status="rejected", reason=f"cannot read file: {err.strerror or err}")
    return record


def write_manifest(records: list[dict], videos_tsv: str, rejected_tsv: str) -> None:
    rows = [[r.get(c, "") for c in MANIFEST_COLUMNS] for r in records]
    atomic.write_tsv(videos_tsv, MANIFEST_COLUMNS, rows)
    rejected = [
        [r["video_id"], "ingest", r["relpath"], r["reason"]] for r in records if r["status"] != "ok"
    ]
    atomic.write_tsv(rejected_tsv, ["video_id", "stage", "relpath", "reason"], rejected)


def load_record(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="video file to probe")
    p.add_argument("--video-id", required=True)
    p.add_argument("--set", required=True, dest="video_set")
    p.add_argument("--relpath", required=True)
    p.add_argument("--params", required=True, help="the config's ingest section as JSON")
    p.add_argument("--out", required=True, help="JSON record to write")


def run(args: argparse.Namespace) -> int:
    record = ingest_video(
        args.video,
        video_id=args.video_id,
        video_set=args.video_set,
        relpath=args.relpath,
        **json.loads(args.params),
    )
    if record["status"] != "ok":
        log.warning("rejected %s: %s", args.relpath, record["reason"])
    else:
        log.info(
            "%s: %d frames %dx%d", args.relpath, record["frames"], record["width"], record["height"]
        )
    atomic.write_json(args.out, record)
    return 0


def add_manifest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("records", nargs="*", help="per-video JSON records")
    p.add_argument("--videos-tsv", required=True)
    p.add_argument("--rejected-tsv", required=True)


def run_manifest(args: argparse.Namespace) -> int:
    write_manifest([load_record(p) for p in args.records], args.videos_tsv, args.rejected_tsv)
    return 0
