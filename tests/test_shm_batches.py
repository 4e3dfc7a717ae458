"""Tests for models/shm_batches.py: pooled batches equal default_collate's, are reused, never overwritten while held."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from models import shm_batches as sb
from models.workers import ThreadLimitedLoader


class Samples(Dataset):
    """Deterministic mixed-dtype samples shaped like the CMP view (small)."""

    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {
            "image": torch.randint(0, 256, (12, 10, 3), generator=g, dtype=torch.uint8),
            "flow": torch.randn(2, 12, 10, generator=g),
            "points": torch.randint(-1, 12, (5, 2), generator=g, dtype=torch.int32),
            "valid": torch.rand(1, 12, 10, generator=g) > 0.3,
        }


def _loader(pooled: bool, workers: int = 1, context: str = "fork") -> DataLoader:
    kwargs = dict(batch_size=4, num_workers=workers, multiprocessing_context=context)
    if pooled:
        return ThreadLimitedLoader(Samples(), reuse_worker_memory=True, **kwargs)
    return DataLoader(Samples(), **kwargs)


def _inode(tensor: torch.Tensor) -> int:
    fd, _ = tensor.untyped_storage()._share_fd_cpu_()  # the storage's own descriptor, no copy
    return os.fstat(fd).st_ino


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_pooled_batches_equal_default_collate_and_reuse_their_buffers(context: str) -> None:
    expected = [{k: v.clone() for k, v in b.items()} for b in _loader(False)]
    got, inodes = [], set()
    for batch in _loader(True, context=context):  # each batch dropped before the next arrives
        inodes.add(_inode(batch["image"]))
        assert _inode(batch["flow"]) == _inode(batch["image"])  # one buffer per batch
        got.append({k: v.clone() for k, v in batch.items()})
        del batch
    assert len(got) == len(expected) == 12
    for a, b in zip(expected, got, strict=True):
        _assert_same(a, b)
    # 12 batches through at most prefetch_factor + 3 = 5 buffers: the buffers were reused.
    assert len(inodes) <= 5


def test_batches_held_by_the_consumer_are_never_overwritten() -> None:
    expected = [{k: v.clone() for k, v in b.items()} for b in _loader(False, workers=2)]
    held = list(_loader(True, workers=2))  # every batch kept: the pools run dry, then fall back
    assert sb.outstanding_batches() > 0
    for a, b in zip(expected, held, strict=True):
        _assert_same(a, b)
    inodes = {_inode(b["image"]) for b in held}
    assert len(inodes) == len(held)  # no buffer served two live batches
    del held
    assert sb.outstanding_batches() == 0  # released once the consumer drops them


def test_released_only_when_every_tensor_of_the_batch_is_gone() -> None:
    loader = _loader(True)
    it = iter(loader)
    first = next(it)
    flow = first["flow"][1:]  # a view keeps the buffer alive
    flow_copy = flow.clone()
    del first
    for _ in it:  # the worker collates 11 more batches while the view lives
        pass
    assert torch.equal(flow, flow_copy)


def test_outside_workers_and_for_other_batches_it_is_default_collate() -> None:
    collate = sb.PooledCollate(num_workers=1, slots=2)
    collate.new_generation()
    samples = [Samples()[i] for i in range(3)]
    _assert_same(collate(samples), torch.utils.data.default_collate(samples))
    assert collate([1, 2]).tolist() == [1, 2]
    with pytest.raises(ValueError, match="slots"):
        sb.PooledCollate(num_workers=1, slots=0)
