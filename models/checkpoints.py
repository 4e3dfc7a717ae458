"""The checkpoints of a pretraining run: resume state while it trains, weights once it is done.

While a run trains, ``checkpoints/last.ckpt`` is Lightning's full resume state: weights, optimizer
state (SGD momentum is one more copy of every weight), LR-scheduler and callback state. A
completed run (``max_steps`` reached, or stopped early by ``EarlyStopping``) no longer needs the
resume-only part. With ``trainer.final_checkpoint: weights`` :func:`slim_final_checkpoints`
rewrites ``last.ckpt`` (and ``best.ckpt`` of an early-stopped run) without it, atomically, and
marks it ``final`` (why, at which step, for which ``max_steps``). For a ResNet-18 CMP run that
halves ``last.ckpt`` (102 → 51 MB).

A rerun reads the mark (:func:`completion`): a completed run is not handed to Lightning's resume
(which refuses a checkpoint without optimizer state) but only re-exported. A weights-only
checkpoint cannot train on to a larger ``max_steps``: that is a :class:`FinishedRunError`
naming the two ways out (delete the checkpoints, or keep ``final_checkpoint: full``).

A kill -9 while rewriting leaves the full ``last.ckpt`` in place (the slim one replaces it by a
rename); the rerun finds that run complete from the full checkpoint itself and slims it then.

Every checkpoint carries the settings it was trained with (``settings``: the resolved run config
less :data:`RUN_ONLY_KEYS`; :class:`SettingsStamp`). A rerun whose settings differ
(:func:`changed_settings`) does not resume from it: ``models.train`` starts the run afresh.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from pipeline.atomic import atomic_path

__all__ = [
    "FINAL_CHECKPOINT_MODES",
    "RUN_ONLY_KEYS",
    "FinishedRunError",
    "RunCheckpoint",
    "SettingsStamp",
    "changed_settings",
    "completion",
    "load_checkpoint",
    "slim_final_checkpoints",
    "training_settings",
]

FINAL_CHECKPOINT_MODES = ("full", "weights")
# What a weights-only checkpoint keeps: the weights, where training stopped, the loops' progress
# and the hyper-parameters; optimizer, LR-scheduler, callback and precision state are dropped.
_KEPT = ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "settings")
# Keys of a resolved run config that do not change what is trained (where the run is written,
# how long it trains: training on to a larger max_steps is a resume, what is logged, checkpointed
# and drawn, how the loader is parallelised: the draws are seeded per sample, not per worker).
RUN_ONLY_KEYS = (
    "output_dir",
    "figures",
    "trainer.max_steps",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.keep_checkpoints",
    "trainer.final_checkpoint",
    "trainer.enable_progress_bar",
    "trainer.num_sanity_val_steps",
    "data.kwargs.num_workers",
    "data.kwargs.prefetch_factor",
    "data.kwargs.pin_memory",
    "data.kwargs.multiprocessing_context",
    "data.kwargs.reuse_worker_memory",
)
_KEPT_PREFIXES = ("hyper_parameters", "hparams")


class FinishedRunError(ValueError):
    """A weights-only final checkpoint where the run config asks for more training."""


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last.ckpt`` when training ends.

    Lightning's own end-of-training save happens only when nothing was saved during the fit, so
    ``last.ckpt`` could lag behind the final weights (``max_steps`` not a multiple of
    ``every_n_train_steps``) or miss ``EarlyStopping``'s decision (taken at a validation check
    after the step's save). Rewriting it here makes the file the completed run's final state.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def training_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a run's checkpoints belong to: the resolved config less ``RUN_ONLY_KEYS``."""
    settings = copy.deepcopy(dict(config))
    for dotted in RUN_ONLY_KEYS:
        *parents, leaf = dotted.split(".")
        section = settings
        for key in parents:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(leaf, None)
    return settings


class SettingsStamp(pl.Callback):
    """Writes ``settings`` (``{"values": ...}``) into every checkpoint of the run."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.stamp = {"values": copy.deepcopy(dict(settings))}

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["settings"] = copy.deepcopy(self.stamp)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def changed_settings(checkpoint: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """What differs between the settings ``checkpoint`` was trained with and ``settings``
    (``"key: old -> new"``; empty when they match or the checkpoint predates the stamp)."""
    stamp = checkpoint.get("settings")
    return _differences(stamp["values"], settings) if stamp else []


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict (memory-mapped: tensors are read when touched)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _stopped_early(checkpoint: Mapping[str, Any]) -> bool:
    """Whether an ``EarlyStopping`` callback's saved state says it stopped the run."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("EarlyStopping") and int(state.get("stopping_reason", 0)) != 0:
            return True
    return False


def completion(checkpoint: Mapping[str, Any], max_steps: int, path: Path) -> str | None:
    """Why the run that wrote ``checkpoint`` is complete for a horizon of ``max_steps``
    (``"max_steps"`` or ``"early_stopping"``), or None when training goes on from it.

    Raises :class:`FinishedRunError` for a weights-only checkpoint that would have to train on.
    """
    final = checkpoint.get("final")
    if final is not None:
        if final["reason"] == "early_stopping" or int(final["max_steps"]) >= max_steps:
            return str(final["reason"])
        raise FinishedRunError(
            f"{path} holds only the weights of a finished {final['global_step']}-step run, "
            f"not the optimizer state needed to train on to trainer.max_steps={max_steps}: "
            f"delete {path.parent} to train from scratch "
            "(trainer.final_checkpoint: full keeps the resume state of finished runs)"
        )
    if "optimizer_states" not in checkpoint:
        raise FinishedRunError(
            f"{path} holds no optimizer state, so training cannot resume from it: delete it "
            "to train from scratch"
        )
    if int(checkpoint["global_step"]) >= max_steps:
        return "max_steps"
    return "early_stopping" if _stopped_early(checkpoint) else None


def _slim(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in checkpoint.items()
        if key in _KEPT or str(key).startswith(_KEPT_PREFIXES)
    }


def slim_final_checkpoints(checkpoint_dir: Path, reason: str, max_steps: int) -> list[Path]:
    """Rewrite the completed run's ``best.ckpt`` (when there is one) and then ``last.ckpt``
    without resume-only state, each atomically; ``last.ckpt`` gets the ``final`` mark (written
    last, so a kill -9 in between leaves a full ``last.ckpt`` that a rerun slims again).
    Already slim files are left as they are; temporary files of a killed rewrite are removed.
    Returns the files rewritten."""
    rewritten = []
    for name in ("best.ckpt", "last.ckpt"):
        path = checkpoint_dir / name
        for stale in checkpoint_dir.glob(f".{name}.*.tmp"):  # a rewrite killed before its rename
            stale.unlink(missing_ok=True)
        if not path.exists():
            continue
        checkpoint = load_checkpoint(path)
        if "final" in checkpoint or (name != "last.ckpt" and "optimizer_states" not in checkpoint):
            continue
        slim = _slim(checkpoint)
        if name == "last.ckpt":
            slim["final"] = {
                "reason": reason,
                "global_step": int(checkpoint["global_step"]),
                "max_steps": int(max_steps),
            }
        with atomic_path(path) as tmp:
            torch.save(slim, tmp)
        rewritten.append(path)
    return rewritten
