"""Tests for pipeline.guidance and guidance_watershed: CMP guidance points (Zhan et al. 2019, 3.2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage, signal

from pipeline import guidance as g
from pipeline import guidance_watershed as gw

SQUARE = (120, 260)  # [start, end) rows and columns of the moving square


def translating_square(size: int = 384, motion=(3.0, -2.0)) -> np.ndarray:
    flow = np.zeros((size, size, 2), np.float32)
    flow[SQUARE[0] : SQUARE[1], SQUARE[0] : SQUARE[1]] = motion
    return flow


def horizontal_band(size: int = 384) -> np.ndarray:
    """Motion in rows 100-199 across the full width: a ridge of tied watershed maxima."""
    flow = np.zeros((size, size, 2), np.float32)
    flow[100:200, :] = (1.0, 0.5)
    return flow


def as_set(points: np.ndarray) -> set[tuple[int, int]]:
    return {(int(y), int(x)) for y, x in points}


def chebyshev_gaps(points: np.ndarray) -> np.ndarray:
    diff = np.abs(points[:, None, :].astype(int) - points[None, :, :].astype(int)).max(axis=2)
    return diff[~np.eye(len(points), dtype=bool)]


def scipy_edges(flow: np.ndarray) -> np.ndarray:
    """Step 1 written the slow way with scipy, as the authors' loader does."""
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
    edge = np.zeros(flow.shape[:2])
    for k in range(2):
        gx = signal.convolve2d(flow[:, :, k], sobel, boundary="symm", mode="same")
        gy = signal.convolve2d(flow[:, :, k], sobel.T, boundary="symm", mode="same")
        edge += np.sqrt(gx**2 + gy**2)
    return edge


def scipy_candidates(flow: np.ndarray, kernel_size: int) -> set[tuple[int, int]]:
    """Steps 1-4 written the slow way with scipy."""
    edge = scipy_edges(flow)
    edge /= max(edge.max(), 0.01)
    watershed = ndimage.distance_transform_edt(edge <= 0.1)
    local_max = ndimage.maximum_filter(watershed, size=kernel_size)
    keep = (watershed == local_max) & (watershed > 0)
    keep[0, :] = keep[-1, :] = keep[:, 0] = keep[:, -1] = False
    return as_set(np.argwhere(keep))


# --------------------------------------------------------------------------- sampler behaviour


def test_translating_square_gives_watershed_inside_and_grid_outside():
    flow = translating_square()
    result = g.sample_guidance(flow, kernel_size=81, grid_stride=200, rng=0)
    grid = as_set(gw.grid_points(flow.shape[:2], 200))
    assert grid == {(92, 92), (92, 292), (292, 92), (292, 292)}  # as the authors' grid at 384
    inside = [
        (y, x) for y, x in as_set(result.points) if all(SQUARE[0] <= c < SQUARE[1] for c in (y, x))
    ]
    outside = as_set(result.points) - set(inside)
    assert result.n_watershed == len(inside) == 1
    assert outside == grid and result.n_grid == 4
    # The one watershed point is the centre of the square (a 2x2 tie, one kept at random).
    (y, x), *_ = inside
    assert {y, x} <= {189, 190}


def test_zero_flow_gives_grid_points_only():
    flow = np.zeros((384, 384, 2), np.float32)
    result = g.sample_guidance(flow, rng=0)
    assert result.n_watershed == 0 and result.n_grid == 4
    assert as_set(result.points) == as_set(gw.grid_points((384, 384), 200))


def test_uniform_motion_is_like_zero_flow():
    flow = np.full((200, 300, 2), (5.0, -7.0), np.float32)
    result = g.sample_guidance(flow, grid_stride=80, rng=3)
    assert result.n_watershed == 0
    assert as_set(result.points) == as_set(gw.grid_points((200, 300), 80))


def test_edges_match_scipy_symmetric_boundary():
    rng = np.random.default_rng(6)
    flow = rng.normal(0, 1, (30, 41, 2)).astype(np.float32)
    np.testing.assert_allclose(
        gw.motion_edges(flow), scipy_edges(flow.astype(np.float64)), rtol=1e-5, atol=1e-5
    )
    # A ramp u = x: slope 1 gives 8 inside and 4 at the left/right border ("cba|abc").
    ramp = np.zeros((10, 12, 2), np.float32)
    ramp[:, :, 0] = np.arange(12)
    edges = gw.motion_edges(ramp)
    np.testing.assert_allclose(edges[:, 1:-1], 8)
    np.testing.assert_allclose(edges[:, [0, -1]], 4)


