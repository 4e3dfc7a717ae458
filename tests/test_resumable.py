"""Training randomness as a function of (seed, position) (models/resumable.py): samplers resume
mid-epoch and across epoch boundaries; a resumed run with random training steps (CPFS: random
pixels, AlexNet dropout) ends with the weights of an uninterrupted one."""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import SeededWeightedSampler
from models.resumable import PermutationSampler, start_at_batch
from models.train import fit, load_run_config
from tests.conftest import resume_points


def _epochs(sampler, count: int) -> list[list]:
    return [list(sampler) for _ in range(count)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: PermutationSampler(10, seed=3),
        lambda: SeededWeightedSampler(np.linspace(1.0, 2.0, 7), num_samples=10, seed=3),
    ],
    ids=["permutation", "weighted"],
)
def test_sampler_continues_where_its_state_was_saved(make) -> None:
    whole = list(itertools.chain.from_iterable(_epochs(make(), 4)))
    assert len(whole) == 40 and whole[:10] != whole[10:20]  # a new order every epoch
    # stop after n samples (mid-epoch, at the end of an epoch, at the start), save, resume
    for n in (0, 4, 10, 13, 20, 29):
        sampler = make()
        seen = []
        iterator = iter(sampler)
        for _ in range(n):
            try:
                seen.append(next(iterator))
            except StopIteration:  # an epoch is over: the loader starts the next one
                iterator = iter(sampler)
                seen.append(next(iterator))
        state = sampler.state_dict()
        assert (state["epoch"], state["offset"]) == divmod(n, 10), n
        resumed = make()
        resumed.load_state_dict(state)
        rest = list(itertools.chain.from_iterable(_epochs(resumed, 4 - n // 10)))
        assert seen + rest == whole, n
    # the order of epoch e depends on (seed, e) only
    assert _epochs(make(), 2) == _epochs(make(), 2)
    other = make()
    other.load_state_dict({"seed": 3, "epoch": 2, "offset": 0})
    assert list(other) == whole[20:30]
    with pytest.raises(ValueError, match="seed 4"):
        other.load_state_dict({"seed": 4, "epoch": 0, "offset": 0})


def test_start_at_batch_matches_the_batches_of_an_uninterrupted_loader() -> None:
    # 10 samples, batches of 4, drop_last: 2 batches an epoch (samples 8, 9 unused)
    whole = [
        chunk[i : i + 4] for chunk in _epochs(PermutationSampler(10, seed=1), 3) for i in (0, 4)
    ]
    for batch in range(6):
        sampler = PermutationSampler(10, seed=1)
        start_at_batch(sampler, batch, batch_size=4, drop_last=True)
        loader = torch.utils.data.DataLoader(range(10), 4, sampler=sampler, drop_last=True)
        got = [t.tolist() for t in loader]
        got += [t.tolist() for _ in range(3) for t in loader]
        assert got[: 6 - batch] == whole[batch:], batch


# CPFS draws its P pixels at random in every training step, and AlexNet's fc6/fc7 drop out.
CPFS_TINY = [
    "method=cpfs",
    "data.factory=models.synthetic.SyntheticDataModule",
    "data.kwargs={num_train: 12, num_val: 4, size: 64, batch_size: 4}",
    "model.backbone_kwargs={fc_channels: 32}",
    "model.hidden=32",
    "model.num_pixels=64",
    "trainer.log_every_n_steps=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.val_check_interval=4",
    "trainer.checkpoint_every_n_steps=4",
    "trainer.max_steps=7",
    "trainer.enable_progress_bar=false",
    "trainer.final_checkpoint=full",
    "figures.enabled=false",
]


@pytest.mark.slow
def test_resumed_run_with_random_training_steps_ends_with_the_same_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Resume a CPFS run (3 batches an epoch) from its step-4 checkpoint (mid-epoch) and from
    its step-6 one (an epoch's last batch): the rerun loads that checkpoint and starts at its
    step, and every weight equals the uninterrupted run's (StepSeed; the sampler restarts at the
    checkpoint step's batch)."""
    every_two = ["trainer.keep_checkpoints=-1", "trainer.checkpoint_every_n_steps=2"]
    whole = fit(load_run_config(None, [*CPFS_TINY, *every_two, f"output_dir={tmp_path / 'w'}"]))
    expected = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    for step in (4, 6):
        resumed = tmp_path / f"from{step}"
        (resumed / "checkpoints").mkdir(parents=True)
        saved = whole / "checkpoints" / f"step={step}.ckpt"
        shutil.copy(saved, resumed / "checkpoints" / "last.ckpt")
        caplog.clear()
        with caplog.at_level(logging.INFO):
            fit(load_run_config(None, [*CPFS_TINY, f"output_dir={resumed}"]))
        loaded = str(resumed / "checkpoints" / "last.ckpt")
        assert resume_points(caplog.text) == ([loaded], [step])
        got = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
        assert got["global_step"] == expected["global_step"] == 7
        assert got["state_dict"].keys() == expected["state_dict"].keys()
        for name, value in expected["state_dict"].items():
            assert torch.equal(got["state_dict"][name], value), (step, name)
