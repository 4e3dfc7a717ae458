"""Flow colour wheel, legend, contact sheet, overlays, arrows and PNG saving."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.viz import (
    color_wheel_legend,
    contact_sheet,
    draw_guidance_arrows,
    flow_to_color,
    make_color_wheel,
    mask_overlay,
    save_png,
)


def uniform_flow(dx: float, dy: float, shape=(4, 5)) -> np.ndarray:
    flow = np.zeros(shape + (2,), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


def test_wheel_has_55_colours_with_ramp_anchors():
    wheel = make_color_wheel()
    assert wheel.shape == (55, 3)
    # Ramp starts: red, yellow (15), green (21), cyan (25), blue (36), magenta (49).
    anchors = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255)}
    anchors |= {36: (0, 0, 255), 49: (255, 0, 255)}
    for index, colour in anchors.items():
        np.testing.assert_array_equal(wheel[index], colour)


@pytest.mark.parametrize("negative_zero", [False, True])
def test_plus_x_at_max_is_red_and_zero_is_white(negative_zero):
    flow = uniform_flow(10.0, -0.0 if negative_zero else 0.0)
    assert np.all(flow_to_color(flow, 10.0) == (255, 0, 0))
    assert np.all(flow_to_color(uniform_flow(0.0, 0.0), 10.0) == 255)


def test_directions_follow_the_wheel():
    # Middlebury angle atan2(-v, -u): +x is entry 0 (red), +y (down) a quarter turn on (entry
    # 13.75, orange-yellow), -x half-way (27.5, cyan-blue), -y three quarters (41.25, purple).
    wheel = make_color_wheel()
    for (dx, dy), position in [((0, 5), 13.75), ((-5, 0), 27.5), ((0, -5), 41.25)]:
        k, frac = int(position), position - int(position)
        expected = np.rint((1 - frac) * wheel[k] + frac * wheel[k + 1])
        np.testing.assert_array_equal(flow_to_color(uniform_flow(dx, dy), 5.0)[0, 0], expected)


def test_fixed_max_magnitude_saturates_and_scales():
    at_max = flow_to_color(uniform_flow(3.0, 4.0), 5.0)
    beyond = flow_to_color(uniform_flow(30.0, 40.0), 5.0)
    half = flow_to_color(uniform_flow(1.5, 2.0), 5.0).astype(float)
    np.testing.assert_array_equal(at_max, beyond)
    expected = 255 - 0.5 * (255 - at_max.astype(float))
    assert np.abs(half - expected).max() <= 1.0
    # Same vector, larger max: paler (closer to white).
    assert flow_to_color(uniform_flow(3.0, 4.0), 50.0).astype(int).sum() > at_max.astype(int).sum()


def test_flow_to_color_shapes_invalid_and_errors():
    flow = uniform_flow(1.0, 1.0, (6, 7))
    flow[0, 0, 0] = np.nan
    valid = np.ones((6, 7), bool)
    valid[1, 1] = False
    out = flow_to_color(flow, 2.0, valid=valid)
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8
    assert np.all(out[0, 0] == 0) and np.all(out[1, 1] == 0) and out[2, 2].sum() > 0
    with pytest.raises(ValueError):
        flow_to_color(flow, 0.0)
    with pytest.raises(ValueError):
        flow_to_color(np.zeros((3, 3)), 1.0)


def test_legend():
    legend = color_wheel_legend(65)
    assert legend.shape == (65, 65, 3) and legend.dtype == np.uint8
    assert np.all(legend[32, 32] == 255)  # centre: zero flow
    assert tuple(legend[32, 64]) == (255, 0, 0)  # right rim: +x at max
    assert np.all(legend[0, 0] == 255)  # outside the disc


def test_contact_sheet_layout_and_bound():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(5)]
    flows = [uniform_flow(1.0, 0.0, (30, 40)) for _ in range(5)]
    sheet = contact_sheet(frames, flows, 1.0, columns=3, gap=2, legend=False)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (2 * 120 + 3 * 2, 3 * 80 + 4 * 2, 3)
    np.testing.assert_array_equal(sheet[2:62, 2:82], frames[0])  # frame above ...
    assert np.all(sheet[62:122, 2:82] == (255, 0, 0))  # ... its flow colour
    big = contact_sheet(frames * 20, flows * 20, 1.0, columns=4, max_width=200, max_cells=8)
    assert big.shape[1] <= 200 and big.shape[0] < 600
    with pytest.raises(ValueError):
        contact_sheet(frames, flows[:2], 1.0)


def test_mask_overlay():
    image = np.zeros((4, 4, 3), np.uint8)
    mask = np.zeros((4, 4))
    mask[0, 0], mask[1, 1] = 1.0, 0.5
    out = mask_overlay(image, mask, color=(200, 100, 0), alpha=0.5)
    assert tuple(out[0, 0]) == (100, 50, 0) and tuple(out[1, 1]) == (50, 25, 0)
    assert np.all(out[2:] == 0)
    with pytest.raises(ValueError):
        mask_overlay(image, np.zeros((3, 4)))


def test_guidance_arrows_drawn_where_pointed():
    image = np.full((40, 40, 3), 255, np.uint8)
    out = draw_guidance_arrows(image, [(20, 10)], [(15.0, 0.0)], color=(255, 0, 0), point_radius=1)
    assert np.all(image == 255)  # input untouched
    along = out[20, 10:25].astype(int)  # anti-aliased line: red, with little green or blue
    assert np.all(along[:, 0] == 255) and np.all(along[:, 1:] < 128)
    assert np.all(out[5] == 255)
    with pytest.raises(ValueError):
        draw_guidance_arrows(image, [(1, 1), (2, 2)], [(0, 0)])


def test_save_png_rgb_order(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 200
    save_png(tmp_path / "x.png", rgb)
    bgr = cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgr[..., ::-1], rgb)
    with pytest.raises(ValueError):
        save_png(tmp_path / "y.png", rgb.astype(np.float32))