def test_candidates_match_scipy_reference():
    rng = np.random.default_rng(7)
    flow = np.zeros((96, 128, 2), np.float32)
    for _ in range(6):  # rectangles of motion, some touching the border
        y0, x0 = rng.integers(0, 80), rng.integers(0, 110)
        h, w = rng.integers(10, 50, size=2)
        flow[y0 : y0 + h, x0 : x0 + w] = rng.choice([-4.0, 2.0, 6.0], size=2)
    for kernel_size in (5, 15, 31):
        edges = gw.binarise_edges(gw.motion_edges(flow))
        ours = as_set(gw.nms_candidates(gw.watershed_map(edges), kernel_size))
        assert ours == scipy_candidates(flow.astype(np.float64), kernel_size)
        assert ours  # the comparison is not vacuous


def test_same_seed_same_points_different_seed_differs_on_ties():
    flow = horizontal_band()
    first = g.sample_guidance(flow, rng=11)
    again = g.sample_guidance(flow, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(first.points, again.points)
    watershed = {
        seed: as_set(gw.watershed_points(flow, kernel_size=81, rng=seed)) for seed in range(4)
    }
    assert len({frozenset(points) for points in watershed.values()}) > 1


def test_near_duplicates_are_spread_and_thinning_is_maximal():
    flow = horizontal_band()
    candidates = gw.nms_candidates(gw.watershed_map(gw.binarise_edges(gw.motion_edges(flow))), 81)
    assert len(candidates) > 300  # the whole ridge ties
    kept = gw.remove_near_duplicates(candidates, 81, shape=(384, 384), rng=5)
    assert as_set(kept) <= as_set(candidates)
    assert chebyshev_gaps(kept).min() >= 40  # (K - 1) / 2
    # Every dropped candidate has a kept one closer than (K - 1) / 2 (greedy is maximal).
    dropped = np.array(sorted(as_set(candidates) - as_set(kept)))
    near = np.abs(dropped[:, None, :] - kept[None, :, :]).max(axis=2) < 40
    assert near.any(axis=1).all()


@pytest.mark.parametrize("kernel_size", [3, 9, 81])
def test_raster_and_pairwise_thinning_agree(kernel_size):
    rng = np.random.default_rng(kernel_size)
    shape = (120, 150)
    flat = rng.choice(shape[0] * shape[1], size=600, replace=False)
    points = np.stack(np.unravel_index(flat, shape), axis=1).astype(np.int64)
    order = rng.permutation(len(points))
    gap = (kernel_size - 1) // 2
    pairwise = gw._greedy_pairwise(points, order, gap)
    raster = gw._greedy_raster(points, order, gap, shape)
    np.testing.assert_array_equal(pairwise, raster)


def test_many_candidates_take_the_raster_path():
    # A checkerboard of motion: edges almost everywhere, thousands of tied maxima.
    yy, xx = np.mgrid[0:256, 0:256]
    flow = np.zeros((256, 256, 2), np.float32)
    flow[((yy // 4 + xx // 4) % 2) == 1] = (2.0, 0.0)
    edges = gw.binarise_edges(gw.motion_edges(flow))
    candidates = gw.nms_candidates(gw.watershed_map(edges), 9)
    assert len(candidates) > gw._PAIRWISE_MAX_CANDIDATES
    kept = gw.remove_near_duplicates(candidates, 9, shape=(256, 256), rng=0)
    # No two kept points within a 7 x 7 window (closer than 4 in both axes): count per window.
    marks = np.zeros((256, 256))
    marks[kept[:, 0], kept[:, 1]] = 1
    per_window = ndimage.uniform_filter(marks, size=7, mode="constant") * 49
    assert np.round(per_window[kept[:, 0], kept[:, 1]]).max() == 1
    assert len(kept) > 1000


def test_cap_is_respected_and_counts_add_up():
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 1, (128, 128, 2)).astype(np.float32)
    uncapped = g.sample_guidance(flow, kernel_size=5, grid_stride=20, max_points=10_000, rng=1)
    assert len(uncapped.points) > 40
    capped = g.sample_guidance(flow, kernel_size=5, grid_stride=20, max_points=40, rng=1)
    assert len(capped.points) == 40 == capped.n_watershed + capped.n_grid
    assert capped.n_watershed > 0 and capped.n_grid > 0
    assert len(np.unique(capped.points, axis=0)) == 40


@pytest.mark.parametrize(
    ("shape", "kernel_size", "stride"),
    [
        ((384, 384), 81, 200),
        ((400, 400), 3, 200),
        ((202, 402), 3, 100),
        ((64, 37), 3, 1),
        ((5, 5), 3, 2),
    ],
)
@pytest.mark.parametrize("downsample", [1, 2, 3])
def test_points_never_on_the_border(shape, kernel_size, stride, downsample):
    rng = np.random.default_rng(1)
    flow = rng.normal(0, 2, (*shape, 2)).astype(np.float32)
    result = g.sample_guidance(
        flow,
        kernel_size=kernel_size,
        grid_stride=stride,
        max_points=10**6,
        downsample=downsample,
        rng=0,
    )
    ys, xs = result.points[:, 0], result.points[:, 1]
    assert len(ys) > 0
    assert ys.min() >= 1 and xs.min() >= 1
    assert ys.max() <= shape[0] - 2 and xs.max() <= shape[1] - 2


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 900), st.integers(3, 900), st.integers(1, 400))
def test_grid_is_centred_regular_and_off_the_border(height, width, stride):
    grid = gw.grid_points((height, width), stride)
    for axis, size in enumerate((height, width)):
        values = np.unique(grid[:, axis])
        assert values.min() >= 1 and values.max() <= size - 2
        assert (np.diff(values) == stride).all()
        # Centred: the margins on both sides differ by at most one pixel ...
        assert abs(values.min() - (size - 1 - values.max())) <= 1
        # ... and there is no room for another point on the grid.
        assert values.min() - stride < 1 or values.max() + stride > size - 2


# --------------------------------------------------------------------------- downsampling


@pytest.mark.parametrize(
    ("kernel_size", "downsample", "expected"),
    [(81, 1, 81), (81, 2, 41), (81, 3, 27), (67, 2, 35), (31, 2, 17), (3, 2, 3), (5, 8, 3)],
)
def test_downsampled_kernel_spans_about_the_same_pixels(kernel_size, downsample, expected):
    assert gw.downsampled_kernel_size(kernel_size, downsample) == expected


@pytest.mark.parametrize("downsample", [2, 3])
def test_downsampled_square_still_gives_its_centre_and_the_grid(downsample):
    flow = translating_square()
    result = g.sample_guidance(flow, downsample=downsample, rng=0)
    grid = as_set(gw.grid_points(flow.shape[:2], 200))
    points = as_set(result.points)
    assert result.n_watershed == 1 and result.n_grid == 4
    assert points - grid  # the watershed point is not a grid point
    ((y, x),) = points - grid
    # On the subsampled flow the centre is found to within one subsampled pixel.
    assert abs(y - 189.5) <= downsample and abs(x - 189.5) <= downsample
    assert y % downsample == 0 and x % downsample == 0  # a pixel whose flow was looked at


def test_downsampled_points_are_the_subsampled_flows_points():
    rng = np.random.default_rng(4)
    flow = ndimage.zoom(rng.normal(0, 3, (13, 11, 2)), (30, 30, 1), order=0)[:385, :327]
    flow = flow.astype(np.float32)
    coarse = gw.watershed_points(flow, kernel_size=81, downsample=2, rng=0)
    height, width = flow.shape[0] // 2, flow.shape[1] // 2
    subsampled = np.ascontiguousarray(flow[: 2 * height : 2, : 2 * width : 2])
    direct = gw.watershed_points(subsampled, kernel_size=41, rng=0)
    assert len(coarse) > 0
    assert as_set(coarse) == as_set(2 * direct)


def test_downsample_is_capped_for_tiny_flow():
    flow = translating_square(12)
    flow[4:8, 4:8] = (1.0, 0.0)
    # A step of 8 would leave a 1 x 1 field; it is capped to 4 (a 3 x 3 field).
    result = gw.watershed_points(flow, kernel_size=3, downsample=8, rng=0)
    assert (result % 4 == 0).all()


@pytest.mark.parametrize("downsample", [0, -1, 1.5, True, "2"])
def test_bad_downsample_rejected(downsample):
    with pytest.raises(ValueError, match="downsample must be"):
        g.sample_guidance(translating_square(64), downsample=downsample, rng=0)


def test_results_do_not_share_the_scratch_arrays():
    first = g.sample_guidance(translating_square(), rng=0)
    kept = first.points.copy()
    g.sample_guidance(horizontal_band(), rng=1)
    assert (first.points == kept).all()


def test_threads_sampling_at_once_agree_with_one_thread():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    flows = [
        ndimage.zoom(rng.normal(0, 2, (8, 8, 2)), (24, 24, 1), order=1).astype(np.float32)
        for _ in range(12)
    ]

    def sample(index: int) -> np.ndarray:
        return g.sample_guidance(flows[index], kernel_size=31, grid_stride=60, rng=index).points

    serial = [sample(i) for i in range(len(flows))]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(sample, range(len(flows))))
    for one, other in zip(serial, threaded, strict=True):
        assert as_set(one) == as_set(other)


