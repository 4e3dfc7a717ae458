"""DataLoader workers with one thread each for torch, OpenCV and BLAS, under fork, forkserver, spawn.

Each loader worker decodes and augments one sample at a time; thread pools inside a worker only
add threads that fight the other workers for the cores (the issue-17 profile: 14 workers on 16
cores, 640 s system time and 644 M involuntary context switches for 2000 steps). So every worker
runs single-threaded:

* torch: ``torch.set_num_threads(1)`` (the DataLoader's worker loop does it too);
* BLAS / OpenMP: ``threadpoolctl.threadpool_limits(1)`` in the worker (OpenBLAS, MKL, BLIS, any
  OpenMP runtime, whichever numpy and OpenCV loaded), and the BLAS pools at 1 in the parent
  while the workers are created, so a forked worker starts with them at 1;
* OpenCV: ``cv2.setNumThreads(1)``. Called inside a *forked* worker after the parent has used
  OpenCV's pthreads pool, it deadlocks: it tears down a pool whose threads exist only in the
  parent (reproduced in tests/test_workers.py). So the parent sets its own pool to one thread
  while it starts the workers and restores it afterwards: a forked worker inherits a one-thread
  pool and the call in the worker is a no-op; a spawned or forkserver worker is a fresh process
  (its pool never ran) and also starts with ``OPENCV_FOR_THREADS_NUM=1`` from the environment.
* The environment of the workers (``OMP_NUM_THREADS`` etc. = 1) covers libraries initialised
  in a fresh interpreter before the worker's init function runs.

:class:`ThreadLimitedLoader` is a ``DataLoader`` that does all of this whenever it starts workers.
With ``reuse_worker_memory`` its workers also reuse memory instead of asking the kernel for fresh
pages per batch and sample, which was most of their system time (docs/BENCHMARKS.md, issue 17):
batches are collated into reused shared-memory buffers (``models/shm_batches.py``), and the
worker's heap keeps what it frees (:func:`keep_freed_heap`).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import torch
from threadpoolctl import threadpool_info, threadpool_limits
from torch.utils.data import DataLoader

from models.shm_batches import PooledCollate

__all__ = [
    "THREAD_ENV",
    "ThreadLimitedLoader",
    "keep_freed_heap",
    "limit_worker_threads",
    "worker_thread_counts",
]

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "OPENCV_FOR_THREADS_NUM",
)


@contextmanager
def single_threaded_children() -> Iterator[None]:
    """While the block runs, processes started from here begin with single-threaded pools.

    Sets the variables of :data:`THREAD_ENV` to 1 (read by a fresh interpreter: spawn and
    forkserver), this process's OpenCV pool and BLAS pools to one thread (inherited by a fork);
    restores all of them afterwards.
    """
    saved_env = {name: os.environ.get(name) for name in THREAD_ENV}
    saved_cv2 = cv2.getNumThreads()
    os.environ.update({name: "1" for name in THREAD_ENV})
    cv2.setNumThreads(1)
    try:
        # BLAS only: the OpenMP runtime is torch's intra-op pool in this process, left alone.
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(saved_cv2)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def limit_worker_threads(worker_id: int) -> None:
    """``worker_init_fn``: one thread for torch, BLAS / OpenMP and OpenCV in this worker.

    Safe in a forked worker only when the parent started it inside
    :func:`single_threaded_children` (then OpenCV already has one thread and is not touched).
    """
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def worker_thread_counts() -> dict[str, int]:
    """Threads this process would use: torch intra-op, OpenCV, and the largest BLAS / OpenMP pool."""
    pools = [info["num_threads"] for info in threadpool_info()]
    return {
        "torch": torch.get_num_threads(),
        "cv2": cv2.getNumThreads(),
        "blas_openmp": max(pools, default=1),
    }


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX = -1, -3, 32 << 20


def keep_freed_heap() -> bool:
    """Keep the memory this process frees in its heap for reuse (glibc); False where not applied.

    A loader worker allocates and frees the same MB-sized arrays for every sample (HDF5 windows,
    float flow, warped and flipped copies). glibc serves blocks above its (adaptive) mmap
    threshold with fresh ``mmap`` pages and trims the heap top back to the kernel on ``free``, so
    each sample faulted its memory in again, page by page (~150 minor faults per CMP 384²
    sample). Fixed thresholds (allocations up to 32 MiB from the heap, no trimming) keep a
    worker's peak heap resident instead.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return mmap_ok and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1


def _init_worker(
    user_init: Callable[[int], None] | None, reuse_memory: bool, worker_id: int
) -> None:
    limit_worker_threads(worker_id)
    if reuse_memory:
        keep_freed_heap()
    if user_init is not None:
        user_init(worker_id)


class ThreadLimitedLoader(DataLoader):
    """A ``DataLoader`` whose workers run single-threaded (see the module docstring).

    A ``worker_init_fn`` given by the caller runs after the thread limits are set.
    ``reuse_worker_memory``: workers keep their freed heap (:func:`keep_freed_heap`) and,
    without a ``collate_fn`` of the caller's, collate into
    :class:`models.shm_batches.PooledCollate` buffers (``prefetch_factor + 3`` per worker).
    """

    def __init__(
        self,
        *args: Any,
        worker_init_fn: Callable[[int], None] | None = None,
        reuse_worker_memory: bool = False,
        **kwargs: Any,
    ) -> None:
        # A partial of module-level functions: it pickles for spawn and forkserver workers.
        init = functools.partial(_init_worker, worker_init_fn, reuse_worker_memory)
        workers = kwargs.get("num_workers", 0)
        if reuse_worker_memory and workers > 0 and kwargs.get("collate_fn") is None:
            prefetch = kwargs.get("prefetch_factor") or 2
            kwargs["collate_fn"] = PooledCollate(workers, slots=prefetch + 3)
        super().__init__(*args, worker_init_fn=init, **kwargs)

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()
        if isinstance(self.collate_fn, PooledCollate):
            self.collate_fn.new_generation()  # flags for the workers about to start
        with single_threaded_children():  # the workers start in here
            return super()._get_iterator()
