"""CMP pretraining with PyTorch Lightning, and its command-line entry point.

``CMPModule`` holds the science of Zhan et al. 2019 (Sec. 3.1 loss, Sec. 4 training schedule):
quantised-flow cross-entropy (``models.cmp.cmp_loss``), end-point error of the expectation flow as
the metric, SGD lr 0.1 / momentum 0.9 / weight decay 1e-4, learning rate ×0.1 at 2/3.5 and 3/3.5
of the iterations (stepped per iteration).

Batch contract (what a DataModule must yield, as a dict of tensors):

============  ======================  =====================================================
key           dtype / shape           meaning
============  ======================  =====================================================
``image``     float32 (B, 3, H, W)    frame t, RGB, ``(x/255 - mean) / std`` with ImageNet
                                      mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
``flow``      float32 (B, 2, H, W)    target forward flow t→t+gap, (dx, dy) in px of ``image``
``sparse``    float32 (B, 4, H, W)    guidance: dx, dy at the guidance points (0 elsewhere),
                                      then the point mask (1 at points) twice
``valid``     bool (B, 1, H, W)       optional; pixels left out of loss and metric when False
============  ======================  =====================================================

H and W must be multiples of 8 (the encoder's output stride).

Entry point::

    python -m models.train fit --config run.yaml [--set trainer.max_steps=100 ...]

It seeds everything, picks CUDA when present (bf16 autocast + channels_last there, fp32 on CPU),
takes DDP strategy / devices / num_nodes from the config (under SLURM, Lightning reads the task
layout from the environment), and writes into ``output_dir``: ``checkpoints/last.ckpt`` (+ periodic
``step=N.ckpt``), CSV logs under ``logs/version_K/`` (TensorBoard too when installed),
``config.yaml`` (the resolved config), ``backbone.pth`` (trunk weights only, torchvision key
names for ResNets) and ``figures/``. Rerunning the same command resumes from ``last.ckpt``.

The data side is pluggable: ``data.factory`` names a DataModule class or function by dotted path,
called with ``data.kwargs``. ``SyntheticCMPDataModule`` below is a tiny in-memory one (textured
square translated over a textured background) for tests, benchmarks and smoke runs.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from models.backbones import export_trunk_state_dict
from models.cmp import cmp_loss, cmp_model, predict_flow
from pipeline.atomic import atomic_path, write_text

__all__ = [
    "DEFAULT_CONFIG",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CMPModule",
    "SyntheticCMPDataModule",
    "build_datamodule",
    "build_module",
    "build_trainer",
    "endpoint_error",
    "fit",
    "load_run_config",
    "main",
    "parse_override",
    "resolve_config",
    "write_backbone",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The run configuration, with its defaults. ``data.kwargs`` and ``model.backbone_kwargs`` are free
# dicts; every other key must exist here (a typo is an error, not a silently ignored setting).
DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "deterministic": False,
    "output_dir": "results/pretrain/cmp",
    "model": {
        "backbone": "resnet50",
        "backbone_kwargs": {},
        "num_bins": 99,
        "max_flow": 50.0,
        "image_channels": 256,
        "sparse_channels": 16,
        "decoder_strides": [1, 2, 4],
        "decoder_channels": 128,
    },
    "optim": {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1.0e-4,
        "lr_milestones": [2 / 3.5, 3 / 3.5],
        "lr_gamma": 0.1,
    },
    "trainer": {
        "max_steps": 42000,
        "accelerator": "auto",
        "devices": "auto",
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "auto",
        "channels_last": "auto",
        "log_every_n_steps": 50,
        "val_check_interval": 1000,
        "limit_val_batches": 1.0,
        "num_sanity_val_steps": 2,
        "checkpoint_every_n_steps": 1000,
        "gradient_clip_val": None,
        "enable_progress_bar": False,
    },
    "data": {"factory": "models.data.CMPDataModule", "kwargs": {}},
    "figures": {"enabled": True, "num_samples": 4, "max_magnitude": 20.0},
}
_FREE_FORM = {"data.kwargs", "model.backbone_kwargs"}


# --------------------------------------------------------------------------- science


def endpoint_error(
    pred_flow: torch.Tensor, target_flow: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean end-point error ||pred - target||₂ over pixels (valid ones when a mask is given)."""
    if pred_flow.shape != target_flow.shape:
        raise ValueError(f"shapes differ: {tuple(pred_flow.shape)} vs {tuple(target_flow.shape)}")
    epe = (pred_flow.float() - target_flow.float()).square().sum(dim=1).sqrt()
    if valid is None:
        return epe.mean()
    weight = valid.reshape(epe.shape).to(epe.dtype)
    return (epe * weight).sum() / weight.sum().clamp(min=1.0)


