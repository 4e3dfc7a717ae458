"""Transfer tasks: downstream data that shares nothing with the pretraining generator.

The synthetic stills of ``models.downstream_data`` come from ``pipeline.synthetic``, the very
generator of the pretraining videos: same photographs as textures, same polygon shapes, same
classes. Fine-tuning on them measures in-domain fitting. A representation *transfers* when it helps
on images it was not built from (Pathak et al. 2017 Sec. 4 and Zhan et al. 2019 Sec. 4.2 move from
video pretraining to PASCAL VOC). Without a download, the closest stand-in is a task whose every
ingredient is disjoint from the generator's:

* **textures**: ``TRANSFER_PHOTOS``, real photographs shipped in installed packages that
  ``pipeline.synthetic_scene.TEXTURE_PHOTOS`` does not use — scikit-image's ``retina``,
  ``hubble_deep_field``, ``motorcycle_left``, ``cell``, ``clock_motion`` and matplotlib's sample
  ``grace_hopper`` (``tests/test_transfer.py`` asserts, by pixel content, that no transfer photo is
  a pretraining photo);
* **class semantics**: the class is *which photograph a region comes from* (a material /
  texture-recognition problem), not the object shape of the generator's classes;
* **shapes**: regions are cells of a Voronoi partition with wavy borders (a random smooth
  displacement of the distance field), never the generator's discs, squares, triangles, stars or
  crosses;
* **backgrounds**: there is none; every pixel belongs to some texture region, and the
  generator's background photographs never appear.

Two tasks: ``mosaic_segmentation_arrays`` (per-pixel texture class of a 2–5-region mosaic, mIoU)
and ``patch_classification_arrays`` (one texture patch per image, top-1). Training patches are cut
from the left ``TRAIN_FRACTION`` of every photograph and validation patches from the rest, so the
validation set holds pixels no training image contains. Patches are drawn at a random scale,
rotation and flip, and grey photographs get a random tint (colour alone must not name the class).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from pipeline.synthetic_scene import photo_rgb

__all__ = [
    "TRAIN_FRACTION",
    "TRANSFER_PHOTOS",
    "TRANSFER_TRAIN_SEED",
    "TRANSFER_VAL_SEED",
    "mosaic_segmentation_arrays",
    "patch_classification_arrays",
    "photo_digest",
    "transfer_photo_paths",
    "transfer_photos",
]

# (package, file inside the package's data folder): real photographs, none of them used by
# pipeline.synthetic_scene.TEXTURE_PHOTOS. The class id of a photo is its index here.
TRANSFER_PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "retina.jpg"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "cell.png"),
    ("skimage", "clock_motion.png"),
    ("matplotlib", "grace_hopper.jpg"),
)
TRAIN_FRACTION = 0.6  # columns [0, 0.6 W) feed training patches, the rest validation patches
TRANSFER_TRAIN_SEED = 2**41  # data seeds of their own, far from every other stream
TRANSFER_VAL_SEED = 2**41 + 1


def transfer_photo_paths() -> list[Path]:
    """Absolute paths of ``TRANSFER_PHOTOS`` in the installed packages."""
    import matplotlib
    import skimage

    folders = {
        "skimage": Path(skimage.__file__).parent / "data",
        "matplotlib": Path(matplotlib.get_data_path()) / "sample_data",
    }
    paths = [folders[package] / name for package, name in TRANSFER_PHOTOS]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise ValueError(f"transfer photographs missing from the installed packages: {absent}")
    return paths


def photo_digest(image: np.ndarray) -> str:
    """SHA-256 of a photograph's RGB uint8 pixels (grey repeated to 3 channels, alpha dropped)."""
    rgb, _ = photo_rgb(image, np.uint8)
    return hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def transfer_photos() -> tuple[tuple[np.ndarray, bool], ...]:
    """Each transfer photo as read-only uint8 RGB, with a flag 'was greyscale'."""
    import imageio.v3 as iio

    photos = []
    for path in transfer_photo_paths():
        image, gray = photo_rgb(iio.imread(os.fspath(path)), np.uint8)
        image.setflags(write=False)
        photos.append((image, gray))
    return tuple(photos)


