"""Downstream benchmarks of a pre-trained trunk: segmentation fine-tuning and a linear probe.

Answers "does the pretraining help, and by how much?" the way the source papers measure it:

* **Semantic segmentation** (Zhan et al. 2019 Sec. 4.2 and App. B; Pathak et al. 2017 Sec. 4):
  an FCN head on the stride-8 trunk (3×3 conv, BN, ReLU, 1×1 conv to the classes, logits upsampled
  bilinearly to the input), per-pixel cross-entropy ignoring label 255, SGD with momentum and
  CMP's polynomial learning-rate decay (power 0.9, App. B "VOC2012 ... ResNet-50"), metric mean IoU
  over classes from one confusion matrix accumulated over the whole validation set (the PASCAL VOC
  definition: a class's IoU is TP / (TP + FP + FN); classes absent from both ground truth and
  prediction are left out of the mean).
* **How deep to fine-tune** (Pathak et al. 2017 Sec. 3 and Fig. 3, ">convX"): ``depth`` is ``all``,
  ``above_conv1`` … ``above_conv5`` (every trunk layer up to and including convX is frozen) or
  ``frozen`` (only the head learns). ``STAGES`` maps the paper's AlexNet names onto each trunk:
  for ResNets conv1 → the stem (``conv1``, ``bn1``), conv2..conv5 → ``layer1``..``layer4``; for the
  AlexNet-BN FCN conv1..conv5 are its own ``conv1``..``conv5`` (``fc6``/``fc7`` stay trainable
  under ``above_conv5``). Frozen layers also keep their BatchNorm statistics (eval mode), so a
  frozen layer computes exactly what it did after pretraining.
* **Low-shot training sets** (Pathak et al. 2017 Sec. 6, "when training data for the target task
  is scarce"): ``train_size`` keeps a random subset of that many training images, drawn from the
  run's seed, so the spread over seeds includes the choice of subset.
* **Linear probe**: frozen trunk, globally average-pooled features cached once, a logistic
  regression (one linear layer, standardised features, Adam) trained on them; top-1 accuracy.

Initialisations: ``random`` (the control, the builder's own init), or a trunk state dict from a
file: the ``backbone.pth`` that ``models.train`` writes, or user weights such as torchvision's
ImageNet ``resnet50-*.pth`` (``fc.*`` keys are ignored). Every trunk key must be present with the
right shape; otherwise ``load_trunk_weights`` refuses the file and lists what is missing.

The data sets are fixed; the run seed only drives the head's init, shuffling, augmentation and
the low-shot subset. Data sets live in ``models.downstream_data`` (synthetic stills, VOC at
protocol resolution, ImageFolder) and ``models.transfer`` (tasks outside the pretraining
generator), metrics and the paired test in ``models.downstream_metrics``; their public names are
re-exported here so ``models.finetune.mean_iou`` & co. keep working.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from models.backbones import build_backbone
from models.data import IMAGENET_MEAN, IMAGENET_STD
from models.downstream_data import (
    SYNTHETIC_TRAIN_SEED,
    SYNTHETIC_VAL_SEED,
    ArraySegmentationDataset,
    VOCSegmentationDataset,
    imagefolder_arrays,
    low_shot_indices,
    normalise,
    synthetic_classification_arrays,
    synthetic_segmentation_arrays,
)
from models.downstream_metrics import (
    IGNORE_INDEX,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    paired_test,
    verdict,
)

__all__ = [
    "DEPTHS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STAGES",
    "SYNTHETIC_TRAIN_SEED",
    "SYNTHETIC_VAL_SEED",
    "ArraySegmentationDataset",
    "EpochTimer",
    "FCNHead",
    "LinearProbeModule",
    "SegmentationModule",
    "VOCSegmentationDataset",
    "build_trunk",
    "confusion_matrix",
    "extract_features",
    "freeze_trunk",
    "imagefolder_arrays",
    "iou_per_class",
    "load_trunk_weights",
    "low_shot_indices",
    "mean_iou",
    "paired_test",
    "probe_features",
    "run_probe",
    "run_segmentation",
    "synthetic_classification_arrays",
    "synthetic_segmentation_arrays",
    "verdict",
]

# Pathak et al.'s layer names → the trunk's child modules, per architecture.
STAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "resnet": {
        "conv1": ("conv1", "bn1"),
        "conv2": ("layer1",),
        "conv3": ("layer2",),
        "conv4": ("layer3",),
        "conv5": ("layer4",),
    },
    "alexnet": {f"conv{k}": (f"conv{k}",) for k in range(1, 6)},
}
DEPTHS: tuple[str, ...] = ("all", *(f"above_conv{k}" for k in range(1, 6)), "frozen")

# --------------------------------------------------------------------------- trunks


def _family(arch: str) -> str:
    if arch.startswith("resnet"):
        return "resnet"
    if arch.startswith("alexnet"):
        return "alexnet"
    raise ValueError(f"no layer map for backbone {arch!r}; known families: {sorted(STAGES)}")


def load_trunk_weights(trunk: nn.Module, path: str | Path) -> nn.Module:
    """Load a trunk state dict from ``path`` into ``trunk`` (in place; returns it).

    Accepts ``backbone.pth`` from ``models.train`` and torchvision-style files (``fc.*`` is
    dropped; ``module.`` / ``_orig_mod.`` prefixes are stripped). Every trunk key must be present
    with the trunk's shape; anything else raises ``ValueError`` naming the offending keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"backbone weights not found: {path}")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and "state_dict" in loaded and len(loaded) <= 4:
        loaded = loaded["state_dict"]  # a Lightning-style wrapper around the weights
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(loaded).__name__}")
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        if not key.startswith("fc."):  # the ImageNet classifier has no place on a trunk
            state[key] = value
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing trunk keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
        raise ValueError(f"{path} does not fit the trunk: " + "; ".join(parts))
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{path}: {len(wrong)} keys have the wrong shape, e.g. {k} "
            f"{tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        )
    trunk.load_state_dict(state, strict=True)
    return trunk