class CMPModule(pl.LightningModule):
    """CMP pretraining: batches of the contract in the module docstring → loss, EPE."""

    def __init__(
        self,
        backbone: str = "resnet50",
        backbone_kwargs: dict | None = None,
        num_bins: int = 99,
        max_flow: float = 50.0,
        image_channels: int = 256,
        sparse_channels: int = 16,
        decoder_strides: Sequence[int] = (1, 2, 4),
        decoder_channels: int = 128,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1.0e-4,
        lr_milestones: Sequence[float] = (2 / 3.5, 3 / 3.5),
        lr_gamma: float = 0.1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if any(not 0.0 < m <= 1.0 for m in lr_milestones):
            raise ValueError(
                f"lr_milestones are fractions of max_steps in (0, 1], got {lr_milestones}"
            )
        self.save_hyperparameters()
        self.model = cmp_model(
            backbone=backbone,
            num_bins=num_bins,
            max_flow=max_flow,
            image_channels=image_channels,
            sparse_channels=sparse_channels,
            decoder_strides=tuple(decoder_strides),
            decoder_channels=decoder_channels,
            backbone_kwargs=backbone_kwargs,
        )
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, image: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
            sparse = sparse.contiguous(memory_format=torch.channels_last)
        return self.model(image, sparse)

    def _loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = {"image", "flow", "sparse"} - set(batch)
        if missing:
            raise ValueError(f"batch lacks {sorted(missing)}")
        logits = self(batch["image"], batch["sparse"])
        loss = cmp_loss(
            logits,
            batch["flow"],
            valid=batch.get("valid"),
            num_bins=self.model.num_bins,
            max_flow=self.model.max_flow,
        )
        return loss, logits

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        batch_size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._loss(batch)
        flow = predict_flow(
            logits, batch["flow"].shape[-2:], self.model.num_bins, self.model.max_flow
        )
        epe = endpoint_error(flow, batch["flow"], batch.get("valid"))
        batch_size = batch["image"].shape[0]
        self.log("val/loss", loss, sync_dist=True, batch_size=batch_size)
        self.log("val/epe", epe, prog_bar=True, sync_dist=True, batch_size=batch_size)

    def on_train_start(self) -> None:
        # The resume test (and a person reading the log) checks where training picked up.
        if self.trainer.is_global_zero:
            log.info("training starts at global step %d", self.global_step)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        total = self.trainer.max_steps
        if total is None or total < 1:
            total = int(self.trainer.estimated_stepping_batches)
        milestones = sorted({max(1, round(m * total)) for m in hp.lr_milestones})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=hp.lr_gamma)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


# --------------------------------------------------------------------------- synthetic data


