"""Mask scores against known masks and the DAVIS-layout reader."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.evaluate import (
    aggregate_scores,
    evaluate_masks,
    list_davis_sequences,
    mask_scores,
    read_davis_sequence,
)


def test_scores_of_known_masks():
    gt = np.zeros((10, 10), bool)
    gt[0:4, 0:5] = True  # 20 px
    pred = np.zeros((10, 10), bool)
    pred[2:6, 0:5] = True  # 20 px, 10 of them on the truth
    s = mask_scores(pred, gt)
    assert (s["tp"], s["fp"], s["fn"]) == (10, 10, 10)
    assert s["iou"] == pytest.approx(10 / 30)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)
    perfect = mask_scores(gt, gt)
    assert perfect["iou"] == perfect["precision"] == perfect["recall"] == 1.0


def test_empty_mask_conventions():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert mask_scores(empty, empty) == {
        "iou": 1.0, "precision": 1.0, "recall": 1.0, "tp": 0, "fp": 0, "fn": 0
    }  # fmt: skip
    missed = mask_scores(empty, full)
    assert (missed["iou"], missed["precision"], missed["recall"]) == (0.0, 0.0, 0.0)
    spurious = mask_scores(full, empty)
    assert (spurious["iou"], spurious["precision"], spurious["recall"]) == (0.0, 0.0, 1.0)


def test_aggregate_is_mean_over_frames_in_percent_and_pooled():
    gt = np.zeros((2, 10, 10), bool)
    gt[:, :5] = True
    pred = np.zeros((2, 10, 10), bool)
    pred[0, :5] = True  # frame 0 perfect
    pred[1, :, :] = True  # frame 1: IoU 0.5, precision 0.5, recall 1
    agg = aggregate_scores(evaluate_masks(pred, gt))
    assert agg["frames"] == 2
    assert agg["mean_iou"] == pytest.approx(75.0)
    assert agg["mean_precision"] == pytest.approx(75.0)
    assert agg["mean_recall"] == pytest.approx(100.0)
    # pooled: tp 100, fp 50, fn 0
    assert agg["pooled_iou"] == pytest.approx(100 * 100 / 150)
    assert agg["pooled_precision"] == pytest.approx(100 * 100 / 150)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        mask_scores(np.zeros((3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="2-D"):
        mask_scores(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        mask_scores(np.full((2, 2), np.nan), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no frames"):
        aggregate_scores([])
    with pytest.raises(ValueError):
        evaluate_masks(np.zeros((2, 3, 3)), np.zeros((3, 3, 3)))


def _write_davis(root, seq, n=3, h=24, w=32):
    img_dir = root / "JPEGImages" / "480p" / seq
    ann_dir = root / "Annotations" / "480p" / seq
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    truth = []
    for i in range(n):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = 200  # red in RGB
        cv2.imwrite(str(img_dir / f"{i:05d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        labels = np.zeros((h, w), np.uint8)
        labels[2 : 6 + i, 3:9] = 1
        labels[10:12, 20:25] = 2  # a second instance: also foreground
        cv2.imwrite(str(ann_dir / f"{i:05d}.png"), labels)
        truth.append(labels > 0)
    return np.stack(truth)


def test_read_davis_layout(tmp_path):
    truth = _write_davis(tmp_path, "bear")
    (tmp_path / "JPEGImages" / "480p" / "orphan").mkdir()  # frames without annotations
    assert list_davis_sequences(tmp_path) == ["bear"]
    frames, masks, names = read_davis_sequence(tmp_path, "bear")
    assert frames.shape == (3, 24, 32, 3) and frames.dtype == np.uint8
    assert frames[..., 0].mean() > 150 and frames[..., 2].mean() < 50  # RGB order
    np.testing.assert_array_equal(masks, truth)
    assert names == ["00000", "00001", "00002"]
    agg = aggregate_scores(evaluate_masks(masks, truth))
    assert agg["mean_iou"] == 100.0


def test_davis_reader_rejects_missing_parts(tmp_path):
    with pytest.raises(ValueError, match="not a DAVIS folder"):
        list_davis_sequences(tmp_path)
    _write_davis(tmp_path, "cows")
    (tmp_path / "Annotations" / "480p" / "cows" / "00001.png").unlink()
    with pytest.raises(ValueError, match="missing or unreadable annotation"):
        read_davis_sequence(tmp_path, "cows")
    with pytest.raises(ValueError, match="no frames"):
        read_davis_sequence(tmp_path, "nothing")
