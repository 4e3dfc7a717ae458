"""Data of the downstream benchmark: in-memory arrays, the synthetic stills, VOC and ImageFolder.

Synthetic data: ``render_labelled_frames`` stills drawn from seeds ``SYNTHETIC_TRAIN_SEED`` and
``SYNTHETIC_VAL_SEED`` (2**40 and 2**40 + 1). Pretraining videos use
``pipeline.stages.synthesize.video_seed``, a 32-bit value below 2**32, and ``render_clip``'s own
random stream, so the benchmark never sees a pretraining frame. These stills come from the same
generator (shapes, photos) as the pretraining videos, so they measure in-domain fitting, not
transfer; ``models.transfer`` holds the tasks that do not.

PASCAL VOC 2012 follows the protocol of Zhan et al. 2019 App. B / Pathak et al. 2017 Sec. 4 at
full resolution (``VOCSegmentationDataset``): training images are randomly rescaled, cropped
(padding with the ignore label) and flipped; evaluation runs on every whole image of the
validation split, padded to a multiple of 8 with ignored pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from models.data import normalise_images
from models.downstream_metrics import IGNORE_INDEX

__all__ = [
    "SYNTHETIC_TRAIN_SEED",
    "SYNTHETIC_VAL_SEED",
    "ArraySegmentationDataset",
    "VOCSegmentationDataset",
    "imagefolder_arrays",
    "low_shot_indices",
    "normalise",
    "synthetic_classification_arrays",
    "synthetic_segmentation_arrays",
]

# Far above the 32-bit seeds of pretraining videos (``video_seed`` draws one uint32).
SYNTHETIC_TRAIN_SEED = 2**40
SYNTHETIC_VAL_SEED = 2**40 + 1


def normalise(images: np.ndarray) -> torch.Tensor:
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
        self.images = normalise(images)
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


def _voc_split(root: str | Path, image_set: str) -> Any:
    """``torchvision.datasets.VOCSegmentation`` of one split, no download; a clear error when the
    VOCtrainval layout is absent."""
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
    return torchvision.datasets.VOCSegmentation(
        str(root), year="2012", image_set=image_set, download=False
    )


def _pad_to(image: np.ndarray, label: np.ndarray, height: int, width: int) -> tuple:
    """Pad image (zeros, i.e. black) and label (``IGNORE_INDEX``) at the bottom/right."""
    h, w = label.shape
    ph, pw = max(0, height - h), max(0, width - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    return image, label


class VOCSegmentationDataset(Dataset):
    """PASCAL VOC 2012 segmentation at full resolution (module docstring).

    ``train=True``: random scale in ``scale_range`` (bilinear image, nearest labels), random
    ``crop_size``² crop (padding with ignored pixels), random horizontal flip. ``train=False``:
    the whole image, padded to a multiple of 8 with ignored pixels (they never count in mIoU).
    ``limit`` keeps the first images of the split (a smoke run; null = the whole split).
    """

    def __init__(
        self,
        root: str | Path,
        image_set: str,
        train: bool,
        crop_size: int = 320,
        scale_range: tuple[float, float] = (0.5, 2.0),
        limit: int | None = None,
    ) -> None:
        if crop_size % 8 or crop_size < 32:
            raise ValueError(f"crop_size must be a multiple of 8 >= 32, got {crop_size}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.voc = _voc_split(root, image_set)
        self.count = len(self.voc) if limit is None else min(int(limit), len(self.voc))
        self.train, self.crop_size = train, crop_size
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def __len__(self) -> int:
        return self.count

    def _augment(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        # torch's global RNG is seeded by seed_everything (workers too): reproducible draws
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        h, w = label.shape
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        crop = self.crop_size
        image, label = _pad_to(image, label, crop, crop)
        h, w = label.shape
        top = int(torch.randint(0, h - crop + 1, ()))
        left = int(torch.randint(0, w - crop + 1, ()))
        image = image[top : top + crop, left : left + crop]
        label = label[top : top + crop, left : left + crop]
        if bool(torch.rand(()) < 0.5):
            image, label = image[:, ::-1], label[:, ::-1]
        return image, label

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, target = self.voc[index]
        image = np.asarray(image.convert("RGB"))
        label = np.asarray(target, dtype=np.uint8)
        if self.train:
            image, label = self._augment(image, label)
        else:
            h, w = label.shape
            image, label = _pad_to(image, label, -(-h // 8) * 8, -(-w // 8) * 8)
        return {
            "image": normalise(np.ascontiguousarray(image)[None])[0],
            "label": torch.from_numpy(np.ascontiguousarray(label)).long(),
        }


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
