"""The one training entry point of every pretraining method (PyTorch Lightning).

    python -m models.train fit --config run.yaml [--set trainer.max_steps=100 ...]

The run config names a ``method`` (default ``cmp``); ``models.methods.METHODS`` maps it to the
method's LightningModule, its data view and its validation figure. This module knows no
method's science: it merges the config (generic keys here, the method's ``model`` / ``optim`` /
``figures`` defaults from its class), builds the DataModule, the module and the Trainer, and
runs them. A method is a module + a data view + a config section (/work/notes/REFACTOR.md).

It seeds everything, picks CUDA when present (bf16 autocast + channels_last there, fp32 on CPU),
takes DDP strategy / devices / num_nodes from the config (under SLURM, Lightning reads the task
layout from the environment), and writes into ``output_dir``: ``checkpoints/last.ckpt`` (+ periodic
``step=N.ckpt``), CSV logs under ``logs/version_K/`` (TensorBoard too when installed),
``config.yaml`` (the resolved config), ``backbone.pth`` (trunk weights only, torchvision key
names for ResNets) and ``figures/`` (``loss_curves.png``, ``val_predictions.png``). Rerunning the
same command resumes from ``last.ckpt``; once training is complete, ``last.ckpt`` keeps the
weights only (``trainer.final_checkpoint``, ``models.checkpoints``) and a rerun rewrites the
outputs without training.

The data side is pluggable: ``data.factory`` names a DataModule class or function by dotted path
(default ``models.data.ShardDataModule``), called with ``view=`` the method's view and
``data.kwargs``; ``models.synthetic.SyntheticDataModule`` is a tiny in-memory one for tests.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import logging
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from models.backbones import export_trunk_state_dict
from models.checkpoints import (
    FINAL_CHECKPOINT_MODES,
    FinishedRunError,
    RunCheckpoint,
    SettingsStamp,
    changed_settings,
    completion,
    load_checkpoint,
    slim_final_checkpoints,
    training_settings,
)
from models.methods import PretrainMethod, get_method
from models.resumable import StepSeed
from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.fields import index_fields, missing_fields
from pipeline.shards.reader import read_index

__all__ = [
    "DEFAULT_CONFIG",
    "build_datamodule",
    "build_module",
    "build_trainer",
    "default_config",
    "fit",
    "load_run_config",
    "main",
    "parse_override",
    "resolve_config",
    "write_backbone",
    "record_sample_counts",
    "write_figures",
]

log = logging.getLogger(__name__)

# The generic run configuration, with its defaults; ``model``, ``optim`` and ``figures`` get the
# method's own keys (``default_config``). ``data.kwargs`` and ``model.backbone_kwargs`` are free
# dicts; every other key must exist (a typo is an error, not a silently ignored setting).
DEFAULT_CONFIG: dict[str, Any] = {
    "method": "cmp",
    "seed": 0,
    "deterministic": False,
    "output_dir": None,  # null: results/pretrain/{method}
    "model": {},
    "optim": {},
    "trainer": {
        "max_steps": 42000,
        "accelerator": "auto",
        "devices": "auto",
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "auto",
        "channels_last": "auto",
        "compile": False,
        "log_every_n_steps": 50,
        "val_check_interval": 1000,
        "limit_val_batches": 1.0,
        "num_sanity_val_steps": 2,
        "checkpoint_every_n_steps": 1000,
        "keep_checkpoints": 0,
        "final_checkpoint": "weights",
        "gradient_clip_val": None,
        "enable_progress_bar": True,
        "early_stopping_patience": None,
    },
    "data": {"factory": "models.data.ShardDataModule", "kwargs": {}},
    "figures": {"enabled": True, "num_samples": 4},
}
_FREE_FORM = {"data.kwargs", "model.backbone_kwargs"}


def default_config(method: str = "cmp") -> dict[str, Any]:
    """Every key of a run of ``method`` with its default (generic keys + the method's own)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["method"] = method
    config["output_dir"] = f"results/pretrain/{method}"
    for section, defaults in get_method(method).module.DEFAULTS.items():
        config[section] = {**config[section], **copy.deepcopy(defaults)}
    return config


def _merge(base: dict[str, Any], override: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if prefix.rstrip(".") in _FREE_FORM:
            merged[key] = copy.deepcopy(value)
        elif key not in merged:
            raise ValueError(f"unknown config key {dotted!r}")
        elif isinstance(merged[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {dotted!r} must be a mapping, got {value!r}")
            merged[key] = _merge(merged[key], value, dotted + ".")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """``a.b=value`` as the nested ``{a: {b: value}}``; the value is read as JSON when it is
    JSON (the rules pass JSON), else as YAML. JSON first because PyYAML follows YAML 1.1, which
    reads ``1e-08`` (no dot) as a string: Adam's eps arrived as text that way."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = yaml.safe_load(raw) if raw.strip() else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def _update(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested update without key checks (the method, hence the valid keys, is not known yet)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _update(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_run_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Defaults of the run's ``method`` ← YAML file ← ``key.sub=value`` overrides (YAML values)."""
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{path}: top level must be a mapping")
        raw = _update(raw, loaded)
    for text in overrides:
        raw = _update(raw, parse_override(text))
    return _merge(default_config(raw.get("method", DEFAULT_CONFIG["method"])), raw)


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``auto`` accelerator / precision / channels_last by what this machine will use:
    CUDA when present (bf16 autocast, channels_last), else CPU in fp32."""
    resolved = _merge(default_config(config.get("method", DEFAULT_CONFIG["method"])), config)
    if resolved["output_dir"] is None:
        resolved["output_dir"] = f"results/pretrain/{resolved['method']}"
    trainer = resolved["trainer"]
    if trainer["accelerator"] == "auto":
        trainer["accelerator"] = "gpu" if torch.cuda.is_available() else "cpu"
    on_gpu = trainer["accelerator"] in ("gpu", "cuda")
    if trainer["precision"] == "auto":
        trainer["precision"] = "bf16-mixed" if on_gpu else "32-true"
    if trainer["channels_last"] == "auto":
        trainer["channels_last"] = on_gpu
    if int(trainer["max_steps"]) < 1:
        raise ValueError(f"trainer.max_steps must be >= 1, got {trainer['max_steps']}")
    if trainer["final_checkpoint"] not in FINAL_CHECKPOINT_MODES:
        raise ValueError(
            f"trainer.final_checkpoint must be one of {FINAL_CHECKPOINT_MODES}, "
            f"got {trainer['final_checkpoint']!r}"
        )
    check_shard_fields(resolved)
    return resolved


def check_shard_fields(config: Mapping[str, Any]) -> None:
    """Fail in one line, naming the stage to enable, when a shard set of the run lacks a field
    its method reads (``pipeline.fields``); a set not yet written is left to the data module."""
    paths = (config["data"].get("kwargs") or {}).get("index_paths") or []
    for path in [paths] if isinstance(paths, str) else paths:
        try:
            index = read_index(path)
        except (OSError, ValueError):
            continue
        problem = missing_fields(config["method"], index_fields(index), f"shard set {path}")
        if problem:
            raise ValueError(problem)


# --------------------------------------------------------------------------- building blocks


def build_datamodule(
    factory: str, kwargs: Mapping[str, Any] | None = None, view: str | None = None
) -> pl.LightningDataModule:
    """Call the class or function at dotted path ``factory`` with ``view`` (when given; a
    ``view`` in ``kwargs`` wins) and ``kwargs``."""
    module_name, _, attr = factory.rpartition(".")
    if not module_name:
        raise ValueError(f"data.factory must be a dotted path, got {factory!r}")
    target = getattr(importlib.import_module(module_name), attr, None)
    if target is None:
        raise ValueError(f"{module_name} has no {attr!r}")
    arguments = dict(kwargs or {})
    if view is not None:
        arguments.setdefault("view", view)
    datamodule = target(**arguments)
    if not isinstance(datamodule, pl.LightningDataModule):
        raise ValueError(f"{factory} returned {type(datamodule).__name__}, not a DataModule")
    return datamodule


def build_module(config: Mapping[str, Any]) -> PretrainMethod:
    """The method's LightningModule for a resolved config.

    ``trainer.compile``: the method's network (``module.model``, else the whole module's
    forward) is compiled in place with ``torch.compile`` (``nn.Module.compile``: parameter names,
    checkpoints and the exported backbone stay as they are); the loss runs eagerly.
    """
    module = get_method(config["method"]).module(
        **config["model"], **config["optim"], channels_last=bool(config["trainer"]["channels_last"])
    )
    if config["trainer"].get("compile", False):
        getattr(module, "model", module).compile()
    return module


def build_trainer(config: Mapping[str, Any], output_dir: Path) -> pl.Trainer:
    """Trainer writing checkpoints / logs under ``output_dir`` (config must be resolved)."""
    t = config["trainer"]
    checkpoint = RunCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="step={step}",
        auto_insert_metric_name=False,
        monitor=None,  # keep the latest: resuming wants the newest state, not the best
        # last.ckpt is the resume state and, once the run ends, the final checkpoint (written at
        # the last step; weights only with trainer.final_checkpoint: weights); periodic
        # step=N.ckpt copies (a full model + optimizer state each) only when asked for
        save_top_k=int(t["keep_checkpoints"]),
        save_last=True,
        # Always overwrite last.ckpt: a resumed run whose callback settings changed would
        # otherwise write last-v1.ckpt and the next rerun would resume from the stale file.
        enable_version_counter=False,
        every_n_train_steps=int(t["checkpoint_every_n_steps"]),
    )
    # dropout / a loss's random draws in step n are a function of (seed, n): models.resumable
    step_seed = StepSeed(int(config["seed"]))
    stamp = SettingsStamp(training_settings(config))  # what a rerun compares its settings with
    callbacks: list[Any] = [checkpoint, step_seed, stamp, *early_stopping_callbacks(t, output_dir)]
    loggers: list[Any] = [CSVLogger(save_dir=str(output_dir), name="logs")]
    if importlib.util.find_spec("tensorboard") is not None:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(output_dir), name="tensorboard"))
    return pl.Trainer(
        default_root_dir=str(output_dir),
        accelerator=t["accelerator"],
        devices=t["devices"],
        num_nodes=int(t["num_nodes"]),
        strategy=t["strategy"],
        precision=t["precision"],
        max_steps=int(t["max_steps"]),
        max_epochs=-1,
        deterministic=bool(config["deterministic"]),
        logger=loggers,
        callbacks=callbacks,
        log_every_n_steps=int(t["log_every_n_steps"]),
        val_check_interval=t["val_check_interval"],
        # Validation every val_check_interval *global* steps, across epoch boundaries.
        check_val_every_n_epoch=None,
        limit_val_batches=t["limit_val_batches"],
        num_sanity_val_steps=int(t["num_sanity_val_steps"]),
        gradient_clip_val=t["gradient_clip_val"],
        enable_progress_bar=bool(t["enable_progress_bar"]),
    )


def early_stopping_callbacks(trainer_config: Mapping[str, Any], output_dir: Path) -> list[Any]:
    """With ``early_stopping_patience`` (validation checks without a lower ``val/loss``), stop
    early and keep ``checkpoints/best.ckpt`` (lowest ``val/loss``) for the backbone export; the
    CPFS paper stops early because AlexNet overfits (Mahendran et al. 2018, Sec. 4.2)."""
    patience = trainer_config["early_stopping_patience"]
    if patience is None:
        return []
    best = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best",
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    stop = EarlyStopping(
        monitor="val/loss", mode="min", patience=int(patience), check_on_train_epoch_end=False
    )
    return [best, stop]


def restore_best(module: PretrainMethod, output_dir: Path) -> bool:
    """Load ``checkpoints/best.ckpt``'s weights into ``module`` (True when there is one)."""
    best = output_dir / "checkpoints" / "best.ckpt"
    if not best.exists():
        return False
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    log.info("exporting the lowest-val/loss weights of %s", best)
    return True


def write_backbone(module: PretrainMethod, path: Path) -> Path:
    """Trunk weights only (``export_trunk_state_dict``), written atomically."""
    with atomic_path(path) as tmp:
        torch.save(export_trunk_state_dict(module.backbone), tmp)
    return path


def write_figures(
    config: Mapping[str, Any],
    module: PretrainMethod,
    datamodule: pl.LightningDataModule,
    output_dir: Path,
) -> list[Path]:
    """``figures/loss_curves.png`` (every method) and ``figures/val_predictions.png`` (the
    method's panels, when there is validation data)."""
    from models.figures import plot_loss_curves

    figures = output_dir / "figures"
    written = [plot_loss_curves(output_dir / "logs", figures / "loss_curves.png", **module.CURVE)]
    options = {k: v for k, v in config["figures"].items() if k != "enabled"}
    draw = get_method(config["method"]).figures
    panels = draw(module, datamodule, figures / "val_predictions.png", **options)
    if panels is None:  # no validation split (e.g. one video): say so rather than fail the run
        from models.figures import plot_message

        panels = plot_message("no validation samples", figures / "val_predictions.png")
    return [*written, panels]


def record_sample_counts(config: Mapping[str, Any], output_dir: Path) -> list[dict[str, Any]]:
    """Log and write ``data.json``: the distinct training / validation samples of every shard
    set the run reads (``data.kwargs.index_paths``; none for in-memory data modules)."""
    from pipeline.stages.shards import sample_counts

    counts = sample_counts(list(config["data"]["kwargs"].get("index_paths") or []))
    for entry in counts:
        log.info(
            "%s: %d distinct training samples (%d videos), %d validation samples (%d videos)",
            entry["index"],
            entry["train_samples"],
            entry["train_videos"],
            entry["val_samples"],
            entry["val_videos"],
        )
    total = sum(entry["train_samples"] for entry in counts)
    write_json(output_dir / "data.json", {"train_samples": total, "sets": counts})
    return counts


def previous_checkpoint(config: Mapping[str, Any], output_dir: Path) -> dict[str, Any] | None:
    """The run folder's ``last.ckpt`` to go on from, or None: there is none, or it was trained
    with other settings (``models.checkpoints.changed_settings``), and then the folder's
    checkpoints and logs are removed (one warning line says why) and the run starts afresh."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        return None
    previous = load_checkpoint(last)
    changed = changed_settings(previous, training_settings(config))
    if not changed:
        return previous
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    log.warning(
        "%s was trained with other settings (%s%s): training from scratch, its checkpoints and "
        "logs removed",
        last,
        "; ".join(changed[:3]),
        more,
    )
    del previous
    if rank_zero_only.rank == 0:
        for name in ("checkpoints", "logs", "tensorboard"):
            shutil.rmtree(output_dir / name, ignore_errors=True)
    return None


def fit(config: Mapping[str, Any]) -> Path:
    """Train (or resume) the configured method; returns the output directory.

    A run whose ``last.ckpt`` says it is complete (``models.checkpoints.completion``) is not
    trained again: its weights are loaded and only the outputs (backbone, figures) are rewritten.
    Once training is complete, ``trainer.final_checkpoint: weights`` slims its checkpoints."""
    config = resolve_config(config)
    output_dir = Path(config["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(config["seed"]), workers=True)
    previous = previous_checkpoint(config, output_dir)  # before the loggers pick a version
    view = get_method(config["method"]).view
    datamodule = build_datamodule(config["data"]["factory"], config["data"]["kwargs"], view)
    module = build_module(config)
    trainer = build_trainer(config, output_dir)
    if trainer.is_global_zero:
        write_text(output_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        record_sample_counts(config, output_dir)
    max_steps = int(config["trainer"]["max_steps"])
    last = output_dir / "checkpoints" / "last.ckpt"
    done = completion(previous, max_steps, last) if previous is not None else None
    if done is not None:
        log.info("%s: training is complete (%s); writing the outputs only", last, done)
        module.load_state_dict(previous["state_dict"])
    else:
        ckpt_path = str(last) if previous is not None else None
        previous = None  # drop the mapping of the file that training is about to replace
        if ckpt_path:
            log.info("resuming from %s", ckpt_path)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return output_dir
    if done is None and last.exists():  # trainer.fit returns only once training is complete
        done = completion(load_checkpoint(last), max_steps, last)
    if done is not None and config["trainer"]["final_checkpoint"] == "weights":
        for path in slim_final_checkpoints(last.parent, done, max_steps):
            log.info("%s: rewritten with the weights only (training is complete)", path)
    if config["trainer"]["early_stopping_patience"] is not None:
        restore_best(module, output_dir)
    write_backbone(module, output_dir / "backbone.pth")
    if config["figures"]["enabled"]:
        write_figures(config, module, datamodule, output_dir)
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.train", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit_parser = sub.add_parser(
        "fit", help="train a method (resumes from output_dir/checkpoints/last.ckpt)"
    )
    fit_parser.add_argument("--config", type=Path, help="run YAML (keys: see default_config)")
    fit_parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. trainer.max_steps=100 (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_run_config(args.config, args.overrides)
    except ValueError as error:
        parser.error(str(error))
    try:
        fit(config)
    except FinishedRunError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
