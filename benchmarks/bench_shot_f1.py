"""Shot-cut F1 of each detector on the synthetic set against its true cuts (±2 frames).

Renders the embedded default's synthetic clips in memory (pipeline.synthetic, seeds as the
synthesize stage derives them) and scores every shot detector. Writes benchmarks/out/shot_f1.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.shots import cut_f1, detect_cuts, scores_from_counts
from pipeline.stages.synthesize import video_seed
from pipeline.synthetic import render_clip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--seed", type=int, default=0, help="the set's seed")
    p.add_argument("--methods", nargs="+", default=["content", "kts"])
    p.add_argument("--out", default="benchmarks/out/shot_f1.json")
    args = p.parse_args(argv)
    clips = [render_clip(seed=video_seed(args.seed, i)) for i in range(args.videos)]
    result = {}
    for method in args.methods:
        totals = {"tp": 0, "fp": 0, "fn": 0}
        for frames, gt in clips:
            score = cut_f1(detect_cuts(iter(frames), method=method), gt["cuts"].tolist())
            for k in totals:
                totals[k] += score[k]
        result[method] = scores = scores_from_counts(totals["tp"], totals["fp"], totals["fn"])
        print(f"{method:10s} P {scores['precision']:.3f} R {scores['recall']:.3f} "
              f"F1 {scores['f1']:.3f} {totals}")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"videos": args.videos, "tolerance": 2, **result}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