def test_grid_stride_zero_disables_the_grid():
    result = g.sample_guidance(translating_square(), grid_stride=0, rng=0)
    assert result.n_grid == 0 and result.n_watershed == 1


# --------------------------------------------------------------------------- edge normalisation


def test_edge_floor_sets_an_absolute_threshold_for_weak_flow():
    edges = np.array([[0.0005, 0.0015], [0.004, 0.0]], np.float32)  # max below the 0.01 floor
    np.testing.assert_array_equal(
        gw.binarise_edges(edges), [[False, True], [True, False]]
    )  # > 0.1 * 0.01, not > 0.1 * max
    # Relative to the max, 0.0005 would have counted (> 0.1 * 0.004): the floor drops it.
    strong = np.array([[0.03, 0.05], [0.4, 0.0]], np.float32)  # max above the floor
    np.testing.assert_array_equal(gw.binarise_edges(strong), [[False, True], [True, False]])


def test_tiny_flow_noise_creates_no_watershed_points():
    rng = np.random.default_rng(2)
    flow = np.full((128, 128, 2), (1.5, -0.5), np.float32)
    flow += rng.uniform(-1e-5, 1e-5, flow.shape).astype(np.float32)
    assert gw.motion_edges(flow).max() < 0.001  # Sobel response below 0.1 * floor
    assert g.sample_guidance(flow, kernel_size=15, grid_stride=40, rng=0).n_watershed == 0
    # Without the floor the same noise would be stretched to full scale and sampled.
    stretched = gw.binarise_edges(gw.motion_edges(flow), edge_floor=1e-9)
    assert stretched.mean() > 0.1