def _preview(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … (+{len(keys) - limit})" if len(keys) > limit else "")


def build_trunk(
    arch: str,
    weights: str | Path | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, int]:
    """A stride-8 trunk (``build_backbone``) with random init or the weights at ``weights``."""
    trunk, channels = build_backbone(arch, **dict(backbone_kwargs or {}))
    if weights is not None:
        load_trunk_weights(trunk, weights)
    return trunk, channels


def freeze_trunk(trunk: nn.Module, depth: str, arch: str) -> list[str]:
    """Freeze the trunk's layers up to ``depth`` (see ``DEPTHS``); returns the frozen children.

    Parameters of frozen children get ``requires_grad = False``; the others are left trainable.
    ``SegmentationModule`` keeps frozen children in eval mode (BatchNorm statistics fixed).
    """
    if depth not in DEPTHS:
        raise ValueError(f"unknown depth {depth!r}; choose one of {list(DEPTHS)}")
    for parameter in trunk.parameters():
        parameter.requires_grad_(True)
    if depth == "all":
        return []
    if depth == "frozen":
        names = [name for name, _ in trunk.named_children()]
    else:
        stages = STAGES[_family(arch)]
        last = int(depth[-1])
        names = [m for k in range(1, last + 1) for m in stages[f"conv{k}"]]
    children = dict(trunk.named_children())
    for name in names:
        for parameter in children[name].parameters():
            parameter.requires_grad_(False)
    return names


# --------------------------------------------------------------------------- timing


class EpochTimer(pl.Callback):
    """Wall-clock seconds of each training epoch, validation excluded (Lightning runs the
    end-of-epoch validation before ``on_train_epoch_end``, so the clock stops when it starts)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start: float | None = None

    def _stop(self) -> None:
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


# --------------------------------------------------------------------------- segmentation


class FCNHead(nn.Module):
    """3×3 conv + BN + ReLU + 1×1 conv to class logits, on the stride-8 feature map."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256) -> None:
        super().__init__()
        if min(in_channels, num_classes, channels) < 1:
            raise ValueError("in_channels, num_classes and channels must be >= 1")
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.relu(self.bn(self.conv(features))))


