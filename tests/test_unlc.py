"""uNLC motion masks on tiny generated clips, plus its parts (saliency, graph, trimap, pruning)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.sparse as sp
from skimage.feature import hog

from pipeline.region_graph import (
    colour_histograms,
    extract_patches,
    hog_patches,
    knn_affinity_graph,
    region_adjacency,
    region_descriptors,
    superpixels,
    working_shape,
)
from pipeline.saliency import pair_deviation, shot_saliency, spectral_residual_saliency
from pipeline.unlc import (
    damp_low_energy_blobs,
    drop_small_blobs,
    prune_reason,
    trimap,
    unlc_shot,
)

# Small clips need fewer, finer superpixels and a smaller neighbourhood than 650-px frames.
TINY = {"n_segments": 60, "slic_sigma": 1.0, "neighbours": 30}


def dis_flow(img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
    # DIS fast, but at finest scale 0: the preset's scale 2 would estimate flow on 25x25 pixels of
    # uNLC's 100x100 images and miss about half of the motion.
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    dis.setFinestScale(0)
    g0 = cv2.cvtColor(img0, cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(img1, cv2.COLOR_RGB2GRAY)
    return dis.calc(g0, g1, None)


def texture(rng: np.random.Generator, h: int, w: int, tint: tuple[float, ...]) -> np.ndarray:
    """Smooth random texture (4-px blobs) of one hue, bright enough for flow to lock on."""
    noise = rng.integers(80, 256, (h // 4 + 1, w // 4 + 1)).astype(np.float32)
    base = cv2.resize(noise, (w + 4, h + 4), interpolation=cv2.INTER_LINEAR)[:h, :w]
    base = cv2.GaussianBlur(base, (0, 0), 1.0)
    return np.clip(base[..., None] * np.array(tint), 0, 255).astype(np.uint8)


def moving_square_clip(
    *, pan: int, seed: int, frames: int = 8, size: int = 64, side: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """A reddish textured square over a greenish textured background.

    pan=0: static camera, the square moves right 2 px/frame. pan>0: the camera pans (background
    moves left ``pan`` px/frame) while the square moves down 2 px/frame.
    """
    rng = np.random.default_rng(seed)
    background = texture(rng, size, size + pan * frames, (0.5, 0.8, 0.6))
    square = texture(rng, side, side, (1.0, 0.3, 0.2))
    clip, truth = [], []
    for t in range(frames):
        frame = background[:, pan * t : pan * t + size].copy()
        y, x = (16, 12 + 2 * t) if pan == 0 else (10 + 2 * t, 20)
        frame[y : y + side, x : x + side] = square
        mask = np.zeros((size, size), dtype=bool)
        mask[y : y + side, x : x + side] = True
        clip.append(frame)
        truth.append(mask)
    return np.stack(clip), np.stack(truth)


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    return float(np.mean(inter / np.maximum(union, 1)))


# --- whole shots ---------------------------------------------------------------------------


def test_static_camera_moving_square_is_segmented():
    clip, truth = moving_square_clip(pan=0, seed=0)
    result = unlc_shot(clip, dis_flow, **TINY)
    assert result.soft.shape == truth.shape and result.soft.dtype == np.float32
    assert 0.0 <= result.soft.min() and result.soft.max() <= 1.0
    assert result.saliency_source == "motion"
    assert set(result.frame_paths) == {"static"}
    assert mean_iou(result.soft > 0.7, truth) >= 0.7
    assert all(prune_reason(m) is None for m in result.soft)
    assert result.graph_nnz <= result.n_regions * (TINY["neighbours"] + 1)


def test_mover_is_found_with_regions_at_half_resolution():
    """128-px frames, regions (superpixels, colour, votes) on 64-px frames, HOG at 128 px, every
    other frame searched beyond t±1: the square is still found and masks come back at 128 px."""
    clip, truth = moving_square_clip(pan=0, seed=6, size=128, side=48)
    params = {**TINY, "region_max_side": 64, "temporal_stride": 2}
    result = unlc_shot(clip, dis_flow, **params)
    assert result.soft.shape == truth.shape
    assert mean_iou(result.soft > 0.7, truth) >= 0.7
    assert result.n_regions <= 8 * 90  # regions were made on the small frames


def test_panning_camera_finds_the_object_not_the_background():
    clip, truth = moving_square_clip(pan=2, seed=1)
    result = unlc_shot(clip, dis_flow, **TINY)
    assert result.saliency_source == "motion"
    assert "translation" in result.frame_paths
    mask = result.soft > 0.7
    assert mean_iou(mask, truth) >= 0.7
    # Almost nothing of the (moving) background is taken for the object.
    assert (mask & ~truth).sum() / (~truth).sum() < 0.02


def test_static_clip_gives_no_foreground_and_every_frame_is_pruned():
    rng = np.random.default_rng(5)
    still = texture(rng, 64, 64, (0.7, 0.7, 0.7)).astype(np.int16)
    clip = np.clip(still[None] + rng.integers(-2, 3, (6, 64, 64, 3)), 0, 255).astype(np.uint8)
    result = unlc_shot(clip, dis_flow, **TINY)
    assert result.saliency_source == "none"
    reasons = [prune_reason(m) for m in result.soft]
    assert all(r is not None and r.startswith("foreground 0.0% < 10%") for r in reasons)


def test_incoherent_motion_falls_back_to_appearance_saliency():
    rng = np.random.default_rng(0)

    def chaotic_flow(img0, img1):  # large motion in every direction: no usable pair anywhere
        return rng.normal(0.0, 5.0, (*img0.shape[:2], 2)).astype(np.float32)

    clip, _ = moving_square_clip(pan=0, seed=2, frames=4)
    result = unlc_shot(clip, chaotic_flow, **TINY)
    assert result.saliency_source == "appearance"
    assert result.frame_paths == ("appearance",) * 4
    assert (result.usable_pairs == 0).all()
    assert all((s > 0).any() for s in result.soft)  # the reference's fallback gave empty masks


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((1, 32, 32, 3), np.uint8) + 100, "at least 2 frames"),
        (np.zeros((3, 32, 32, 3), np.uint8), "all frames are black"),
        (np.zeros((3, 32, 32), np.uint8) + 100, r"\(T, H, W, 3\)"),
        (np.zeros((3, 32, 32, 3), np.float32) + 100, "uint8"),
        (np.zeros((3, 8, 8, 3), np.uint8) + 100, "smaller than"),
    ],
)
def test_bad_frames_are_rejected(frames, message):
    with pytest.raises(ValueError, match=message):
        unlc_shot(frames, dis_flow, **TINY)


def test_bad_flow_is_rejected():
    clip, _ = moving_square_clip(pan=0, seed=3, frames=3)

    def nan_flow(img0, img1):
        flow = np.zeros((*img0.shape[:2], 2), np.float32)
        flow[3, 4, 0] = np.nan
        return flow

    def wrong_shape(img0, img1):
        return np.zeros((10, 10, 2), np.float32)

    with pytest.raises(ValueError, match="non-finite"):
        unlc_shot(clip, nan_flow, **TINY)
    with pytest.raises(ValueError, match="shape"):
        unlc_shot(clip, wrong_shape, **TINY)


# --- saliency --------------------------------------------------------------------------------


def test_pair_deviation_cases():
    flow = np.zeros((40, 40, 2), np.float32)
    flow[10:20, 10:20] = (3.0, 4.0)
    kind, dev = pair_deviation(flow)
    assert kind == "static" and dev[15, 15] == pytest.approx(25.0) and dev[0, 0] == 0.0

    rng = np.random.default_rng(0)
    pan = np.zeros((40, 40, 2), np.float32)
    pan[..., 0] = -3.0  # leftward pan: angle ±pi, an edge of the reference's bins
    pan[..., 1] = rng.normal(0.0, 0.05, (40, 40))
    pan[10:20, 10:20] = (0.0, 3.0)  # object moving down: pi/2 away
    kind, dev = pair_deviation(pan)
    assert kind == "translation"
    assert dev[0, 0] < 0.01
    assert dev[15, 15] == pytest.approx((np.pi / 2) ** 2, rel=1e-5)
    # With the reference's bin edges the same pan splits between two bins and is skipped.
    assert pair_deviation(pan, bin_offset=0.0)[0] == "skipped"

    assert pair_deviation(rng.normal(0, 5, (40, 40, 2)))[0] == "skipped"


def test_shot_saliency_reports_pairs_per_frame():
    small = np.zeros((5, 20, 20, 3), np.uint8)

    def still(img0, img1):
        return np.zeros((20, 20, 2), np.float32)

    sal = shot_saliency(small, still, radius=3)
    # partners within ±3 inside the 5-frame shot
    assert sal.static_pairs.tolist() == [3, 4, 4, 4, 3]
    assert sal.source == "none" and not sal.maps.any()


def test_spectral_residual_is_positive_and_peaks_on_the_odd_patch():
    rng = np.random.default_rng(0)
    img = np.full((100, 100, 3), 128, np.uint8) + rng.integers(0, 3, (100, 100, 3)).astype(np.uint8)
    img[40:55, 60:75] = 255
    sal = spectral_residual_saliency(img)
    assert sal.min() >= 0 and sal.max() > 0
    y, x = np.unravel_index(np.argmax(sal[10:-10, 10:-10]), (80, 80))
    assert 35 <= y + 10 <= 60 and 55 <= x + 10 <= 80


# --- regions and graph -----------------------------------------------------------------------


def test_hog_matches_skimage():
    rng = np.random.default_rng(0)
    patches = rng.random((5, 15, 15))
    ref = {
        norm: np.stack(
            [
                hog(p, orientations=6, pixels_per_cell=(5, 5), cells_per_block=(3, 3),
                    block_norm=norm)
                for p in patches
            ]
        )
        for norm in ("L2-Hys", "L1")
    }  # fmt: skip
    ours = hog_patches(patches, cell=5, orientations=6, block_norm="l2-hys")
    assert ours.shape == (5, 54)
    np.testing.assert_allclose(ours, ref["L2-Hys"], atol=1e-6)
    # The authors' L1 (skimage < 0.13) puts eps under a square root; on textured patches
    # (block sums of several units) that is the same as today's L1 to 1e-6.
    np.testing.assert_allclose(hog_patches(patches), ref["L1"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("slope", [0.1, 1e-4])
def test_hog_l1_block_by_hand(slope: float) -> None:
    """A ramp along x: horizontal gradient 2·slope on columns 1..13 (zero on the border columns),
    orientation 0 -> bin 0. Cell means per cell column: 4/5·2s, 2s, 4/5·2s; the block of 3x3
    cells sums to 3·(1.6 + 2 + 1.6)·s = 15.6·s and is divided by sqrt(15.6²s² + 1e-5)."""
    ramp = slope * np.tile(np.arange(15.0), (15, 1))
    desc = hog_patches(np.stack([ramp, ramp.T]), cell=5, orientations=6)
    cell_means = np.array([1.6, 2.0, 1.6] * 3) * slope
    expected = cell_means / np.sqrt((15.6 * slope) ** 2 + 1e-5)
    by_cell = desc.reshape(2, 9, 6)
    np.testing.assert_allclose(by_cell[0, :, 0], expected, rtol=1e-9)
    assert np.count_nonzero(by_cell[0, :, 1:]) == 0
    # The transposed ramp: gradient along y, orientation 90° -> bin 3 of 6, cells transposed.
    np.testing.assert_allclose(by_cell[1, :, 3], expected.reshape(3, 3).T.ravel(), rtol=1e-9)
    assert np.count_nonzero(np.delete(by_cell[1], 3, axis=1)) == 0
    if slope < 1e-3:  # flat-ish patches: eps dominates, far from a unit L1 norm
        assert desc[0].sum() < 0.5


def test_hog_rejects_unknown_normalisation():
    with pytest.raises(ValueError, match="block_norm"):
        hog_patches(np.zeros((1, 15, 15)), block_norm="L2")


def test_region_descriptors_layout():
    clip, _ = moving_square_clip(pan=0, seed=4, frames=1)
    labels = superpixels(clip[0], n_segments=40, sigma=1.0)
    desc, area = region_descriptors(clip[0], labels)
    n = labels.max() + 1
    assert desc.shape == (n, 54 + 120 + 2) and area.sum() == labels.size
    np.testing.assert_allclose(desc[:, 54:174].reshape(n, 6, 20).sum(-1), 1.0, atol=1e-5)
    assert (desc[:, -2:] >= 0).all() and (desc[:, -2:] <= 1).all()


def test_graph_is_sparse_row_stochastic_and_matches_kdtree():
    rng = np.random.default_rng(0)
    frames = np.repeat(np.arange(12), 25)
    desc = rng.random((frames.size, 20)) * 0.3
    graph = knn_affinity_graph(desc, frames, temporal_radius=2, neighbours=10)
    assert sp.issparse(graph) and graph.format == "csr"
    np.testing.assert_allclose(np.asarray(graph.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    assert graph.nnz <= frames.size * 11
    rows, cols = graph.nonzero()
    assert (np.abs(frames[rows] - frames[cols]) <= 2).all()  # temporal window respected
    assert (graph.diagonal() > 0).all()
    kd = knn_affinity_graph(desc, frames, temporal_radius=2, neighbours=10, method="kdtree")
    # Same neighbours; the float32 matrix product rounds the affinities at ~1e-7.
    assert ((graph != 0) != (kd != 0)).nnz == 0
    assert abs(graph - kd).max() < 1e-6


def test_temporal_stride_searches_only_the_strided_frames():
    rng = np.random.default_rng(1)
    frames = np.repeat(np.arange(20), 8)
    desc = rng.random((frames.size, 6))
    graph = knn_affinity_graph(desc, frames, temporal_radius=6, neighbours=200, temporal_stride=3)
    rows, cols = graph.nonzero()
    gaps = set(np.abs(frames[rows] - frames[cols]).tolist())
    assert gaps == {0, 1, 3, 6}  # neighbours > candidates: every allowed frame is linked
    # Frame 10 searches frames 4, 7, 9, 10, 11, 13, 16: 7 x 8 regions, itself excluded.
    assert graph[frames == 10].getnnz(axis=1).tolist() == [7 * 8] * 8
    kd = knn_affinity_graph(
        desc, frames, temporal_radius=6, neighbours=5, temporal_stride=3, method="kdtree"
    )
    brute = knn_affinity_graph(desc, frames, temporal_radius=6, neighbours=5, temporal_stride=3)
    assert ((brute != 0) != (kd != 0)).nnz == 0 and abs(brute - kd).max() < 1e-5
    with pytest.raises(ValueError, match="temporal_stride"):
        knn_affinity_graph(desc, frames, temporal_stride=0)


@pytest.mark.parametrize("method", ["opencv", "skimage"])
def test_superpixels_follow_a_colour_edge(method: str) -> None:
    """Left half red, right half blue, faint noise: no superpixel crosses column 48, labels are
    0..n-1 without gaps and about n_segments of them."""
    rng = np.random.default_rng(0)
    img = np.zeros((64, 96, 3), np.float32)
    img[:, :48] = (200, 30, 30)
    img[:, 48:] = (30, 30, 200)
    img = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    labels = superpixels(img, n_segments=24, sigma=0.5, method=method)
    assert labels.dtype == np.int32 and labels.shape == (64, 96)
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert 12 <= labels.max() + 1 <= 36
    assert not set(np.unique(labels[:, :48])) & set(np.unique(labels[:, 48:]))
    with pytest.raises(ValueError, match="superpixel method"):
        superpixels(img, method="seeds")


def test_region_adjacency_and_colour_histograms_by_hand():
    labels = np.array([[0, 0, 1], [2, 2, 1], [2, 3, 3]], dtype=np.int32)
    # 0-1, 0-2, 1-2, 1-3, 2-3 touch (4-connected); 0-3 do not.
    assert region_adjacency(labels, 10).tolist() == [
        [10, 11], [10, 12], [11, 12], [11, 13], [12, 13]
    ]  # fmt: skip
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[labels == 1] = (255, 255, 255)  # white: top R, G, B and L bins, a = b = 0
    rgb[labels == 3] = (0, 0, 255)  # blue
    hist = colour_histograms(rgb, labels, 4, bins=4).reshape(4, 6, 4)
    np.testing.assert_allclose(hist.sum(-1), 1.0)
    black = [0, 0, 0, 0, 2, 2]  # L = 0 -> bin 0; a = b = 0 -> bin 2 of [-128, 128)
    assert hist[0].argmax(-1).tolist() == black and hist[2].argmax(-1).tolist() == black
    assert hist[1].argmax(-1).tolist() == [3, 3, 3, 3, 2, 2]
    # Blue: L 32.3 -> bin 1 of [0, 100); a 79.2 -> bin 3; b -107.9 -> bin 0.
    assert hist[3].argmax(-1).tolist() == [0, 0, 3, 1, 3, 0]


def test_hog_is_taken_at_the_finer_resolution():
    """Labels at half size: colour and position come from the small frame, the HOG from the
    15x15 patch of the full frame around the scaled region centre."""
    clip, _ = moving_square_clip(pan=0, seed=3, frames=1, size=96)
    full = clip[0]
    small = cv2.resize(full, (48, 48), interpolation=cv2.INTER_AREA)
    labels = superpixels(small, n_segments=12, sigma=1.0)
    desc, area = region_descriptors(small, labels, hog_rgb=full)
    alone, _ = region_descriptors(small, labels)
    np.testing.assert_array_equal(desc[:, 54:], alone[:, 54:])  # colour and position
    assert area.sum() == 48 * 48
    rows, cols = np.indices(labels.shape)
    centres = np.stack(
        [np.bincount(labels.ravel(), weights=g.ravel()) / area for g in (rows, cols)], axis=1
    )
    gray = full.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721]) / 255.0
    expected = hog_patches(extract_patches(gray, centres * 2 + 0.5, 15))
    np.testing.assert_allclose(desc[:, :54], expected, rtol=1e-5, atol=1e-6)


def test_working_shape_caps_the_longer_side():
    assert working_shape(720, 1280) == (366, 650)
    assert working_shape(360, 640) == (360, 640)


# --- blobs, trimap, pruning ------------------------------------------------------------------


def _chain(n: int) -> sp.csr_matrix:
    """Adjacency of regions 0-1-2-…-(n-1) in a line."""
    a = sp.diags([np.ones(n - 1), np.ones(n - 1)], [1, -1], shape=(n, n))
    return sp.csr_matrix(a)


def test_blob_damping_and_small_blob_drop():
    votes = np.array([0.9, 0.75, 0.1, 1.0, 0.95, 0.1, 0.8])
    area = np.array([10.0, 10, 10, 30, 30, 10, 5])
    adj = _chain(7)
    # Blobs: {0,1} mean 0.825, {3,4} mean 0.975, {6} 0.8. The reference's 0.6 never fires.
    np.testing.assert_array_equal(damp_low_energy_blobs(votes, area, adj), votes)
    damped = damp_low_energy_blobs(votes, area, adj, min_mean=0.9)
    np.testing.assert_allclose(damped, [0.175, 0.175, 0.1, 1.0, 0.95, 0.1, 0.175])
    # Largest blob is {3,4} (60 px); {0,1} (20 px) and {6} (5 px) are < 0.6 x 60.
    frame = np.zeros(7, dtype=np.int64)
    dropped = drop_small_blobs(votes, area, adj, frame)
    assert (dropped[[3, 4]] == votes[[3, 4]]).all()
    assert (dropped[[0, 1, 6]] < 0.7).all() and (dropped[[0, 1, 6]] > 0.69).all()
    # Blobs are compared within their own frame only.
    frame = np.array([0, 0, 0, 1, 1, 1, 2])
    adj_split = _chain(7).tolil()
    adj_split[2, 3] = adj_split[3, 2] = adj_split[5, 6] = adj_split[6, 5] = 0
    np.testing.assert_array_equal(drop_small_blobs(votes, area, adj_split.tocsr(), frame), votes)


def test_trimap_thresholds():
    soft = np.array([[0.0, 0.39, 0.4, 0.55], [0.7, 0.71, 1.0, 0.2]])
    np.testing.assert_array_equal(trimap(soft), [[0, 0, 255, 255], [255, 1, 1, 0]])
    assert trimap(soft).dtype == np.uint8
    np.testing.assert_array_equal(
        trimap(soft, negative_below=0.5, positive_above=0.5), [[0, 0, 0, 1], [1, 1, 1, 0]]
    )
    with pytest.raises(ValueError):
        trimap(soft, negative_below=0.8, positive_above=0.7)


def test_prune_rules():
    mask = np.zeros((100, 100), bool)
    assert prune_reason(mask) == "foreground 0.0% < 10%"
    mask[40:60, 40:60] = True  # 4%
    assert prune_reason(mask) == "foreground 4.0% < 10%"
    mask[30:70, 30:70] = True  # 16%, central
    assert prune_reason(mask) is None
    assert prune_reason(np.ones((100, 100), bool)) == "foreground 100.0% > 80%"
    side = np.zeros((100, 100), bool)
    side[20:80, 0:30] = True  # 18%, touching the left edge: 300 of the 1900 band pixels
    assert prune_reason(side).startswith("border foreground 15.8% > 10%")
    soft = np.where(mask, 0.9, 0.5).astype(np.float32)  # soft masks are thresholded at 0.7
    assert prune_reason(soft) is None
    with pytest.raises(ValueError):
        prune_reason(np.zeros(10))