def test_weak_noise_above_the_absolute_threshold_still_makes_edges():
    # The floor is a scale floor, not a noise gate: responses between 0.001 and 0.01 count.
    rng = np.random.default_rng(3)
    flow = rng.uniform(-2e-4, 2e-4, (128, 128, 2)).astype(np.float32)
    edges = gw.motion_edges(flow)
    assert 0.001 < edges.max() < 0.01
    assert gw.watershed_points(flow, kernel_size=15, rng=0).size > 0


# --------------------------------------------------------------------------- network input


def test_sparse_input_holds_flow_at_points_and_zero_elsewhere():
    rng = np.random.default_rng(4)
    flow = rng.normal(0, 3, (40, 50, 2)).astype(np.float32)
    points = np.array([[1, 1], [10, 20], [38, 48], [5, 7]], np.int32)
    sparse = g.sparse_flow_input(flow, points)
    assert sparse.shape == (40, 50, 4) and sparse.dtype == np.float32
    mask = np.zeros((40, 50), bool)
    mask[points[:, 0], points[:, 1]] = True
    np.testing.assert_array_equal(sparse[mask][:, :2], flow[mask])
    assert (sparse[~mask] == 0).all()
    assert (sparse[mask][:, 2:] == 1).all()
    vectors = g.guidance_vectors(flow, points)
    assert vectors.shape == (4, 2) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, flow[points[:, 0], points[:, 1]])