class SegmentationModule(pl.LightningModule):
    """Trunk + ``FCNHead``; batches ``{"image": (B,3,H,W), "label": (B,H,W) int64}``.

    Logs ``train/loss`` and, over the whole validation set, ``val/miou``; the last value is kept
    in ``self.val_miou``.
    """

    def __init__(
        self,
        trunk: nn.Module,
        channels: int,
        num_classes: int,
        arch: str,
        depth: str = "all",
        head_channels: int = 256,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1.0e-4,
        poly_power: float = 0.9,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or poly_power < 0:
            raise ValueError("need lr > 0, 0 <= momentum < 1, weight_decay >= 0, poly_power >= 0")
        self.save_hyperparameters(ignore=["trunk"])
        self.trunk = trunk
        self.head = FCNHead(channels, num_classes, head_channels)
        self.frozen_children = freeze_trunk(trunk, depth, arch)
        self.num_classes = num_classes
        self.val_miou = float("nan")
        self._confusion: torch.Tensor | None = None

    def train(self, mode: bool = True) -> SegmentationModule:
        super().train(mode)
        children = dict(self.trunk.named_children())
        for name in self.frozen_children:  # frozen layers keep their pretraining BN statistics
            children[name].eval()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.trunk(image))
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"], ignore_index=self.hparams.ignore_index)
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._confusion = torch.zeros(
            self.num_classes, self.num_classes, dtype=torch.long, device=self.device
        )

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch["image"]).argmax(1)
        self._confusion += confusion_matrix(
            pred, batch["label"], self.num_classes, self.hparams.ignore_index
        )

    def on_validation_epoch_end(self) -> None:
        confusion = self.trainer.strategy.reduce(self._confusion.double(), reduce_op="sum")
        self.val_miou = mean_iou(confusion)
        self.log("val/miou", self.val_miou, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            trainable, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        # CMP App. B: lr · (1 - step/total)^0.9, stepped per iteration
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: max(0.0, 1.0 - step / total) ** hp.poly_power
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


def _trainer(epochs: int, accelerator: str, timer: EpochTimer, validate: bool) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=True,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        # validate once, after the last epoch: the benchmark reports the final model
        check_val_every_n_epoch=epochs if validate else None,
        limit_val_batches=1.0 if validate else 0,
        callbacks=[timer],
        deterministic="warn",
    )


def _accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def run_segmentation(
    *,
    arch: str,
    weights: str | Path | None,
    train: tuple[np.ndarray, np.ndarray] | Dataset,
    val: tuple[np.ndarray, np.ndarray] | Dataset,
    num_classes: int,
    seed: int,
    depth: str = "all",
    train_size: int | None = None,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1.0e-4,
    poly_power: float = 0.9,
    head_channels: int = 256,
    backbone_kwargs: Mapping[str, Any] | None = None,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Fine-tune a trunk (random or ``weights``) with an FCN head on ``train``, evaluate mIoU on
    ``val``. Returns ``{"miou", "seconds_per_epoch" (median), "epoch_seconds", "train_images"}``.

    ``train`` / ``val`` are (images, labels) arrays of one size (flipped in training, validated
    in batches) or datasets of their own (e.g. ``VOCSegmentationDataset``, which augments itself
    and yields whole images of any size: validated one image at a time).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    pl.seed_everything(seed, workers=True)
    if isinstance(train, Dataset):
        train_set: Dataset = Subset(train, low_shot_indices(len(train), train_size, seed).tolist())
    else:
        keep = low_shot_indices(len(train[0]), train_size, seed)
        train_set = ArraySegmentationDataset(train[0][keep], train[1][keep], flip=True)
    val_is_dataset = isinstance(val, Dataset)
    val_set = val if val_is_dataset else ArraySegmentationDataset(*val)
    trunk, channels = build_trunk(arch, weights, backbone_kwargs)
    module = SegmentationModule(
        trunk,
        channels,
        num_classes,
        arch,
        depth=depth,
        head_channels=head_channels,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        poly_power=poly_power,
    )
    # drop_last keeps BatchNorm away from a last batch of one image; never drop everything
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train_set,
        batch_size=min(batch_size, len(train_set)),
        shuffle=True,
        drop_last=len(train_set) > batch_size,
        generator=generator,
    )
    val_loader = DataLoader(val_set, batch_size=1 if val_is_dataset else batch_size)
    timer = EpochTimer()
    trainer = _trainer(epochs, _accelerator(accelerator), timer, validate=True)
    trainer.fit(module, train_loader, val_loader)
    return {
        "miou": module.val_miou,
        "seconds_per_epoch": timer.median,
        "epoch_seconds": list(timer.seconds),
        "train_images": len(train_set),
    }


# --------------------------------------------------------------------------- linear probe


