"""Loader workers run single-threaded (torch, OpenCV, BLAS) under fork and spawn, without the
OpenCV fork deadlock (models/workers.py)."""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from models.workers import (
    ThreadLimitedLoader,
    single_threaded_children,
    worker_thread_counts,
)


def _use_opencv_pool() -> None:
    """Run an OpenCV filter big enough to use its thread pool (the pool's threads now exist)."""
    image = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
    cv2.GaussianBlur(image, (31, 31), 5)


class ThreadCounts(Dataset):
    """Each item: the thread counts of the worker that made it, after some OpenCV work there."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, int]:
        _use_opencv_pool()
        return worker_thread_counts()


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_each_worker_reports_one_thread_per_library(context: str) -> None:
    cv2.setNumThreads(2)
    _use_opencv_pool()  # the parent's pool is live when the workers fork
    torch_threads = torch.get_num_threads()
    loader = ThreadLimitedLoader(
        ThreadCounts(),
        batch_size=None,
        num_workers=2,
        multiprocessing_context=context,
        timeout=120,  # a deadlocked worker fails the test instead of hanging it
    )
    reports = list(loader)
    assert len(reports) == 4
    for report in reports:
        assert {k: int(v) for k, v in report.items()} == {"torch": 1, "cv2": 1, "blas_openmp": 1}
    # The parent gets its own settings back.
    assert cv2.getNumThreads() == 2
    assert torch.get_num_threads() == torch_threads


def _set_threads_in_child(queue: mp.Queue) -> None:
    cv2.setNumThreads(1)
    _use_opencv_pool()
    queue.put(cv2.getNumThreads())


def _forked_children_that_hang(attempts: int, prepared: bool) -> int:
    """Fork ``attempts`` children right after OpenCV work here; count those that hang."""
    ctx = mp.get_context("fork")
    hung = 0
    for _ in range(attempts):
        _use_opencv_pool()
        queue = ctx.Queue()
        child = ctx.Process(target=_set_threads_in_child, args=(queue,))
        if prepared:
            with single_threaded_children():
                child.start()
        else:
            child.start()
        child.join(10)
        if child.is_alive():
            hung += 1
            child.kill()
            child.join()
        else:
            assert queue.get(timeout=5) == 1
    return hung


@pytest.mark.slow
def test_opencv_threads_set_in_a_forked_child_never_hang_when_the_parent_prepares_it() -> None:
    # Unprepared, cv2.setNumThreads in such a child deadlocks in some of the forks (a race with
    # the state of the parent's pool threads at fork time; docs/BENCHMARKS.md has the counts).
    cv2.setNumThreads(2)
    assert _forked_children_that_hang(8, prepared=True) == 0
    assert cv2.getNumThreads() == 2


_PAGE_FAULTS_SCRIPT = """
import ctypes, json, resource
import numpy as np
from models.workers import keep_freed_heap

libc = ctypes.CDLL(None)
libc.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD at glibc's initial values
libc.mallopt(-1, 128 << 10)

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for size in (1 << 20, 3 << 20, 1 << 20):  # a sample's MB-sized temporaries, freed
        array = np.ones(size // 4, np.float32)
        del array
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = [faults() for _ in range(4)]
kept = keep_freed_heap()
reused = [faults() for _ in range(4)]
print(json.dumps([default, kept, reused]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc mallopt")
def test_a_worker_keeping_its_freed_heap_stops_faulting_memory_back_in() -> None:
    # a fresh interpreter: a child forked from the long-lived test process inherits whatever its
    # heap and allocator state is by then (in CI the "default" rounds faulted 1072, 1, 0, 0)
    proc = subprocess.run(
        [sys.executable, "-c", _PAGE_FAULTS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    default, kept, reused = json.loads(proc.stdout.strip().splitlines()[-1])
    assert kept
    assert min(default) > 1000  # 5 MiB faulted in again every round (1280 pages)
    assert max(reused[1:]) < 50  # after the first round, served from the kept heap