def test_sparse_input_marks_sampled_zero_motion():
    flow = translating_square(64, motion=(1.0, 1.0))
    points = np.array([[2, 2]])  # static background
    sparse = g.sparse_flow_input(flow, points)
    assert (sparse[2, 2] == [0, 0, 1, 1]).all()


def test_sparse_input_accepts_no_points():
    flow = np.ones((8, 9, 2), np.float32)
    assert not g.sparse_flow_input(flow, np.zeros((0, 2), np.int32)).any()
    assert g.guidance_vectors(flow, np.zeros((0, 2), np.int32)).shape == (0, 2)


def test_sampler_output_feeds_the_input_builder():
    flow = translating_square()
    result = g.sample_guidance(flow, rng=0)
    assert result.points.dtype == np.int32 and result.points.shape == (5, 2)
    sparse = g.sparse_flow_input(flow, result.points)
    assert sparse[:, :, 2].sum() == 5
    assert np.isclose(sparse[:, :, 0].sum(), 3.0)  # only the watershed point moves


# --------------------------------------------------------------------------- statistics


def test_guidance_stats_known_answer():
    stats = g.guidance_stats([[10, 4], [6, 4], [20, 2]], [[384, 384], [384, 384], [768, 384]])
    assert stats["images"] == 3
    assert stats["watershed"]["mean"] == pytest.approx(12.0)
    assert stats["watershed"]["median"] == pytest.approx(10.0)
    assert stats["watershed"]["mean_per_ref_area"] == pytest.approx((10 + 6 + 10) / 3)
    assert stats["grid"]["mean_per_ref_area"] == pytest.approx((4 + 4 + 1) / 3)
    assert stats["total"]["median"] == pytest.approx(14.0)


@pytest.mark.parametrize(
    ("counts", "shapes"),
    [
        ([], []),
        ([[1, 2]], [[10, 10], [10, 10]]),
        ([[1, 2, 3]], [[10, 10]]),
        ([[-1, 2]], [[10, 10]]),
        ([[1, 2]], [[0, 10]]),
    ],
)
def test_guidance_stats_rejects_bad_input(counts, shapes):
    with pytest.raises(ValueError):
        g.guidance_stats(counts, shapes)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kernel_size", [0, 1, 2, 80, -3, 81.0, True])
def test_bad_kernel_size_rejected(kernel_size):
    with pytest.raises(ValueError, match="kernel_size must be"):
        g.sample_guidance(np.zeros((32, 32, 2), np.float32), kernel_size=kernel_size, rng=0)


def test_even_kernel_message():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        g.sample_guidance(np.zeros((32, 32, 2), np.float32), kernel_size=80, rng=0)


@pytest.mark.parametrize(
    "flow",
    [
        np.zeros((32, 32), np.float32),
        np.zeros((32, 32, 3), np.float32),
        np.zeros((2, 32, 2), np.float32),
        np.full((32, 32, 2), np.nan, np.float32),
        np.pad(np.full((1, 1, 2), np.inf, np.float32), ((3, 3), (3, 3), (0, 0))),
        np.full((8, 8, 2), "a"),
    ],
)
def test_bad_flow_rejected(flow):
    with pytest.raises(ValueError, match="flow"):
        g.sample_guidance(flow, rng=0)
    with pytest.raises(ValueError, match="flow"):
        g.sparse_flow_input(flow, np.zeros((0, 2), np.int32))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"grid_stride": -1},
        {"max_points": 0},
        {"edge_threshold": 1.0},
        {"edge_threshold": -0.1},
        {"edge_floor": 0.0},
    ],
)
def test_bad_parameters_rejected(kwargs):
    with pytest.raises(ValueError):
        g.sample_guidance(translating_square(64), rng=0, **kwargs)


@pytest.mark.parametrize(
    "points",
    [
        np.array([[0, 50]]),
        np.array([[-1, 0]]),
        np.array([[1.0, 2.0]]),
        np.zeros((3,), np.int32),
        np.zeros((2, 3), np.int32),
    ],
)
def test_bad_points_rejected(points):
    with pytest.raises(ValueError, match="points"):
        g.sparse_flow_input(np.zeros((10, 50, 2), np.float32), points)


def test_duplicate_candidates_rejected():
    with pytest.raises(ValueError, match="distinct"):
        gw.remove_near_duplicates(np.array([[3, 3], [3, 3]]), 5, shape=(10, 10), rng=0)