@torch.no_grad()
def extract_features(
    trunk: nn.Module, images: np.ndarray, batch_size: int = 64, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Globally average-pooled trunk features (N, C) of uint8 images (N, H, W, 3), eval mode."""
    trunk = trunk.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalise(images[start : start + batch_size]).to(device)
        out.append(trunk(x).mean(dim=(2, 3)).float().cpu())
    return torch.cat(out)


class LinearProbeModule(pl.LightningModule):
    """Logistic regression on standardised cached features; logs ``val/top1`` (kept in
    ``self.val_top1``)."""

    def __init__(
        self,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        num_classes: int,
        lr: float = 1.0e-2,
        weight_decay: float = 1.0e-4,
    ) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
        self.save_hyperparameters(ignore=["feature_mean", "feature_std"])
        # standardising makes one lr fit every trunk (random trunks give tiny, uneven features)
        self.register_buffer("feature_mean", feature_mean.float().clone())
        self.register_buffer("feature_std", feature_std.float().clamp(min=1e-6).clone())
        self.linear = nn.Linear(feature_mean.numel(), num_classes)
        self.val_top1 = float("nan")
        self._hits = 0
        self._seen = 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.feature_mean) / self.feature_std)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        features, labels = batch
        loss = F.cross_entropy(self(features), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._hits, self._seen = 0, 0

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        features, labels = batch
        self._hits += int((self(features).argmax(1) == labels).sum())
        self._seen += len(labels)

    def on_validation_epoch_end(self) -> None:
        self.val_top1 = self._hits / max(1, self._seen)
        self.log("val/top1", self.val_top1, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


def probe_features(
    arch: str,
    weights: str | Path | None,
    train_images: np.ndarray,
    val_images: np.ndarray,
    backbone_kwargs: Mapping[str, Any] | None = None,
    accelerator: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of the training and validation images under one trunk (random init
    draws from torch's global RNG: seed first)."""
    trunk, _ = build_trunk(arch, weights, backbone_kwargs)
    device = "cuda" if _accelerator(accelerator) in ("gpu", "cuda") else "cpu"
    return (
        extract_features(trunk, train_images, device=device),
        extract_features(trunk, val_images, device=device),
    )


def run_probe(
    *,
    arch: str,
    weights: str | Path | None,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    seed: int,
    train_size: int | None = None,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1.0e-2,
    weight_decay: float = 1.0e-4,
    backbone_kwargs: Mapping[str, Any] | None = None,
    accelerator: str = "auto",
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Linear probe: frozen trunk, pooled features, logistic regression; top-1 on ``val``.

    ``features``: the trunk's pooled features of every training and validation image, computed
    once by the caller (``probe_features``) — valid when ``weights`` fix the trunk, so the seeds
    of one weights file share them; a random trunk differs per seed and must not pass them.
    Returns ``{"top1", "seconds_per_epoch" (median, head training), "epoch_seconds",
    "extract_seconds" (features of both sets; 0 when given), "train_images"}``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    pl.seed_everything(seed, workers=True)
    keep = low_shot_indices(len(train[0]), train_size, seed)
    extract_seconds = 0.0
    if features is None:
        start = time.perf_counter()
        train_x, val_x = probe_features(
            arch, weights, train[0][keep], val[0], backbone_kwargs, accelerator
        )
        extract_seconds = time.perf_counter() - start
    else:
        if len(features[0]) != len(train[0]) or len(features[1]) != len(val[0]):
            raise ValueError("features must cover every training and validation image")
        train_x, val_x = features[0][keep], features[1]
    train_y = torch.as_tensor(np.asarray(train[1])[keep], dtype=torch.long)
    val_y = torch.as_tensor(np.asarray(val[1]), dtype=torch.long)
    for name, y in (("train", train_y), ("val", val_y)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"{name} labels outside [0, {num_classes})")
    std, mean = torch.std_mean(train_x, dim=0, unbiased=False)
    # the head's init depends on the seed only, not on whether this call built a trunk: every
    # initialisation of one seed starts its probe from the same head (a paired comparison)
    torch.manual_seed(seed)
    module = LinearProbeModule(mean, std, num_classes, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True, generator=generator
    )
    val_loader = DataLoader(TensorDataset(val_x, val_y), batch_size=1024)
    timer = EpochTimer()
    trainer = _trainer(epochs, _accelerator(accelerator), timer, validate=True)
    trainer.fit(module, train_loader, val_loader)
    return {
        "top1": module.val_top1,
        "seconds_per_epoch": timer.median,
        "epoch_seconds": list(timer.seconds),
        "extract_seconds": extract_seconds,
        "train_images": len(keep),
    }
