"""What does a click on a CMP model buy? Latency of the serve API and clicks-to-IoU (issue 29).

1. Latency (``--latency-run``, the ResNet-18 demo run, CPU): one propagation update on a 384²
   image, median of ``--repeats``: *cold* (a new image: image encoder + sparse encoder + decoder)
   and *update* (the next arrow on the same image: the image features are cached, so sparse
   encoder + decoder); one annotation update (four guidance copies, cached features).
2. Clicks-to-IoU on the synthetic set's ground-truth object masks (``video_NNN.gt.npz``
   ``instances``) for the frames of the shard set's validation split (videos no run trained on):
   every object covering at least ``--min-area`` of its frame; simulated clicks at the centre of
   the largest error region (``models.serve.clicks``); mean IoU after 1, 3, 5 clicks for each
   ``--run`` (CMP annotation, the authors' demo: four copies, |flow| fused, threshold 0.5), for
   the demo run's network randomly initialised (torchvision/Xavier init: the authors' init gives
   exactly zero flow before training, so empty masks) and for the geodesic flood from the clicks.

    python benchmarks/bench_serve.py --run demo=results/pretrain/cmp/demo \\
        --run long=results/pretrain/cmp/long --out benchmarks/out/serve.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import describe  # noqa: E402

from models.methods.cmp import CMPModule  # noqa: E402
from models.serve.clicks import geodesic_mask, simulate_clicks  # noqa: E402
from models.serve.engine import CMPEngine  # noqa: E402
from models.serve.run import load_cmp_run  # noqa: E402
from pipeline.shards.reader import ShardReader, read_index  # noqa: E402

CLICKS = (1, 3, 5)


def targets(index_path: Path, source: Path, min_area: float) -> list[dict]:
    """(frame, object mask) pairs of the validation split, with the object's video / t / id."""
    root = index_path.parent
    out = []
    for entry in read_index(index_path)["shards"]:
        if entry["split"] != "val":
            continue
        reader = ShardReader(root / entry["file"])
        for i in range(int(entry["n_samples"])):
            sample = reader.read_sample(i, fields=("image",))
            name = re.sub(r"\.[^.]+-[0-9a-f]+$", "", sample["video_id"])
            instances = np.load(source / f"{name}.gt.npz")["instances"][sample["t"]]
            if instances.shape != sample["image"].shape[:2]:
                raise ValueError(f"{name} t={sample['t']}: gt {instances.shape} vs frame")
            for k in np.unique(instances[instances > 0]):
                mask = instances == k
                if mask.mean() >= min_area:
                    out.append(
                        {
                            "image": sample["image"],
                            "gt": mask,
                            "video": name,
                            "t": int(sample["t"]),
                            "object": int(k),
                        }
                    )
        reader.close()
    return out


def clicks_to_iou(segmenter_of, objects: list[dict], n_clicks: int) -> dict:
    """Mean IoU after each click over the objects, and seconds per click."""
    curves, start = [], time.perf_counter()
    for obj in objects:
        curves.append(simulate_clicks(segmenter_of(obj["image"]), obj["gt"], n_clicks))
    seconds = (time.perf_counter() - start) / (len(objects) * n_clicks)
    mean = np.mean(curves, axis=0)
    return {
        "mean_iou": {str(k): round(float(mean[k - 1]), 4) for k in CLICKS if k <= n_clicks},
        "per_object": [[round(s, 4) for s in c] for c in curves],
        "s_per_click": round(seconds, 4),
    }


def cmp_segmenter(engine: CMPEngine):
    return lambda image: lambda pos, neg: engine.annotate(image, pos, neg).mask


def _timed(work) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def latency(engine: CMPEngine, image: np.ndarray, repeats: int, threads: int) -> dict:
    """Median wall and CPU seconds of a cold propagation, an update and an annotation update
    at 384², with ``threads`` torch threads. On a loaded machine the wall time includes waiting
    for a core; the process CPU time (all threads) does not, and with one thread it is what the
    update costs on a quiet core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    frame = cv2.resize(image, (384, 384), interpolation=cv2.INTER_LINEAR)
    arrows = [(150, 200, 12.0, -4.0)]
    times: dict[str, list[tuple[float, float]]] = {"cold": [], "update": [], "annotate": []}
    engine.propagate(frame, arrows)  # warm-up (allocator, kernels)
    for r in range(repeats):
        shifted = np.roll(frame, r + 1, axis=1)  # a new image each time: no cached features
        times["cold"].append(_timed(lambda im=shifted: engine.propagate(im, arrows)))
        more = arrows + [(60 + r, 80, 0.0, 0.0)]
        times["update"].append(_timed(lambda im=shifted, a=more: engine.propagate(im, a)))
        annotate = lambda im=shifted: engine.annotate(im, [(150, 200)], [(60, 80)])  # noqa: E731
        times["annotate"].append(_timed(annotate))
    torch.set_num_threads(previous)
    summary = {
        name: {
            "median_wall_s": round(statistics.median(w for w, _ in v), 4),
            "median_cpu_s": round(statistics.median(c for _, c in v), 4),
            "wall_s": [round(w, 4) for w, _ in v],
            "cpu_s": [round(c, 4) for _, c in v],
        }
        for name, v in times.items()
    }
    return summary | {"size": [384, 384], "threads": threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="name=run folder")
    parser.add_argument(
        "--index", type=Path, default=Path("results/synthetic/shards-dis_fast/index.json")
    )
    parser.add_argument("--source", type=Path, default=Path("results/synthetic/source"))
    parser.add_argument("--min-area", type=float, default=0.005)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the latency")
    parser.add_argument("--max-objects", type=int, default=0, help="0: all; else evenly spaced")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--no-references", action="store_true", help="skip random / geodesic")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/serve.json"))
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    objects = targets(args.index, args.source, args.min_area)
    if 0 < args.max_objects < len(objects):
        picks = np.linspace(0, len(objects) - 1, args.max_objects).round().astype(int)
        objects = [objects[i] for i in picks]
    report: dict = {
        "machine": describe(),
        "objects": len(objects),
        "clicks": args.clicks,
        "frames": len({(o["video"], o["t"]) for o in objects}),
        "methods": {},
    }
    first = None
    for name, folder in runs.items():
        run = load_cmp_run(folder, "cpu")
        first = first or run
        engine = CMPEngine.from_run(run)
        if name == next(iter(runs)) and not args.no_latency:
            measured = latency(engine, objects[0]["image"], args.repeats, args.threads)
            report["latency"] = {"run": folder} | measured
            print("latency", {k: v for k, v in measured.items() if k != "size"}, flush=True)
        result = clicks_to_iou(cmp_segmenter(engine), objects, args.clicks)
        report["methods"][name] = result | {"run": folder, "step": run.global_step}
        print(name, result["mean_iou"], flush=True)
    if args.no_references:
        first = None
    if first is not None:
        torch.manual_seed(args.seed)
        hparams = dict(first.hparams) | {"init": "xavier"}
        random_model = CMPModule(**hparams).model.eval()
        result = clicks_to_iou(
            cmp_segmenter(CMPEngine.from_model(random_model, "cpu")), objects, args.clicks
        )
        report["methods"]["random_init"] = result | {"init": "xavier", "seed": args.seed}
        print("random_init", result["mean_iou"], flush=True)
    if not args.no_references:
        geodesic = clicks_to_iou(
            lambda image: lambda p, n: geodesic_mask(image, p, n), objects, args.clicks
        )
        report["methods"]["geodesic"] = geodesic
        print("geodesic", geodesic["mean_iou"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
