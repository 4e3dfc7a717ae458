"""Transfer tasks: disjoint from the pretraining generator (asserted), well-formed, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from models import transfer
from pipeline import synthetic_scene


def test_transfer_tasks_share_no_texture_source_with_the_pretraining_generator() -> None:
    # by pixel content: whatever file or alias (e.g. skimage's cat == chelsea) a photo comes from
    pretraining = {transfer.photo_digest(image) for image, _ in synthetic_scene._photos()}
    assert len(pretraining) == len(synthetic_scene.TEXTURE_PHOTOS)
    used = {transfer.photo_digest(image) for image, _ in transfer.transfer_photos()}
    assert len(used) == len(transfer.TRANSFER_PHOTOS)
    assert not pretraining & used
    # and by name: no transfer file is one of the generator's photographs
    stems = {name.split(".")[0] for _, name in transfer.TRANSFER_PHOTOS}
    assert not stems & set(synthetic_scene.TEXTURE_PHOTOS)


def test_mosaics_are_labelled_by_texture_and_seeded_per_split() -> None:
    images, labels = transfer.mosaic_segmentation_arrays(6, "train", size=32)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (6, 32, 32) and int(labels.max()) < len(transfer.TRANSFER_PHOTOS)
    assert all(len(np.unique(label)) >= 2 for label in labels)  # 2..5 regions, distinct classes
    again = transfer.mosaic_segmentation_arrays(6, "train", size=32)
    assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)
    val = transfer.mosaic_segmentation_arrays(6, "val", size=32)
    assert not np.array_equal(val[0], images)
    with pytest.raises(ValueError, match="split"):
        transfer.mosaic_segmentation_arrays(2, "test")


def test_patches_are_class_balanced() -> None:
    images, labels = transfer.patch_classification_arrays(12, "val", size=32)
    assert images.shape == (12, 32, 32, 3)
    assert np.bincount(labels).tolist() == [2] * len(transfer.TRANSFER_PHOTOS)


def _fake_voc(root, sizes: dict[str, tuple[int, int]]) -> None:
    from PIL import Image

    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name, (h, w) in sizes.items():
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        label = np.zeros((h, w), np.uint8)
        label[:, w // 2 :] = 7
        Image.fromarray(label, mode="L").convert("P").save(
            base / "SegmentationClass" / f"{name}.png"
        )
    for split in ("train", "val"):
        (base / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(sizes) + "\n")


def test_voc_trains_on_random_crops_and_evaluates_whole_images(tmp_path) -> None:
    import torch

    from models.downstream_data import VOCSegmentationDataset

    _fake_voc(tmp_path, {"a": (50, 70), "b": (37, 41)})
    torch.manual_seed(0)
    train = VOCSegmentationDataset(tmp_path, "train", True, crop_size=32, scale_range=(0.5, 2.0))
    for k in range(len(train)):
        item = train[k]
        assert item["image"].shape == (3, 32, 32) and item["label"].shape == (32, 32)
        assert set(item["label"].unique().tolist()) <= {0, 7, 255}
    val = VOCSegmentationDataset(tmp_path, "val", False)
    assert len(val) == 2  # the whole split
    whole = val[1]
    assert whole["image"].shape == (3, 40, 48)  # 37×41 padded to multiples of 8
    assert (whole["label"][37:] == 255).all() and (whole["label"][:, 41:] == 255).all()
    assert whole["label"][:37, :20].eq(0).all() and whole["label"][:37, 21:41].eq(7).all()
