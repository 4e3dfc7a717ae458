"""Loader batches collated into reusable shared-memory buffers: the workers' system time (issue 17).

Where a DataLoader worker's system time went (CMP view, 384² crops, batch 8, 2 fork workers;
``perf record -g`` of the workers and ``benchmarks/bench_loader.py --part sys``): about 70 % in
handing each batch to the main process. torch's default collate puts every batch into a *fresh*
shared-memory file (``shm_open``, ``posix_fallocate`` allocating and zeroing every page, then
one page fault per 4 KiB page as ``torch.stack`` copies into it, ``munmap`` / ``unlink`` after):
~1.8 MB and ~430 pages per sample. The rest is the sample's own work (HDF5 ``pread`` of the
tiles, page faults of numpy temporaries).

Here each worker keeps a few buffers (``slots``) and collates a batch into one whose previous
batch the receiving process has released, so a buffer's pages are allocated and mapped once and
then reused. The batch is the same as ``default_collate``'s: a mapping of stacked tensors, each a
view of the slot's storage.

How a slot is known to be free: the loader (main process) creates one int32 flag per
(worker, slot) in shared memory before its workers start (a *generation*: new workers, new
flags). A worker claims a free slot (flag 0 -> 1) and its storage pickles with a reducer that
names (token, worker, slot) besides torch's file descriptor; the process that unpickles the
batch (the main thread, or the pin-memory thread) rebuilds the storage exactly as torch does and
keeps a weak reference to it. When no tensor in that process uses the storage any more
(``StorageWeakRef.expired``), the next arriving batch clears the flag. Nothing is reused while
the main process holds any tensor of the batch; a slot whose batch never arrives stays claimed.

Falls back to ``default_collate`` (fresh shared memory, as before) outside a worker, under the
``file_system`` sharing strategy, for anything but a mapping of equal-shaped tensors, and when
all of a worker's slots are in use (e.g. a consumer keeping every batch).
Limit: a batch that the main process forwards to *another* process is released when the main
process drops it; do not forward loader batches between processes with this on
(``data.reuse_worker_memory: false``).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np
import torch
from torch.multiprocessing import get_sharing_strategy
from torch.multiprocessing.reductions import StorageWeakRef, reduce_storage
from torch.utils.data import default_collate, get_worker_info

__all__ = ["PooledCollate", "outstanding_batches"]

_ALIGN = 64  # byte alignment of each key's block inside a slot
# Receiving process: flags per generation token; weak references to the batches it holds.
_LOCK = threading.Lock()
_FLAGS: dict[int, np.ndarray] = {}
_OUTSTANDING: list[tuple[StorageWeakRef, int, int, int]] = []
# Worker process: storage data pointer -> (token, worker, slot) of its pooled slots.
_POOLED: dict[int, tuple[int, int, int]] = {}
_REDUCER_SET = False


def outstanding_batches() -> int:
    """Pooled batches this process has received and not yet released (for tests and benchmarks)."""
    with _LOCK:
        _release_expired()
        return len(_OUTSTANDING)


def _release_expired() -> None:
    """Clear the flag of every received batch no tensor of which is alive here (lock held)."""
    alive = []
    for ref, token, worker, slot in _OUTSTANDING:
        if not ref.expired():
            alive.append((ref, token, worker, slot))
        elif token in _FLAGS:  # an older generation's flags are gone with its workers
            _FLAGS[token][worker, slot] = 0
    _OUTSTANDING[:] = alive


def _rebuild_pooled(rebuild: Any, args: tuple, token: int, worker: int, slot: int) -> Any:
    """Unpickle a pooled slot's storage as torch would, and track it until it is released."""
    storage = rebuild(*args)
    with _LOCK:
        _release_expired()
        _OUTSTANDING.append((StorageWeakRef(storage), token, worker, slot))
    return storage


def _reduce_storage(storage: torch.UntypedStorage) -> tuple:
    rebuild, args = reduce_storage(storage)
    owner = _POOLED.get(storage.data_ptr())
    if owner is None:
        return rebuild, args
    return _rebuild_pooled, (rebuild, args, *owner)


