"""Parts 3 and 4 of ``benchmarks/bench_loader.py`` (``--part threads``, ``--part sys``).

Part 3: the HDF5 CMP loader as training used it (a plain ``DataLoader``, the workers' torch /
OpenCV / BLAS pools at their defaults) against ``models.workers.ThreadLimitedLoader`` (one thread
each), fork, 1, 2 and 4 workers, A/B alternating; part 4 (issue 17): the workers' system time with
the plain ``DataLoader``, ``ThreadLimitedLoader`` with the default collate, and with
``reuse_worker_memory`` (``models/shm_batches.py``). The methods and what each figure means are in
``bench_loader``'s docstring; results go to benchmarks/out/loader_threads.json and loader_sys.json.
"""

from __future__ import annotations

import argparse
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
from bench_loader_data import BATCH, CROP, cmp_shard_dataset
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset, get_worker_info

from models.workers import ThreadLimitedLoader

OUT_THREADS = Path(__file__).resolve().parent / "out" / "loader_threads.json"
OUT_SYS = OUT_THREADS.with_name("loader_sys.json")
THREAD_WORKERS = (1, 2, 4)
WARM_UP_BATCHES = 2  # per worker: sys_run leaves worker start-up and the first batches untimed


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
    for _ in range(WARM_UP_BATCHES * workers):
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
    # fewer samples than sys_run's warm-up at the most workers would leave none to time
    warm_up = WARM_UP_BATCHES * max(THREAD_WORKERS) * BATCH
    if n_samples <= warm_up:
        raise ValueError(
            f"--samples must be above {warm_up} ({WARM_UP_BATCHES} warm-up batches per worker)"
        )
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
