"""Dry-run (``snakemake -n``) time and memory of the whole DAG for sets of empty video files.

Issue 18: the DAG must stay small at 100k videos (jobs per chunk of videos, ARCHITECTURE.md).
Each case builds ``n`` empty ``.mp4`` files in a temporary folder, points one directory set at it
and times ``snakemake -n`` (default target: every stage down to the benchmark) in a fresh process;
peak resident memory of the child is read from ``getrusage``. Writes benchmarks/out/dag.json.

    python benchmarks/bench_dag.py --videos 10000 100000 --chunk-sizes 100 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def make_videos(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"clip_{i:07d}.mp4").touch()


def dry_run(work: Path, videos: Path, chunk_size: int) -> dict:
    cfg = work / "bench-config.yaml"
    sets = {"bench": {"path": str(videos), "glob": ["*.mp4"], "chunk_size": chunk_size}}
    cfg.write_text(yaml.safe_dump({"video_sets": sets, "only_sets": ["bench"]}))
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        "-s", str(REPO / "Snakefile"), "-d", str(work), "--configfile", str(cfg),
        "--cores", "2", "-n",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    total = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, re.MULTILINE)
    return {
        "seconds": round(seconds, 2),
        # CPU seconds of the dry run: on a loaded shared machine wall time includes waiting
        "cpu_seconds": round(cpu, 2),
        "jobs": int(total.group(1)) if total else None,
        # ru_maxrss of children is a running maximum: exact only when it grew in this run
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1)
        if after.ru_maxrss > before.ru_maxrss
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--chunk-sizes", type=int, nargs="+", default=[100])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks/out/dag.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        for n in args.videos:
            videos = Path(tmp) / f"videos-{n}"
            make_videos(videos, n)
            runs: dict[int, list[dict]] = {c: [] for c in args.chunk_sizes}
            for _ in range(args.repeats):  # alternate the chunk sizes within each repeat
                for c in args.chunk_sizes:
                    work = Path(tmp) / f"work-{n}-{c}"
                    work.mkdir(exist_ok=True)
                    runs[c].append(dry_run(work, videos, c))
                    print(n, c, runs[c][-1], flush=True)
            for c, rs in runs.items():
                results.append(
                    {
                        "videos": n,
                        "chunk_size": c,
                        "jobs": rs[0]["jobs"],
                        "median_seconds": statistics.median(r["seconds"] for r in rs),
                        "seconds": [r["seconds"] for r in rs],
                        "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                        "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in rs) or None,
                    }
                )
    out = {
        "benchmark": "snakemake -n of the whole DAG on empty video files",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        # 1/5/15-minute load averages before and after: how quiet the machine was
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
