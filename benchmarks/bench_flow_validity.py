"""Does the validity mask keep right flow, catch wrong flow, and keep the movers? (issue 27)

JSON to benchmarks/out/flow_validity[_<tag>].json and a printed table.

Benchmarks (each at short sides 144 and 416, pairs 0 -> g for g = 1..9):
- ``real``: `benchmarks/flow_scenes.py` clips: real frames under smooth camera motion, one or two
  pasted movers at 0.5-5 % of the short side per frame relative to the background (drawn per
  frame), exposure drift, sensor noise and an MPEG-4 round trip. One 10-frame clip per seed gives
  all nine gaps. TUNING split: bigbuckbunny.mp4 + three photographs; REPORT split: bikes.mp4,
  carphone_pristine.mp4 + three other photographs.
- ``movers``: `pipeline.synthetic_movers.render_mover_clip` with the relative motion drawn per
  frame: 0.5-5 % of the short side per frame, times the gap.
- ``stress``: the same renderer with today's per-pair draw (10-60 px relative over the pair,
  whatever the gap; up to 60 px in one frame at 144 px).
Seeds: tuning 0..n-1, report 1000.. (movers/stress); the real splits also differ in sources.

Per pixel: right = EPE <= 1 px, wrong = EPE > 3 px (EPE of the flow the stage would store).
Figures per cell and pooled over gaps: ``right_kept`` (share of right pixels marked valid; also
over pixels visible in frame g only), ``wrong_caught`` (share of wrong pixels marked invalid),
``precision`` (share of valid pixels that are right), ``mover_valid`` (share of mover pixels
valid), ``mover_valid_median_px`` (median EPE among them), ``background_epe`` (mean EPE of the
stored flow over all background pixels), ``invalid`` (share of all pixels invalid),
``pairs_with_right_point_on_mover`` (share of pairs where CMP's guidance sampler, K/G 31/75 at
144 px as the demo config, 81/200 at 416 px as the paper, puts at least one point on the mover
with right flow) and ``guidance_points_on_mover`` (share of all points on movers).

Variants: ``before`` = today's stage (dis_fast preset, absolute photometric test 8 grey levels,
window 3, margin 1, no composition); ``after`` = the schema's current defaults; others by name.
Backend flows are cached per clip, so a variant costs what its checks cost.

Run: .venv/bin/python benchmarks/bench_flow_validity.py --split report --tag after
     .venv/bin/python benchmarks/bench_flow_validity.py --split tuning --grid   (threshold search)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flow_scenes import render_real_clip  # noqa: E402
from machine_info import describe as machine_info  # noqa: E402

from pipeline.flow import make_flow_fn  # noqa: E402
from pipeline.flow.pairflow import pair_flows  # noqa: E402
from pipeline.flow.validity import check_params  # noqa: E402
from pipeline.guidance import sample_guidance  # noqa: E402
from pipeline.synthetic_movers import render_mover_clip  # noqa: E402

RIGHT_PX, WRONG_PX = 1.0, 3.0
GAPS = tuple(range(1, 10))
BEFORE = {
    "method": "dis_fast",
    "params": {},
    "checks": {
        "fb_alpha": 0.01,
        "fb_beta": 0.5,
        "photo_test": "absolute",
        "photo_threshold": 8.0,
        "photo_window": 3,
        "margin": 1,
    },  # fmt: skip
    "chain": False,
}


def schema_default() -> dict:
    """The flow stage's variant from config.yaml + the schema's defaults."""
    import yaml
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
    validate(config, str(root / "workflow/schemas/config.schema.yaml"))
    flow = config["flow"]
    return {
        "method": flow["method"],
        "params": {
            k: v for k, v in flow["backends"].get(flow["method"], {}).items() if v is not None
        },
        "checks": check_params(flow["validity"]),
        "chain": flow["chain"]["enabled"],
        "photo_factor": flow["chain"]["photo_factor"],
        "min_invalid": flow["chain"]["min_invalid"],
    }


class CachedFlow:
    """A batch flow function that remembers flows by the identity of the two frames."""

    def __init__(self, method: str, params: dict):
        self.fn = make_flow_fn(method, **params)
        self.cache: dict[tuple[int, int], np.ndarray] = {}
        self.seconds = 0.0

    def __call__(self, pairs):
        out = []
        for a, b in pairs:
            key = (id(a), id(b))
            if key not in self.cache:
                t0 = time.perf_counter()
                self.cache[key] = self.fn(a, b)
                self.seconds += time.perf_counter() - t0
            out.append(self.cache[key])
        return out


def clips(bench: str, split: str, side: int, n: int):
    """Yield (gap, frames t..t+g list, truth flow, mover, occluded) for every pair of the bench."""
    base = 0 if split == "tuning" else 1000
    if bench == "real":
        for seed in range(n):
            clip = render_real_clip(split, seed, side)
            frames = list(clip.frames)
            for g in GAPS:
                yield (seed, g, frames[: g + 1], clip.flow[g - 1], clip.mover, clip.occluded[g - 1])
        return
    for seed in range(base, base + n):
        for g in GAPS:
            if bench == "movers":
                rel = (0.005 * side * g, 0.05 * side * g)
                clip = render_mover_clip(seed=seed, gap=g, short_side=side, relative_px=rel)
            else:
                clip = render_mover_clip(seed=seed, gap=g, short_side=side)
            yield ((seed, g), g, list(clip.frames), clip.flow, clip.mover, clip.occluded)


GUIDANCE = {
    144: {"kernel_size": 31, "grid_stride": 75},
    416: {"kernel_size": 81, "grid_stride": 200},
}


def pixel_record(flow, valid, truth, mover, occluded) -> dict:
    epe = np.hypot(*(flow - truth).transpose(2, 0, 1))
    valid = np.ones(epe.shape, bool) if valid is None else valid
    side = min(epe.shape)
    guidance = GUIDANCE.get(side, {"kernel_size": 81, "grid_stride": 200})
    points = sample_guidance(flow, rng=0, valid=valid, **guidance).points
    on_mover = mover[points[:, 0], points[:, 1]] if len(points) else np.zeros(0, bool)
    right_on_mover = (
        int((on_mover & (epe[points[:, 0], points[:, 1]] <= RIGHT_PX)).sum()) if len(points) else 0
    )
    right, wrong, visible = epe <= RIGHT_PX, epe > WRONG_PX, ~occluded
    return {
        "n": epe.size,
        "right": int(right.sum()),
        "right_valid": int((right & valid).sum()),
        "right_vis": int((right & visible).sum()),
        "right_vis_valid": int((right & visible & valid).sum()),
        "wrong": int(wrong.sum()),
        "wrong_invalid": int((wrong & ~valid).sum()),
        "valid": int(valid.sum()),
        "mover": int(mover.sum()),
        "mover_valid": int((mover & valid).sum()),
        "mover_valid_epe": epe[mover & valid].astype(np.float32),
        "bg_epe_sum": float(epe[~mover].sum()),
        "bg": int((~mover).sum()),
        "points": len(points),
        "points_on_mover": int(on_mover.sum()),
        "right_points_on_mover": right_on_mover,
        "pairs_with_mover_point": int(right_on_mover > 0),
    }


def summary(records: list[dict]) -> dict:
    total = {k: sum(r[k] for r in records) for k in records[0] if k != "mover_valid_epe"}
    epes = np.concatenate([r["mover_valid_epe"] for r in records])

    def ratio(a, b):
        return round(total[a] / total[b], 5) if total[b] else None

    return {
        "right_kept": ratio("right_valid", "right"),
        "right_kept_visible": ratio("right_vis_valid", "right_vis"),
        "wrong_caught": ratio("wrong_invalid", "wrong"),
        "precision": ratio("right_valid", "valid"),
        "mover_valid": ratio("mover_valid", "mover"),
        "mover_valid_median_px": round(float(np.median(epes)), 4) if epes.size else None,
        "background_epe": round(total["bg_epe_sum"] / max(1, total["bg"]), 4),
        "invalid": round(1 - total["valid"] / total["n"], 5),
        "guidance_points_on_mover": ratio("points_on_mover", "points"),
        "pairs_with_right_point_on_mover": round(total["pairs_with_mover_point"] / len(records), 4),
        "wrong_share": round(total["wrong"] / total["n"], 5),
        "pairs": len(records),
    }


def run_bench(bench: str, split: str, side: int, n: int, variants: dict) -> dict:
    """Records per variant and gap; flows are computed once per clip and backend."""
    records = {name: {g: [] for g in GAPS} for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    backends = {}
    current = None
    for key, g, frames, truth, mover, occluded in clips(bench, split, side, n):
        if key != current:
            backends, current = {}, key
        for name, v in variants.items():
            bkey = (v["method"], json.dumps(v["params"], sort_keys=True))
            if bkey not in backends:
                backends[bkey] = CachedFlow(v["method"], v["params"])
            t0 = time.perf_counter()
            ((flow, validity),) = pair_flows(
                backends[bkey], [frames], v["checks"], v["chain"], v.get("photo_factor", 1.0),
                v.get("min_invalid", 0.0),
            )  # fmt: skip
            seconds[name] += time.perf_counter() - t0
            valid = None if validity is None else validity.valid
            records[name][g].append(pixel_record(flow, valid, truth, mover, occluded))
    out = {}
    for name in variants:
        cells = {str(g): summary(records[name][g]) for g in GAPS}
        cells["all"] = summary([r for g in GAPS for r in records[name][g]])
        cells["all"]["seconds"] = round(seconds[name], 2)
        out[name] = cells
    return out


def grid_variants(base: dict) -> dict:
    """Threshold candidates around ``base`` for the tuning split."""
    out = {}
    for thr, beta, floor, area in itertools.product(
        (0.6, 0.8, 1.0, 1.3), (0.5, 1.0, 2.0), (2.0, 4.0, 8.0), (1, 6)
    ):
        checks = {**base["checks"], "photo_threshold": thr, "fb_beta": beta,
                  "photo_floor": floor, "margin_min_area": area}  # fmt: skip
        out[f"t{thr}_b{beta}_f{floor}_a{area}"] = {**base, "checks": checks}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tuning", "report"), default="report")
    parser.add_argument("--benches", nargs="+", default=["real", "movers", "stress"])
    parser.add_argument("--sides", type=int, nargs="+", default=[144, 416])
    parser.add_argument("--clips", type=int, default=4, help="real clips per side")
    parser.add_argument("--seeds", type=int, default=2, help="mover seeds per gap and side")
    parser.add_argument("--variants", nargs="+", default=["before", "after"])
    parser.add_argument("--grid", action="store_true", help="threshold search (tuning split)")
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--raft-weights", type=Path, default=None, help="raft_small state_dict: adds variant raft"
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    started = time.perf_counter()
    named = {"before": BEFORE}
    if "after" in args.variants or args.grid:
        named["after"] = schema_default()
    variants = {name: named[name] for name in args.variants if name in named}
    skipped = {}
    if args.raft_weights is not None and args.raft_weights.is_file():
        params = {"weights": str(args.raft_weights), "device": None, "num_flow_updates": 12}
        variants["raft"] = {**schema_default(), "method": "raft_small", "params": params}
    else:
        skipped["raft"] = "no RAFT weights file (--raft-weights; never downloaded)"
        print(
            "raft skipped: no RAFT weights file given (--raft-weights; weights are never downloaded)"
        )
    if args.grid:
        variants.update(grid_variants(named["after"]))
    results: dict = {}
    for bench in args.benches:
        for side in args.sides:
            n = args.clips if bench == "real" else args.seeds
            by_variant = run_bench(bench, args.split, side, n, variants)
            for name, cells in by_variant.items():
                results.setdefault(name, {}).setdefault(bench, {})[str(side)] = cells
                a = cells["all"]
                print(f"{bench:<7}{side:>4} {name:<26} right kept {a['right_kept']:.3f} "
                      f"(vis {a['right_kept_visible']:.3f}) wrong caught {a['wrong_caught']} "
                      f"mover valid {a['mover_valid']} med {a['mover_valid_median_px']} "
                      f"bg epe {a['background_epe']} invalid {a['invalid']} mover-point pairs "
                      f"{a['pairs_with_right_point_on_mover']} {a['seconds']}s",
                      flush=True)  # fmt: skip
    report = {
        "what": "validity mask vs truth: right (EPE <= 1 px) kept, wrong (> 3 px) caught, movers",
        "split": args.split,
        "real_clips_per_side": args.clips,
        "mover_seeds_per_gap": args.seeds,
        "variants": {name: variants[name] for name in variants},
        "results": results,
        "skipped": skipped,
        "threads": 1,
        "machine": machine_info(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = (
        Path(__file__).parent
        / "out"
        / f"flow_validity_{args.split}{'_' + args.tag if args.tag else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
