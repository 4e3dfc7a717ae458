"""Downstream metrics and the statistics of a benchmark comparison.

* mean IoU over one confusion matrix accumulated over the whole validation set (the PASCAL VOC
  definition, Zhan et al. 2019 Sec. 4.2; Pathak et al. 2017 Sec. 4): a class's IoU is
  TP / (TP + FP + FN); classes absent from both ground truth and prediction are left out;
* ``paired_test``: an initialisation against the random control, seed by seed. Both runs of a seed
  share the head's init, the shuffling, the augmentation and the low-shot subset, so the per-seed
  differences are paired samples: a paired t-test (``scipy.stats.ttest_rel``) and the Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``, exact for small n). Wilcoxon's smallest two-sided p
  is 2 / 2^n (``wilcoxon_smallest_p``: 0.0625 at 5 seeds), so the verdict uses the t-test and
  reports both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "IGNORE_INDEX",
    "confusion_matrix",
    "iou_per_class",
    "mean_iou",
    "paired_test",
    "verdict",
    "wilcoxon_smallest_p",
]

IGNORE_INDEX = 255


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


def paired_test(values: Sequence[float], control: Sequence[float]) -> dict[str, Any]:
    """Paired comparison of per-seed ``values`` against the ``control``'s (same seed order).

    Returns ``n``, ``mean_diff`` (values − control), ``t`` and ``p_t`` (two-sided paired t-test),
    ``p_wilcoxon`` (two-sided, exact for small n; 1.0 when every difference is zero). NaN
    statistics where the test is undefined (n < 2, or identical non-zero differences for t).
    """
    from scipy import stats

    if len(values) != len(control):
        raise ValueError(f"paired samples differ in length: {len(values)} vs {len(control)}")
    diffs = [float(a) - float(b) for a, b in zip(values, control, strict=True)]
    n = len(diffs)
    if n == 0:
        raise ValueError("no paired samples")
    result: dict[str, Any] = {
        "n": n,
        "mean_diff": sum(diffs) / n,
        "t": math.nan,
        "p_t": math.nan,
        "p_wilcoxon": math.nan,
    }
    if n < 2:
        return result
    if all(d == 0.0 for d in diffs):
        return {**result, "t": 0.0, "p_t": 1.0, "p_wilcoxon": 1.0}
    result["p_wilcoxon"] = float(stats.wilcoxon(diffs, alternative="two-sided").pvalue)
    if max(diffs) - min(diffs) <= 1e-12 * max(1.0, abs(result["mean_diff"])):
        # one repeated non-zero difference (quantised accuracies make it likely at few seeds):
        # no spread to test against; scipy would say t = inf, p = 0, i.e. "certain" from 2 seeds
        return result
    t = stats.ttest_rel(list(map(float, values)), list(map(float, control)))
    result["t"], result["p_t"] = float(t.statistic), float(t.pvalue)
    return result


def wilcoxon_smallest_p(n: int) -> float:
    """The smallest p the exact two-sided Wilcoxon signed-rank test (``paired_test``) can give
    for ``n`` paired differences without zeros or ties: all of one sign is the most extreme of
    the 2^n equally likely sign patterns, once at each tail, so p = 2 / 2^n (1 for n = 1)."""
    if n < 1:
        raise ValueError(f"need at least 1 paired difference, got {n}")
    return min(1.0, 2.0 / 2**n)


def verdict(test: dict[str, Any], alpha: float = 0.05) -> str:
    """``helps`` / ``hurts`` when the paired t-test rejects equality at ``alpha`` (sign of the
    mean difference), else ``no difference``."""
    p = test["p_t"]
    if not math.isnan(p) and p < alpha:
        return "helps" if test["mean_diff"] > 0 else "hurts"
    return "no difference"