def _layout(
    batch: Sequence[Any],
) -> tuple[list[tuple[str, torch.dtype, tuple[int, ...], int]], int] | None:
    """(key, dtype, shape, byte offset) per key of a batch of equal-shaped tensor mappings, and
    the bytes they take in all; None for any other batch."""
    first = batch[0]
    if not isinstance(first, Mapping) or not first:
        return None
    layout, offset = [], 0
    for key, elem in first.items():
        if not isinstance(elem, torch.Tensor) or elem.device.type != "cpu" or elem.is_sparse:
            return None
        for sample in batch:
            other = sample.get(key) if isinstance(sample, Mapping) else None
            if not isinstance(other, torch.Tensor) or other.shape != elem.shape:
                return None
            if other.dtype != elem.dtype or other.requires_grad:
                return None
        offset = -(-offset // _ALIGN) * _ALIGN
        layout.append((key, elem.dtype, tuple(elem.shape), offset))
        offset += len(batch) * elem.numel() * elem.element_size()
    return layout, offset


class PooledCollate:
    """``collate_fn``: ``default_collate``'s batch, in one of the worker's reusable buffers.

    ``slots`` buffers per worker at most (allocated when first needed). The loader calls
    :meth:`new_generation` in the main process before it starts workers.
    """

    def __init__(self, num_workers: int, slots: int) -> None:
        if num_workers < 1 or slots < 1:
            raise ValueError(f"need num_workers >= 1 and slots >= 1, got {num_workers}, {slots}")
        self.num_workers, self.slots = num_workers, slots
        self.token = 0
        self.flags: torch.Tensor | None = None
        self._pool: dict[int, torch.UntypedStorage] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = {}  # a worker's buffers stay in that worker
        return state

    def new_generation(self) -> None:
        """Fresh flags for workers about to start (main process)."""
        flags = torch.zeros((self.num_workers, self.slots), dtype=torch.int32).share_memory_()
        token = secrets.randbits(62)
        with _LOCK:
            _FLAGS.pop(self.token, None)
            _FLAGS[token] = flags.numpy()
        self.token, self.flags, self._pool = token, flags, {}

    def __call__(self, batch: Sequence[Any]) -> Any:
        info = get_worker_info()
        if info is None or self.flags is None or get_sharing_strategy() != "file_descriptor":
            return default_collate(batch)
        found = _layout(batch)
        if found is None:
            return default_collate(batch)
        layout, nbytes = found
        claimed = self._claim(info.id, nbytes)
        if claimed is None:
            return default_collate(batch)
        slot, storage = claimed
        try:
            out = {}
            for key, dtype, shape, offset in layout:
                view = torch.empty(0, dtype=dtype).set_(
                    storage, offset // dtype.itemsize, (len(batch), *shape)
                )
                out[key] = torch.stack([sample[key] for sample in batch], 0, out=view)
        except BaseException:
            self.flags.numpy()[info.id, slot] = 0  # type: ignore[union-attr]
            raise
        return out

    def _claim(self, worker: int, nbytes: int) -> tuple[int, torch.UntypedStorage] | None:
        """A free slot and its storage of at least ``nbytes`` (allocated or grown here), marked in use."""
        global _REDUCER_SET
        flags = self.flags.numpy()[worker]  # type: ignore[union-attr]
        free = [s for s in range(self.slots) if flags[s] == 0]
        if not free:
            return None
        fits = [s for s in free if s in self._pool and self._pool[s].nbytes() >= nbytes]
        slot = fits[0] if fits else next((s for s in free if s not in self._pool), free[0])
        if slot not in fits:  # first use of the slot, or a larger batch than it holds
            old = self._pool.pop(slot, None)
            if old is not None:
                _POOLED.pop(old.data_ptr(), None)
            self._pool[slot] = torch.UntypedStorage._new_shared(nbytes)
            _POOLED[self._pool[slot].data_ptr()] = (self.token, worker, slot)
        if not _REDUCER_SET:  # this worker's pickler: pooled storages name their slot
            ForkingPickler.register(torch.UntypedStorage, _reduce_storage)
            _REDUCER_SET = True
        flags[slot] = 1
        return slot, self._pool[slot]