def _texture(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A random RGB texture in [0, 1]: coarse colour blobs plus fine noise, (3, size, size)."""
    coarse = torch.from_numpy(rng.random((1, 3, cells, cells), dtype=np.float32))
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    fine = rng.random((3, size, size), dtype=np.float32)
    return np.clip(0.7 * smooth.numpy() + 0.3 * fine, 0.0, 1.0)


def synthetic_cmp_sample(
    index: int, size: int = 64, max_shift: int = 6, grid_stride: int = 32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """One sample of the batch contract: a textured square that moves by an integer (dx, dy)
    over a static textured background; guidance at the square's centre plus a zero-motion grid."""
    if size % 8 or size < 16:
        raise ValueError(f"size must be a multiple of 8 and >= 16, got {size}")
    rng = np.random.default_rng([seed, index])
    image = _texture(rng, size, cells=6)
    side = int(rng.integers(size // 4, size // 2 + 1))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    image[:, top : top + side, left : left + side] = _texture(rng, side, cells=3)
    dx, dy = (float(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    flow = np.zeros((2, size, size), np.float32)
    flow[0, top : top + side, left : left + side] = dx
    flow[1, top : top + side, left : left + side] = dy

    sparse = np.zeros((4, size, size), np.float32)
    offset = grid_stride // 2
    points = [
        (y, x) for y in range(offset, size, grid_stride) for x in range(offset, size, grid_stride)
    ]
    points.append((top + side // 2, left + side // 2))
    for y, x in points:
        sparse[0:2, y, x] = flow[:, y, x]
        sparse[2:4, y, x] = 1.0
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    return {
        "image": torch.from_numpy((image - mean) / std),
        "flow": torch.from_numpy(flow),
        "sparse": torch.from_numpy(sparse),
    }


class _InMemory(Dataset):
    def __init__(self, samples: list[dict[str, torch.Tensor]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]


class SyntheticCMPDataModule(pl.LightningDataModule):
    """Tiny in-memory DataModule of ``synthetic_cmp_sample``s (train and val disjoint by index)."""

    def __init__(
        self,
        num_train: int = 64,
        num_val: int = 8,
        size: int = 64,
        batch_size: int = 4,
        max_shift: int = 6,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_train < 1 or num_val < 0 or batch_size < 1:
            raise ValueError("num_train and batch_size must be >= 1, num_val >= 0")
        self.num_train, self.num_val, self.size = num_train, num_val, size
        self.batch_size, self.max_shift, self.seed = batch_size, max_shift, seed
        self.train_set: _InMemory | None = None
        self.val_set: _InMemory | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        make = lambda i: synthetic_cmp_sample(i, self.size, self.max_shift, seed=self.seed)  # noqa: E731
        self.train_set = _InMemory([make(i) for i in range(self.num_train)])
        self.val_set = _InMemory([make(self.num_train + i) for i in range(self.num_val)])

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_set, self.batch_size, shuffle=True, drop_last=True, generator=generator
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, shuffle=False)


# --------------------------------------------------------------------------- configuration


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
    """``a.b=value`` (value parsed as YAML, so JSON works too) as the nested ``{a: {b: value}}``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}")
    value: Any = yaml.safe_load(raw) if raw.strip() else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_run_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Defaults ← YAML file ← ``key.sub=value`` overrides (values parsed as YAML)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{path}: top level must be a mapping")
        config = _merge(config, loaded)
    for text in overrides:
        config = _merge(config, parse_override(text))
    return config


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``auto`` accelerator / precision / channels_last by what this machine will use:
    CUDA when present (bf16 autocast, channels_last), else CPU in fp32."""
    resolved = _merge(DEFAULT_CONFIG, config)
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
    return resolved


# --------------------------------------------------------------------------- building blocks


def build_datamodule(
    factory: str, kwargs: Mapping[str, Any] | None = None
) -> pl.LightningDataModule:
    """Call the class or function at dotted path ``factory`` with ``kwargs``."""
    module_name, _, attr = factory.rpartition(".")
    if not module_name:
        raise ValueError(f"data.factory must be a dotted path, got {factory!r}")
    target = getattr(importlib.import_module(module_name), attr, None)
    if target is None:
        raise ValueError(f"{module_name} has no {attr!r}")
    datamodule = target(**dict(kwargs or {}))
    if not isinstance(datamodule, pl.LightningDataModule):
        raise ValueError(f"{factory} returned {type(datamodule).__name__}, not a DataModule")
    return datamodule


def build_module(config: Mapping[str, Any]) -> CMPModule:
    """The LightningModule for a resolved config."""
    return CMPModule(
        **config["model"], **config["optim"], channels_last=bool(config["trainer"]["channels_last"])
    )


def build_trainer(config: Mapping[str, Any], output_dir: Path) -> pl.Trainer:
    """Trainer writing checkpoints / logs under ``output_dir`` (config must be resolved)."""
    t = config["trainer"]
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="step={step}",
        auto_insert_metric_name=False,
        monitor=None,  # keep the latest: resuming wants the newest state, not the best
        save_top_k=1,
        save_last=True,
        # Always overwrite last.ckpt: a resumed run whose callback settings changed would
        # otherwise write last-v1.ckpt and the next rerun would resume from the stale file.
        enable_version_counter=False,
        every_n_train_steps=int(t["checkpoint_every_n_steps"]),
    )
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
        callbacks=[checkpoint],
        log_every_n_steps=int(t["log_every_n_steps"]),
        val_check_interval=t["val_check_interval"],
        # Validation every val_check_interval *global* steps, across epoch boundaries.
        check_val_every_n_epoch=None,
        limit_val_batches=t["limit_val_batches"],
        num_sanity_val_steps=int(t["num_sanity_val_steps"]),
        gradient_clip_val=t["gradient_clip_val"],
        enable_progress_bar=bool(t["enable_progress_bar"]),
    )


def write_backbone(module: CMPModule, path: Path) -> Path:
    """Trunk weights only (``export_trunk_state_dict``), written atomically."""
    with atomic_path(path) as tmp:
        torch.save(export_trunk_state_dict(module.model.backbone), tmp)
    return path


def fit(config: Mapping[str, Any]) -> Path:
    """Train (or resume) CMP as configured; returns the output directory."""
    config = resolve_config(config)
    output_dir = Path(config["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(config["seed"]), workers=True)
    datamodule = build_datamodule(config["data"]["factory"], config["data"]["kwargs"])
    module = build_module(config)
    trainer = build_trainer(config, output_dir)
    if trainer.is_global_zero:
        write_text(output_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    last = output_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if last.exists() else None
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.is_global_zero:
        write_backbone(module, output_dir / "backbone.pth")
        if config["figures"]["enabled"]:
            from models.figures import write_training_figures

            write_training_figures(
                output_dir,
                module,
                datamodule,
                num_samples=int(config["figures"]["num_samples"]),
                max_magnitude=float(config["figures"]["max_magnitude"]),
            )
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.train", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit_parser = sub.add_parser(
        "fit", help="train CMP (resumes from output_dir/checkpoints/last.ckpt)"
    )
    fit_parser.add_argument("--config", type=Path, help="run YAML (keys: see DEFAULT_CONFIG)")
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
    fit(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
