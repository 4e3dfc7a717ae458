"""Load the CMP network of a pretraining run folder for inference.

A run folder (``models.train``) holds ``config.yaml`` (the resolved run config),
``checkpoints/last.ckpt`` (and ``best.ckpt`` when early stopping kept one: it is what
``backbone.pth`` was exported from, so it is preferred here too) and ``backbone.pth``. Only the
checkpoint's weights and hyper-parameters are read, with ``weights_only=True``. A run of another
method (CPFS, S3, ...) is refused with a :class:`RunError` that names it: its checkpoint has no
sparse-motion encoder or decoder to ask.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from models.checkpoints import load_checkpoint
from models.cmp import CMP
from models.methods.cmp import CMPModule

__all__ = ["CMPRun", "RunError", "checkpoint_path", "load_cmp_run", "pick_device"]

CHECKPOINT_NAMES = ("best.ckpt", "last.ckpt")


class RunError(ValueError):
    """A run folder that cannot be served (missing, not a CMP run, unreadable checkpoint)."""


@dataclass
class CMPRun:
    """A loaded CMP run: the network in eval mode on ``device`` and where it came from."""

    model: CMP
    run_dir: Path
    checkpoint: Path
    device: torch.device
    global_step: int
    config: dict[str, Any]
    hparams: dict[str, Any]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` when given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_path(run_dir: Path) -> Path:
    """``checkpoints/best.ckpt`` when the run kept one, else ``checkpoints/last.ckpt``."""
    for name in CHECKPOINT_NAMES:
        path = run_dir / "checkpoints" / name
        if path.is_file():
            return path
    raise RunError(f"{run_dir} has no checkpoints/last.ckpt: is it a finished pretraining run?")


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RunError(f"{path} is not valid YAML: {error}") from error
    return config if isinstance(config, dict) else {}


def _method_of(checkpoint: dict[str, Any], config: dict[str, Any]) -> str | None:
    stamp = checkpoint.get("settings") or {}
    values = stamp.get("values") if isinstance(stamp, dict) else None
    if isinstance(values, dict) and values.get("method"):
        return str(values["method"])
    return str(config["method"]) if config.get("method") else None


def _cmp_hparams(checkpoint: dict[str, Any], where: Path) -> dict[str, Any]:
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    accepted = set(inspect.signature(CMPModule.__init__).parameters) - {"self"}
    foreign = sorted(set(hparams) - accepted)
    if foreign:
        raise RunError(
            f"{where} is not a CMP checkpoint (hyper-parameters {foreign} belong to another "
            "method); serve shows CMP runs only"
        )
    return hparams


def load_cmp_run(run_dir: str | Path, device: str | torch.device | None = None) -> CMPRun:
    """The CMP network of ``run_dir`` on ``device`` (default: CUDA when present, else CPU).

    Raises :class:`RunError` with a one-line reason for a missing folder or checkpoint, a run of
    another method, or a checkpoint that does not load.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist")
    config = _run_config(run_dir)
    path = checkpoint_path(run_dir)
    try:
        checkpoint = load_checkpoint(path)
    except Exception as error:  # pickle / zip errors of a damaged or foreign file
        raise RunError(f"{path} does not load as a weights-only checkpoint: {error}") from error
    method = _method_of(checkpoint, config)
    if method is not None and method != "cmp":
        raise RunError(
            f"{path} is a {method!r} run; serve needs a CMP run (method: cmp), "
            "e.g. results/pretrain/cmp/demo"
        )
    hparams = _cmp_hparams(checkpoint, path)
    module = CMPModule(**hparams)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise RunError(f"{path} holds no state_dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise RunError(f"{path} does not match a CMP network: {first}") from error
    target = pick_device(device)
    model = module.model.to(target).eval()
    step = int(checkpoint.get("global_step", 0))
    return CMPRun(model, run_dir, path, target, step, config, hparams)
