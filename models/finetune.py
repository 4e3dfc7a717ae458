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

Synthetic data: ``render_labelled_frames`` stills drawn from seeds ``SYNTHETIC_TRAIN_SEED`` and
``SYNTHETIC_VAL_SEED`` (2**40 and 2**40 + 1). Pretraining videos use
``pipeline.stages.synthesize.video_seed``, a 32-bit value below 2**32, and ``render_clip``'s own
random stream, so the benchmark never sees a pretraining frame. The data sets are fixed; the run
seed only drives the head's init, shuffling, augmentation and the low-shot subset.
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
from torch.utils.data import DataLoader, Dataset, TensorDataset

from models.backbones import build_backbone
from models.data import IMAGENET_MEAN, IMAGENET_STD, normalise_images

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
    "build_trunk",
    "confusion_matrix",
    "extract_features",
    "freeze_trunk",
    "imagefolder_arrays",
    "iou_per_class",
    "load_trunk_weights",
    "low_shot_indices",
    "mean_iou",
    "run_probe",
    "run_segmentation",
    "synthetic_classification_arrays",
    "synthetic_segmentation_arrays",
    "voc_arrays",
]

IGNORE_INDEX = 255

# Far above the 32-bit seeds of pretraining videos (``video_seed`` draws one uint32).
SYNTHETIC_TRAIN_SEED = 2**40
SYNTHETIC_VAL_SEED = 2**40 + 1

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


# --------------------------------------------------------------------------- metric


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction.

    Pixels whose target is ``ignore_index`` are skipped; any other target outside
    [0, num_classes) is an error (a label map that does not match the class count).
    """
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target labels outside [0, {num_classes}) and not {ignore_index}")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"predicted labels outside [0, {num_classes})")
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of each class, TP / (TP + FP + FN); NaN where the class is in neither GT nor pred."""
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be square, got {tuple(confusion.shape)}")
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean of ``iou_per_class`` over the classes that occur (PASCAL VOC's mIoU)."""
    iou = iou_per_class(confusion)
    present = ~torch.isnan(iou)
    if not bool(present.any()):
        raise ValueError("empty confusion matrix: no labelled pixels")
    return float(iou[present].mean())


# --------------------------------------------------------------------------- data


def _normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB → float32 (N, 3, H, W) with ImageNet mean/std (as in pretraining)."""
    return normalise_images(torch.from_numpy(np.ascontiguousarray(images)))


class ArraySegmentationDataset(Dataset):
    """Images (N, H, W, 3) uint8 and label maps (N, H, W) → normalised tensors; random
    horizontal flips when ``flip`` (the only augmentation: crops are fixed-size already)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, flip: bool = False) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or labels.shape != images.shape[:3]:
            raise ValueError(
                f"need images (N,H,W,3) and labels (N,H,W), got {images.shape} {labels.shape}"
            )
        if images.shape[1] % 8 or images.shape[2] % 8:
            raise ValueError(f"image size must be a multiple of 8, got {images.shape[1:3]}")
        self.images = _normalise(images)
        self.labels = torch.from_numpy(np.ascontiguousarray(labels)).long()
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label = self.images[index], self.labels[index]
        # torch's global RNG is seeded by seed_everything (workers too), so flips are reproducible
        if self.flip and bool(torch.rand(()) < 0.5):
            image, label = image.flip(-1), label.flip(-1)
        return {"image": image, "label": label}


def _synthetic_split(
    n_train: int, n_val: int, size: int, target: int, render_kwargs: dict[str, Any]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, val) pairs of images and ``render_labelled_frames``'s output number ``target``."""
    from pipeline.synthetic import render_labelled_frames

    splits = []
    for seed, n in ((SYNTHETIC_TRAIN_SEED, n_train), (SYNTHETIC_VAL_SEED, n_val)):
        rendered = render_labelled_frames(seed=seed, n=n, height=size, width=size, **render_kwargs)
        splits.append((rendered[0], rendered[target]))
    return splits[0], splits[1]


def synthetic_segmentation_arrays(
    n_train: int, n_val: int, size: int = 64, **render_kwargs: Any
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, val) pairs of images and class maps from the synthetic generator (module doc)."""
    return _synthetic_split(n_train, n_val, size, 1, render_kwargs)


def synthetic_classification_arrays(
    n_train: int, n_val: int, size: int = 64, **render_kwargs: Any
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, val) pairs of images and image labels (class of the largest object)."""
    return _synthetic_split(n_train, n_val, size, 2, render_kwargs)


