"""Training randomness as a function of (seed, position), so a resumed run replays an uninterrupted one.

A pretraining run killed with ``kill -9`` resumes from ``last.ckpt`` (``models.train``). For the
resumed run to end with the *same weights* as an uninterrupted one, everything random that
training draws after the checkpoint must be what the uninterrupted run drew there:

* the sample order: :class:`EpochSampler` orders epoch ``e`` by a pure function of
  ``(seed, e)`` and can start anywhere inside an epoch. Each ``iter`` starts the epoch after the
  last one started. Its position (``state_dict``: epoch, samples yielded) can be saved and
  restored; a training run restores it from the checkpoint's global step
  (:func:`start_at_batch`), not from what the loader had handed out: loader workers and
  Lightning's fetcher read batches ahead of training, so the loader's own position at a save is
  past the batches the checkpoint's weights have seen;
* the per-sample augmentation: ``models.data.SeededWeightedSampler`` (an :class:`EpochSampler`)
  hands each draw its own seed, drawn with the order, so a sample's crop, flip and guidance
  points are a function of (seed, epoch, position in the epoch), whichever worker decodes it;
* the training step (dropout, CPFS's random pixels): :class:`StepSeed` reseeds torch's global
  generators from (seed, global step, rank) before every training batch.

Lightning restores the weights, optimizer, LR-scheduler and loop counters itself.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch.utils.data import Sampler

__all__ = [
    "EpochSampler",
    "PermutationSampler",
    "StepSeed",
    "derived_seed",
    "start_at_batch",
    "trained_batches",
]

_NOT_RESUMABLE = "You're resuming from a checkpoint that ended before the epoch ended"


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (``numpy.random.SeedSequence``): nearby inputs such as
    (seed, step) and (seed, step + 1) give unrelated streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """A sampler whose epoch ``e`` is ``draw(e)``, a pure function of (seed, e), resumable
    mid-epoch. Subclasses implement :meth:`draw` (``num_samples`` items)."""

    def __init__(self, num_samples: int, seed: int) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples, self.seed = int(num_samples), int(seed)
        self._next_epoch = 0  # the epoch the next iter starts (when no position was loaded)
        self._position = (0, 0)  # (epoch, samples of it yielded so far)
        self._resume: tuple[int, int] | None = None

    def draw(self, epoch: int) -> Sequence[Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[Any]:
        epoch, offset = self._resume if self._resume is not None else (self._next_epoch, 0)
        self._resume, self._next_epoch = None, epoch + 1
        self._position = (epoch, offset)
        items = self.draw(epoch)
        for index in range(offset, len(items)):
            self._position = (epoch, index + 1)
            yield items[index]

    def state_dict(self) -> dict[str, int]:
        """Where the next sample comes from: ``{"epoch", "offset"}`` (an epoch fully yielded
        counts as the start of the next)."""
        epoch, offset = self._resume or self._position
        if offset >= self.num_samples:
            epoch, offset = epoch + 1, 0
        return {"seed": self.seed, "epoch": epoch, "offset": offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next ``iter`` continues at ``state`` (from :meth:`state_dict`)."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"sampler state of seed {state['seed']} loaded into seed {self.seed}")
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if epoch < 0 or not 0 <= offset <= self.num_samples:
            raise ValueError(f"invalid sampler position epoch={epoch} offset={offset}")
        self._resume = (epoch, offset)


class PermutationSampler(EpochSampler):
    """Each epoch a permutation of ``range(num_samples)``, seeded by (seed, epoch)."""

    def draw(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()


def start_at_batch(
    sampler: EpochSampler, batch: int, batch_size: int, drop_last: bool
) -> dict[str, int]:
    """Position ``sampler`` at global training batch ``batch`` (0: the start) of a loader with
    ``batch_size`` and ``drop_last``, whose every epoch is one pass of the sampler."""
    per_epoch = len(sampler) // batch_size if drop_last else math.ceil(len(sampler) / batch_size)
    epoch, within = divmod(int(batch), max(per_epoch, 1))  # 0 batches: Lightning trains none
    # Lightning warns on a mid-epoch resume unless the loader has state_dict/load_state_dict;
    # this loader's position comes from the restored step instead (module docstring)
    warnings.filterwarnings("ignore", _NOT_RESUMABLE, PossibleUserWarning)
    state = {"seed": sampler.seed, "epoch": epoch, "offset": within * batch_size}
    sampler.load_state_dict(state)
    return state


def trained_batches(datamodule: pl.LightningDataModule) -> int:
    """Training batches the run of ``datamodule`` has done: its trainer's global step (restored
    from the checkpoint before the train loader is requested; one optimizer step per batch),
    0 without a trainer."""
    trainer = getattr(datamodule, "trainer", None)
    return int(trainer.global_step) if trainer is not None else 0


class StepSeed(pl.Callback):
    """Reseed torch's global generators (CPU and CUDA) from (seed, global step, rank) before each
    training batch, so dropout and a loss's random sampling in step ``n`` are the same whether
    the run was resumed or not."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        torch.manual_seed(derived_seed(self.seed, trainer.global_step, trainer.global_rank))
