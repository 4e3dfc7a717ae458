"""Flow accuracy against exact ground truth: mean end-point error per backend on synthetic clips.

JSON to benchmarks/out/flow_epe.json and a printed table.

- Data: clips from `pipeline.synthetic.render_clip` (fixed seeds, 192 x 144 by default), whose
  ground-truth forward flow t -> t+1 is exact up to bilinear resampling. Only consecutive pairs
  inside one shot are used (the pair across a cut has no correspondence); up to --pairs-per-clip
  of them per clip, evenly spaced, the same pairs for every backend.
- EPE: mean over all pixels (occluded ones included, as in the "all" column of Sintel/KITTI) of
  |flow - gt|, averaged over pairs (every pair has the same pixel count). Computed (a) on the
  float32 flow the backend returns and (b) on the same flow after a KITTI 16-bit PNG round trip
  (`pipeline.flowio`, 1/64 px codes), with their difference: the PNG must add at most half a code
  step, 1/128 px (each component is rounded by at most that, and the EPE is 1-Lipschitz in each
  pixel's vector, so the mean changes by at most the mean rounding magnitude).
- Baselines: zero flow (EPE = mean |gt|) and the ground truth itself after the PNG round trip
  (the quantisation floor).
- Speed: pairs/s = 1 / median seconds per pair of the flow call alone, one thread
  (cv2.setNumThreads(1)), after one warm-up call.
- RAFT is skipped unless --raft-weights-dir holds trained weights (weights are never downloaded;
  random weights would give a meaningless EPE).

Run: .venv/bin/python benchmarks/bench_flow_epe.py [--seeds 0 1 2] [--pairs-per-clip 20]

Movers (issue 12), `--movers`: JSON to benchmarks/out/flow_epe_movers.json. Clips from
`pipeline.synthetic_movers.render_mover_clip` (one object of 32-128 px, capped at half the short
side, moving 10-60 px relative to a panning background over the pair) at short sides 144 and 416
(4:3), gaps 1..9, --mover-pairs clips per cell (6) (seeds 0..n-1, the same for every variant). Per
cell, pixels are pooled over the cell's pairs: median and mean EPE on the object pixels of frame
0 ("mover") and on the rest ("background", occluded pixels included). When a variant marks
validity: the mover median EPE among valid pixels, the valid fractions, and the share of the
pixels with EPE > 3 px that are marked invalid ("bad caught"). Variants are backends run directly
on the pair (frame 0 -> frame gap), plus the stage's validity / large-displacement variants.

Run: .venv/bin/python benchmarks/bench_flow_epe.py --movers [--mover-pairs 6] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.flow import FLOW_METHODS, make_flow_fn  # noqa: E402
from pipeline.flow.validity import (  # noqa: E402
    chain_flows,
    check_params,
    flow_validity,
    photometric_error,
)
from pipeline.flowio import PNG_MAX_ERROR, decode_flow_png, encode_flow_png  # noqa: E402
from pipeline.synthetic import render_clip  # noqa: E402
from pipeline.synthetic_movers import render_mover_clip  # noqa: E402

OPENCV_METHODS = (
    "dis_ultrafast",
    "dis_fast",
    "dis_medium",
    "farneback",
    "deepflow",
    "dualtvl1",
    "pcaflow",
)


def within_shot_pairs(shots: np.ndarray, limit: int) -> list[int]:
    """Frame indices t of consecutive pairs (t, t+1) inside one shot, at most `limit`, spread out."""
    ts = [t for start, end in shots.tolist() for t in range(start, end - 1)]
    if len(ts) <= limit:
        return ts
    picks = np.linspace(0, len(ts) - 1, limit).round().astype(int)
    return [ts[i] for i in picks]


def end_point_error(flow: np.ndarray, gt: np.ndarray) -> float:
    return float(np.hypot(flow[..., 0] - gt[..., 0], flow[..., 1] - gt[..., 1]).mean())


def png_round_trip(flow: np.ndarray, compression: int) -> tuple[np.ndarray, int]:
    data, n_saturated = encode_flow_png(flow, compression=compression)
    decoded, _ = decode_flow_png(data)
    return decoded, n_saturated


def load_pairs(seeds: list[int], height: int, width: int, per_clip: int) -> list[dict]:
    pairs = []
    for seed in seeds:
        frames, gt = render_clip(seed=seed, height=height, width=width)
        for t in within_shot_pairs(gt["shots"], per_clip):
            pairs.append({"seed": seed, "t": t, "img0": frames[t], "img1": frames[t + 1],
                          "gt": gt["flow"][t]})  # fmt: skip
    return pairs


def bench_method(fn, pairs: list[dict], compression: int) -> dict:
    fn(pairs[0]["img0"], pairs[0]["img1"])  # warm-up: lazy initialisation, first allocations
    seconds, epe_float, epe_png, max_err, saturated = [], [], [], 0.0, 0
    for pair in pairs:
        t0 = time.perf_counter()
        flow = fn(pair["img0"], pair["img1"])
        seconds.append(time.perf_counter() - t0)
        decoded, n_sat = png_round_trip(flow, compression)
        saturated += n_sat
        finite = np.isfinite(flow)
        if finite.all():
            max_err = max(max_err, float(np.abs(decoded - flow).max()))
        epe_float.append(end_point_error(flow, pair["gt"]))
        epe_png.append(end_point_error(decoded, pair["gt"]))
    mean_float, mean_png = float(np.mean(epe_float)), float(np.mean(epe_png))
    return {
        "epe_float_px": mean_float,
        "epe_png_px": mean_png,
        "epe_added_by_png_px": mean_png - mean_float,
        "png_within_bound": bool(abs(mean_png - mean_float) <= PNG_MAX_ERROR and saturated == 0),
        "max_abs_round_trip_error_px": max_err,
        "saturated_pixels": saturated,
        "epe_median_pair_px": float(np.median(epe_float)),
        "pairs_per_s": 1.0 / statistics.median(seconds),
        "seconds_per_pair_median": statistics.median(seconds),
    }


def raft_weights(method: str, weights_dir: Path | None) -> Path | None:
    if weights_dir is None:
        return None
    path = weights_dir / f"{method}.pth"
    return path if path.is_file() else None


# --------------------------------------------------------------------------- movers (issue 12)

MOVER_SIDES = (144, 416)
MOVER_GAPS = tuple(range(1, 10))
BAD_EPE_PX = 3.0  # issue 12: of the pixels off by more than this, >= 95 % must be marked invalid


def _direct(fn):
    return lambda frames: (fn(frames[0], frames[-1]), None)


def _checked(fn, checks: dict):
    def run(frames):
        forward, backward = fn(frames[0], frames[-1]), fn(frames[-1], frames[0])
        return forward, flow_validity(frames[0], frames[-1], forward, backward, **checks).valid

    return run


def _chained(fn, checks: dict):
    """Gap-1 flows along the pair, each checked, composed with validity carried; final photo check."""

    def run(frames):
        flows, valids = [], []
        for a, b in zip(frames[:-1], frames[1:], strict=True):
            forward, backward = fn(a, b), fn(b, a)
            flows.append(forward)
            valids.append(flow_validity(a, b, forward, backward, **checks).valid)
        flow, valid = chain_flows(flows, valids)
        error = photometric_error(frames[0], frames[-1], flow, window=checks["photo_window"])
        return flow, valid & (error < checks["photo_threshold"])

    return run


def _largest_passing_gap(fn, checks: dict, floor: float):
    """Issue 12 (b): the largest gap g' <= g whose pair 0 -> g' keeps >= floor of its pixels valid
    (else gap 1); returns the flow of that pair and its gap (the ground truth is scaled to it)."""

    def run(frames):
        for gap in range(len(frames) - 1, 0, -1):
            forward, backward = fn(frames[0], frames[gap]), fn(frames[gap], frames[0])
            valid = flow_validity(frames[0], frames[gap], forward, backward, **checks).valid
            if valid.mean() >= floor or gap == 1:
                return forward, valid, gap
        raise AssertionError("unreachable")

    return run


def stage_default() -> tuple[str, dict, dict]:
    """The flow stage's backend, its parameters and validity checks as config.yaml + schema give."""
    import yaml
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
    validate(config, str(root / "workflow/schemas/config.schema.yaml"))
    flow = config["flow"]
    checks = check_params(flow["validity"]) or {}
    return flow["method"], flow["backends"].get(flow["method"], {}), checks