def _resize_centre_crop(image: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    """Resize the shorter side to ``size`` and cut the central size×size square."""
    import cv2

    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top : top + size, left : left + size]


def voc_arrays(
    root: str | Path, image_set: str, size: int = 64, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """PASCAL VOC 2012 segmentation (``torchvision.datasets.VOCSegmentation``, no download):
    images and labels resized (shorter side ``size``) and centre-cropped to size×size.

    The fixed centre crop keeps a CPU-sized run cheap; labels use nearest-neighbour resizing so
    the 255 "void" border stays ignored.
    """
    import torchvision

    root = Path(root)
    base = root / "VOCdevkit" / "VOC2012"
    needed = [
        base / "JPEGImages",
        base / "SegmentationClass",
        base / "ImageSets" / "Segmentation" / f"{image_set}.txt",
    ]
    absent = [str(p) for p in needed if not p.exists()]
    if absent:
        raise ValueError(
            f"PASCAL VOC 2012 not found under {root} (missing {', '.join(absent)}); expected "
            "the VOCtrainval layout root/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets}"
        )
    dataset = torchvision.datasets.VOCSegmentation(
        str(root), year="2012", image_set=image_set, download=False
    )
    count = len(dataset) if limit is None else min(limit, len(dataset))
    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.empty((count, size, size), np.uint8)
    for k in range(count):
        image, target = dataset[k]
        images[k] = _resize_centre_crop(np.asarray(image.convert("RGB")), size, nearest=False)
        labels[k] = _resize_centre_crop(np.asarray(target), size, nearest=True)
    return images, labels


def imagefolder_arrays(
    root: str | Path, size: int = 64, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An ``ImageFolder`` layout (root/<class>/<image>) as resized, centre-cropped arrays, the
    labels and the class names."""
    import torchvision

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"ImageFolder root not found: {root}")
    dataset = torchvision.datasets.ImageFolder(str(root))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.empty(count, np.int64)
    # Sample evenly over the sorted list so a limit keeps every class (ImageFolder sorts by class).
    picks = np.linspace(0, len(dataset) - 1, count).round().astype(int) if count else []
    for k, index in enumerate(picks):
        image, label = dataset[int(index)]
        images[k] = _resize_centre_crop(np.asarray(image.convert("RGB")), size, nearest=False)
        labels[k] = label
    return images, labels, list(dataset.classes)


def low_shot_indices(n: int, train_size: int | None, seed: int) -> np.ndarray:
    """Indices of a random ``train_size``-image subset of ``n`` (all of them when None)."""
    if train_size is None:
        return np.arange(n)
    if not 1 <= train_size <= n:
        raise ValueError(f"train_size must be in [1, {n}], got {train_size}")
    rng = np.random.default_rng([int(seed), 0x10_5407])  # own stream: not the head's init
    return np.sort(rng.permutation(n)[:train_size])


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
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
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
    ``val``. Returns ``{"miou", "seconds_per_epoch" (median), "epoch_seconds", "train_images"}``."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    pl.seed_everything(seed, workers=True)
    keep = low_shot_indices(len(train[0]), train_size, seed)
    train_set = ArraySegmentationDataset(train[0][keep], train[1][keep], flip=True)
    val_set = ArraySegmentationDataset(*val)
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
    val_loader = DataLoader(val_set, batch_size=batch_size)
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
        x = _normalise(images[start : start + batch_size]).to(device)
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
) -> dict[str, Any]:
    """Linear probe: frozen trunk, pooled features, logistic regression; top-1 on ``val``.

    Returns ``{"top1", "seconds_per_epoch" (median, head training), "epoch_seconds",
    "extract_seconds" (features of both sets, once), "train_images"}``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    pl.seed_everything(seed, workers=True)
    keep = low_shot_indices(len(train[0]), train_size, seed)
    trunk, _ = build_trunk(arch, weights, backbone_kwargs)
    device = "cuda" if _accelerator(accelerator) in ("gpu", "cuda") else "cpu"
    start = time.perf_counter()
    train_x = extract_features(trunk, train[0][keep], device=device)
    val_x = extract_features(trunk, val[0], device=device)
    extract_seconds = time.perf_counter() - start
    train_y = torch.as_tensor(np.asarray(train[1])[keep], dtype=torch.long)
    val_y = torch.as_tensor(np.asarray(val[1]), dtype=torch.long)
    for name, y in (("train", train_y), ("val", val_y)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"{name} labels outside [0, {num_classes})")
    std, mean = torch.std_mean(train_x, dim=0, unbiased=False)
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
