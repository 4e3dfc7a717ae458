"""Mask quality against human annotation, in the form of Pathak et al. 2017, section 5.2's table.

Their table reports, over the frames of DAVIS, FBMS and VSB, the mean foreground IoU, precision and
recall of uNLC (13.1 / 15.4 / 45.8 %) and of their ConvNet (24.8 / 29.9 / 59.3 %).
``mask_scores`` scores one frame, ``aggregate_scores`` averages frames (and also pools the pixel
counts, as the authors' ``eval_seg.py`` does), and ``read_davis_sequence`` reads a DAVIS-layout
folder: ``JPEGImages/480p/<seq>/*.jpg`` and ``Annotations/480p/<seq>/*.png`` where any non-zero
label is foreground.

Conventions for empty masks (DAVIS annotations are rarely empty): both empty scores 1 on all three;
an empty prediction on a non-empty truth scores precision 0; a non-empty prediction on an empty
truth scores recall 1 (nothing was missed) and IoU / precision 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np


def _binary(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D mask, got shape {mask.shape}")
    if np.issubdtype(mask.dtype, np.floating) and not np.isfinite(mask).all():
        raise ValueError(f"{name} has non-finite values")
    return mask.astype(bool)


def mask_scores(pred_binary: np.ndarray, gt_binary: np.ndarray) -> dict[str, float]:
    """Foreground IoU, precision and recall (fractions) of one frame, plus the pixel counts."""
    pred = _binary(pred_binary, "prediction")
    gt = _binary(gt_binary, "ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    if tp + fp + fn == 0:
        iou = precision = recall = 1.0
    else:
        iou = tp / (tp + fp + fn)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 1.0
    return {"iou": iou, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def aggregate_scores(per_frame: Iterable[dict[str, float]]) -> dict[str, float]:
    """Means over frames in percent (the paper's table) and pooled-pixel scores in percent."""
    frames = list(per_frame)
    if not frames:
        raise ValueError("no frames to aggregate")
    tp = sum(f["tp"] for f in frames)
    fp = sum(f["fp"] for f in frames)
    fn = sum(f["fn"] for f in frames)
    return {
        "frames": len(frames),
        "mean_iou": 100.0 * float(np.mean([f["iou"] for f in frames])),
        "mean_precision": 100.0 * float(np.mean([f["precision"] for f in frames])),
        "mean_recall": 100.0 * float(np.mean([f["recall"] for f in frames])),
        "pooled_iou": 100.0 * tp / max(tp + fp + fn, 1),
        "pooled_precision": 100.0 * tp / max(tp + fp, 1),
        "pooled_recall": 100.0 * tp / max(tp + fn, 1),
    }


def evaluate_masks(pred: np.ndarray, gt: np.ndarray) -> list[dict[str, float]]:
    """Per-frame scores of (T, H, W) predicted and ground-truth masks."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(f"need two (T, H, W) stacks of one shape, got {pred.shape} and {gt.shape}")
    return [mask_scores(p, g) for p, g in zip(pred, gt, strict=True)]


def list_davis_sequences(root: str | Path, *, resolution: str = "480p") -> list[str]:
    """Names of the sequences that have both frames and annotations under ``root``."""
    root = Path(root)
    images = root / "JPEGImages" / resolution
    notes = root / "Annotations" / resolution
    if not images.is_dir() or not notes.is_dir():
        raise ValueError(f"{root} is not a DAVIS folder (JPEGImages/{resolution}, Annotations/…)")
    return sorted(p.name for p in images.iterdir() if p.is_dir() and (notes / p.name).is_dir())


def read_davis_sequence(
    root: str | Path, sequence: str, *, resolution: str = "480p"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Frames (T, H, W, 3) uint8 RGB, foreground masks (T, H, W) bool and frame names.

    Frames and annotations are paired by file stem; a frame without an annotation is an error.
    """
    root = Path(root)
    image_dir = root / "JPEGImages" / resolution / sequence
    note_dir = root / "Annotations" / resolution / sequence
    images = sorted(image_dir.glob("*.jpg"))
    if not images:
        raise ValueError(f"no frames in {image_dir}")
    frames, masks = [], []
    for path in images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        note_path = note_dir / f"{path.stem}.png"
        labels = cv2.imread(str(note_path), cv2.IMREAD_UNCHANGED)
        if bgr is None:
            raise ValueError(f"cannot read frame {path}")
        if labels is None:
            raise ValueError(f"missing or unreadable annotation {note_path}")
        if labels.ndim == 3:  # colour-coded instance ids: any non-black colour is foreground
            labels = labels.max(axis=2)
        if labels.shape != bgr.shape[:2]:
            raise ValueError(f"annotation {note_path} is {labels.shape}, frame is {bgr.shape[:2]}")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        masks.append(labels > 0)
    return np.stack(frames), np.stack(masks), [p.stem for p in images]
