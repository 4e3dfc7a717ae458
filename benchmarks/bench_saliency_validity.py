"""uNLC masks with and without the flow validity checks in the motion saliency (issue 12).

JSON to benchmarks/out/saliency_validity.json and a printed table.

- Data: the first shot of `pipeline.synthetic.render_clip` clips (192 x 144, seeds --seeds), with
  exact instance masks; uNLC (`pipeline.unlc.unlc_shot`, schema defaults except n_segments 200, as
  the embedded demo config) on the whole shot.
- Flow: DIS fast with finest scale 0, as the masks stage runs it on uNLC's 100 x 100 frames
  (masks.dis_finest_scale).
- Two runs per shot: ``flow_checks`` off (the reference) and on (the flow stage's validity
  defaults: forward-backward + photometric tests, 1 px margin; invalid pixels skipped).
- Score: binary mask soft > 0.7 against the union of the moving objects, per frame
  (`pipeline.evaluate.mask_scores`), aggregated by `pipeline.evaluate.aggregate_scores` (percent).

Run: .venv/bin/python benchmarks/bench_saliency_validity.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluate import aggregate_scores, mask_scores  # noqa: E402
from pipeline.flow import make_flow_fn  # noqa: E402
from pipeline.synthetic import render_clip  # noqa: E402
from pipeline.unlc import unlc_shot  # noqa: E402

CHECKS = {"fb_alpha": 0.01, "fb_beta": 0.5, "photo_threshold": 8.0, "photo_window": 3, "margin": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "out" / "saliency_validity.json"
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    started = time.perf_counter()
    flow_fn = make_flow_fn("dis_fast", finest_scale=0)
    counts: dict[str, list[dict]] = {"off": [], "on": []}
    seconds: dict[str, float] = {"off": 0.0, "on": 0.0}
    for seed in args.seeds:
        frames, gt = render_clip(seed=seed)
        start, end = (int(v) for v in gt["shots"][0])
        truth = gt["instances"][start:end] > 0
        for name, checks in (("off", None), ("on", CHECKS)):
            t0 = time.perf_counter()
            result = unlc_shot(frames[start:end], flow_fn, n_segments=200, flow_checks=checks)
            seconds[name] += time.perf_counter() - t0
            for soft, mask in zip(result.soft, truth, strict=True):
                counts[name].append(mask_scores(soft > 0.7, mask))
    report = {
        "what": "uNLC mask quality with flow validity in the saliency off / on",
        "seeds": args.seeds,
        "frames": len(counts["off"]),
        "checks": CHECKS,
        "scores": {name: aggregate_scores(c) for name, c in counts.items()},
        "seconds": seconds,
        "wall_s": time.perf_counter() - started,
    }
    for name, s in report["scores"].items():
        print(
            f"checks {name:<3}: mean IoU {s['mean_iou']:.1f}, pooled IoU {s['pooled_iou']:.1f} "
            f"precision {s['pooled_precision']:.1f} recall {s['pooled_recall']:.1f} "
            f"({seconds[name]:.1f} s)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