def mover_variants(checks: dict, gap_floor: float = 0.9) -> dict:
    """Variant name -> `fn(frames) -> (flow 0 -> last, valid or None)` on a clip's frames.

    ``stage_default`` is what the flow stage stores with today's config (backend, parameters
    and validity thresholds from config.yaml and the schema); the others use ``checks``.
    """
    method, params, default_checks = stage_default()
    variants = {"stage_default": _checked(make_flow_fn(method, **params), default_checks)}
    for method in ("dis_fast", "dis_medium", "farneback"):
        fn = make_flow_fn(method)
        variants[method] = _direct(fn)
        variants[f"{method}+checks"] = _checked(fn, checks)
        variants[f"{method}+chain"] = _chained(fn, checks)
        variants[f"{method}+largest_gap"] = _largest_passing_gap(fn, checks, gap_floor)
    for name, params in {
        "dis_fast_fs1": {"finest_scale": 1},
        "dis_fast_p4": {"patch_size": 4, "patch_stride": 2},
        "dis_fast_fs0": {"finest_scale": 0},
    }.items():
        fn = make_flow_fn("dis_fast", **params)
        variants[name] = _direct(fn)
        variants[f"{name}+checks"] = _checked(fn, checks)
    return variants


def _pool(values: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(values) if values else np.zeros(0, np.float32)


def _stat(values: np.ndarray, how) -> float | None:
    return float(how(values)) if values.size else None


def mover_errors(fn, clip) -> dict:
    """One variant on one clip: per-pixel EPE on movers / background, validity, seconds."""
    t0 = time.perf_counter()
    flow, valid, *used = fn(clip.frames)
    seconds = time.perf_counter() - t0
    gap = len(clip.frames) - 1
    used_gap = used[0] if used else gap
    truth = clip.flow * np.float32(used_gap / gap)  # linear motion: the pair 0 -> used_gap
    epe = np.hypot(*(flow - truth).transpose(2, 0, 1))
    out = {"mover": epe[clip.mover], "background": epe[~clip.mover], "seconds": seconds}
    out["gap_used"] = used_gap
    if valid is not None:
        out["mover_valid"] = epe[clip.mover & valid]
        out["bad_caught"] = ~valid[epe > BAD_EPE_PX]
        out["valid_mover"] = valid[clip.mover]
        out["valid_background"] = valid[~clip.mover]
        out["background_valid"] = epe[~clip.mover & valid]
    return out


def summarise(errors: list[dict]) -> dict:
    """Pool the pixels of several clips (one cell, or all gaps of a side) into the table's figures."""

    def pool(key: str) -> np.ndarray:
        return _pool([e[key] for e in errors if key in e])

    m, b = pool("mover"), pool("background")
    cell = {
        "mover_median_px": _stat(m, np.median),
        "mover_mean_px": _stat(m, np.mean),
        "background_mean_px": _stat(b, np.mean),
        "background_median_px": _stat(b, np.median),
        "mover_pixels": int(m.size),
        "pairs": len(errors),
        "seconds_per_pair": statistics.median(e["seconds"] for e in errors),
        "mean_gap_used": float(np.mean([e["gap_used"] for e in errors])),
    }
    if any("bad_caught" in e for e in errors):
        caught = pool("bad_caught")
        cell.update(
            mover_valid_median_px=_stat(pool("mover_valid"), np.median),
            mover_valid_fraction=_stat(pool("valid_mover"), np.mean),
            background_valid_fraction=_stat(pool("valid_background"), np.mean),
            background_valid_mean_px=_stat(pool("background_valid"), np.mean),
            bad_pixels=int(caught.size),
            bad_caught=_stat(caught, np.mean),
        )
    return cell


def run_movers(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    checks = {
        "fb_alpha": args.fb_alpha,
        "fb_beta": args.fb_beta,
        "photo_threshold": args.photo_threshold,
        "photo_window": args.photo_window,
        "margin": args.margin,
    }
    variants = mover_variants(checks, args.gap_floor)
    chosen = args.variants or [
        "dis_fast",
        "dis_medium",
        "farneback",
        "stage_default",
        "dis_fast+checks",
        "dis_medium+checks",
        "farneback+checks",
    ]
    results: dict[str, dict] = {name: {} for name in chosen}
    for side in args.sides:
        pooled: dict[str, list] = {name: [] for name in chosen}
        for gap in MOVER_GAPS:
            clips = [
                render_mover_clip(seed=s, gap=gap, short_side=side) for s in range(args.mover_pairs)
            ]
            for name in chosen:
                errors = [mover_errors(variants[name], clip) for clip in clips]
                pooled[name] += errors
                results[name].setdefault(str(side), {})[str(gap)] = summarise(errors)
        for name in chosen:
            results[name][str(side)]["all"] = summarise(pooled[name])
    print(f"mover median EPE (px) per gap; {args.mover_pairs} pairs per cell")
    gaps = " ".join(f"{'g' + str(g):>6}" for g in MOVER_GAPS)
    print(f"{'variant':<22} {'side':>4} {gaps} {'all':>6}")
    for name, by_side in results.items():
        for side, cells in by_side.items():
            total = cells["all"]
            row = " ".join(f"{cells[str(g)]['mover_median_px']:>6.1f}" for g in MOVER_GAPS)
            print(
                f"{name:<22} {side:>4} {row} {total['mover_median_px']:>6.1f}"
                f"  bg mean {total['background_mean_px']:.3f}"
            )
            if "bad_caught" in total:
                row = " ".join(
                    f"{_fmt(cells[str(g)]['mover_valid_median_px']):>6}" for g in MOVER_GAPS
                )
                print(
                    f"{'  among valid':<22} {side:>4} {row} "
                    f"{_fmt(total['mover_valid_median_px']):>6}  bad caught "
                    f"{total['bad_caught']:.3f}, valid mover {total['mover_valid_fraction']:.2f}"
                    f" bg {total['background_valid_fraction']:.3f}"
                )
    report = {
        "what": "EPE on mover and background pixels apart, per gap, short side and variant",
        "pairs_per_cell": args.mover_pairs,
        "bad_epe_px": BAD_EPE_PX,
        "checks": checks,
        "threads": 1,
        "variants": results,
        "wall_s": time.perf_counter() - started,
    }
    args.movers_out.parent.mkdir(parents=True, exist_ok=True)
    args.movers_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.movers_out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movers", action="store_true", help="the mover benchmark (issue 12)")
    parser.add_argument("--mover-pairs", type=int, default=6)
    parser.add_argument("--sides", type=int, nargs="+", default=list(MOVER_SIDES))
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--fb-alpha", type=float, default=0.01)
    parser.add_argument("--fb-beta", type=float, default=0.5)
    parser.add_argument("--photo-threshold", type=float, default=8.0)
    parser.add_argument("--photo-window", type=int, default=3)
    parser.add_argument("--gap-floor", type=float, default=0.9)
    parser.add_argument("--margin", type=int, default=1)
    parser.add_argument(
        "--movers-out", type=Path, default=Path(__file__).parent / "out" / "flow_epe_movers.json"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--pairs-per-clip", type=int, default=20)
    parser.add_argument("--png-compression", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=list(OPENCV_METHODS))
    parser.add_argument("--raft-weights-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "flow_epe.json")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if args.movers:
        run_movers(args)
        return

    started = time.perf_counter()
    pairs = load_pairs(args.seeds, args.height, args.width, args.pairs_per_clip)
    gt_png = [png_round_trip(p["gt"], args.png_compression)[0] for p in pairs]
    baselines = {
        "zero_flow": {
            "epe_float_px": float(np.mean([end_point_error(0 * p["gt"], p["gt"]) for p in pairs]))
        },  # fmt: skip
        "ground_truth_png": {
            "epe_png_px": float(
                np.mean([end_point_error(d, p["gt"]) for d, p in zip(gt_png, pairs, strict=True)])
            )
        },
    }

    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for method in args.methods + [m for m in FLOW_METHODS if m.startswith("raft")]:
        params: dict = {}
        if method.startswith("raft"):
            weights = raft_weights(method, args.raft_weights_dir)
            if weights is None:
                skipped[method] = (
                    "no trained weights offline (never downloaded; pass --raft-weights-dir); "
                    "random weights would give a meaningless EPE"
                )
                continue
            params = {"weights": str(weights), "device": "cpu"}
            import torch

            torch.set_num_threads(1)
        results[method] = bench_method(make_flow_fn(method, **params), pairs, args.png_compression)

    print(f"{len(pairs)} within-shot pairs from seeds {args.seeds} at {args.width}x{args.height}")
    print(f"{'method':<14} {'EPE float':>10} {'EPE png':>10} {'added':>10} {'pairs/s':>9}")
    print(f"{'zero flow':<14} {baselines['zero_flow']['epe_float_px']:>10.4f}")
    print(f"{'gt via png':<14} {0.0:>10.4f} {baselines['ground_truth_png']['epe_png_px']:>10.4f}")
    for method, r in results.items():
        print(
            f"{method:<14} {r['epe_float_px']:>10.4f} {r['epe_png_px']:>10.4f} "
            f"{r['epe_added_by_png_px']:>+10.5f} {r['pairs_per_s']:>9.1f}"
        )
    for method, reason in skipped.items():
        print(f"{method:<14} skipped: {reason}")
    bad = [m for m, r in results.items() if not r["png_within_bound"]]
    print(
        f"PNG adds <= 1/128 px for every backend: {not bad}" + (f" (fails: {bad})" if bad else "")
    )

    report = {
        "what": "mean end-point error vs exact synthetic ground truth, float and KITTI PNG",
        "clips": {"seeds": args.seeds, "height": args.height, "width": args.width},
        "pairs": len(pairs),
        "pairs_per_clip_max": args.pairs_per_clip,
        "pixels": "all (occluded included)",
        "png_compression": args.png_compression,
        "png_bound_px": PNG_MAX_ERROR,
        "threads": 1,
        "baselines": baselines,
        "backends": results,
        "skipped": skipped,
        "all_png_within_bound": not bad,
        "wall_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