def _patch(rng: np.random.Generator, class_id: int, size: int, split: str) -> np.ndarray:
    """A size×size patch of photo ``class_id`` from its train or val columns: random scale
    (0.5–1.5 of the photo's short side over 4 patches), rotation, flip; grey photos tinted."""
    photo, gray = transfer_photos()[class_id]
    h, w = photo.shape[:2]
    cut = int(round(w * TRAIN_FRACTION))
    region = photo[:, :cut] if split == "train" else photo[:, cut:]
    rh, rw = region.shape[:2]
    side = min(rh, rw, int(min(h, w) / 4 * rng.uniform(0.5, 1.5)))
    side = max(8, side)
    top = int(rng.integers(0, rh - side + 1))
    left = int(rng.integers(0, rw - side + 1))
    crop = region[top : top + side, left : left + side]
    centre = ((side - 1) / 2.0, (side - 1) / 2.0)
    rotation = cv2.getRotationMatrix2D(centre, float(rng.uniform(0.0, 360.0)), 1.0)
    crop = cv2.warpAffine(crop, rotation, (side, side), borderMode=cv2.BORDER_REFLECT101)
    patch = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = patch.astype(np.float32)
    if gray:
        patch *= rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    return np.clip(patch, 0, 255).astype(np.uint8)


def _wavy_voronoi(rng: np.random.Generator, size: int, regions: int) -> np.ndarray:
    """(size, size) int region index: Voronoi cells of random sites, borders made wavy by a
    smooth random displacement of the sampling grid."""
    sites = rng.uniform(0, size, size=(regions, 2)).astype(np.float32)
    coarse = rng.normal(0.0, size / 8.0, size=(2, 4, 4)).astype(np.float32)
    shift = [cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys, xs = ys + shift[0], xs + shift[1]
    distance = (ys[None] - sites[:, 0, None, None]) ** 2 + (xs[None] - sites[:, 1, None, None]) ** 2
    return distance.argmin(axis=0)


def _split_seed(split: str) -> int:
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, got {split!r}")
    return TRANSFER_TRAIN_SEED if split == "train" else TRANSFER_VAL_SEED


def mosaic_segmentation_arrays(
    n: int, split: str, size: int = 64, regions: tuple[int, int] = (2, 5)
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` mosaics (N, size, size, 3) uint8 and their per-pixel texture classes (N, size, size)
    uint8; every mosaic holds 2..5 regions of distinct classes."""
    if n < 1 or size < 16 or not 1 <= regions[0] <= regions[1] <= len(TRANSFER_PHOTOS):
        raise ValueError(f"need n >= 1, size >= 16, 1 <= regions <= classes; got {n} {size}")
    rng = np.random.default_rng([_split_seed(split), 0])
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n, size, size), np.uint8)
    for k in range(n):
        count = int(rng.integers(regions[0], regions[1] + 1))
        classes = rng.permutation(len(TRANSFER_PHOTOS))[:count]
        cells = _wavy_voronoi(rng, size, count)
        for cell, class_id in enumerate(classes):
            inside = cells == cell
            images[k][inside] = _patch(rng, int(class_id), size, split)[inside]
            labels[k][inside] = class_id
    return images, labels


def patch_classification_arrays(
    n: int, split: str, size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` texture patches (N, size, size, 3) uint8 and their classes (N,) int64, classes
    balanced (cycled) and the order shuffled."""
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got {n} and {size}")
    rng = np.random.default_rng([_split_seed(split), 1])
    labels = rng.permutation(np.arange(n) % len(TRANSFER_PHOTOS)).astype(np.int64)
    images = np.stack([_patch(rng, int(c), size, split) for c in labels])
    return images, labels
