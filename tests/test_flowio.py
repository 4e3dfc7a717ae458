"""KITTI PNG / .flo codecs, CPFS log normalisation and the resizing policy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.flowio import (
    PNG_FLOW_MAX,
    PNG_FLOW_MIN,
    PNG_MAX_ERROR,
    decode_flo,
    decode_flow_png,
    encode_flo,
    encode_flow_png,
    log_denormalise_flow,
    log_normalise_flow,
    read_flo,
    read_flow_png,
    write_flo,
    write_flow_png,
)
from pipeline.resizing import resize_flow, resize_frame, target_size

in_range = st.floats(PNG_FLOW_MIN, PNG_FLOW_MAX, allow_nan=False, width=32)
shapes = st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(2))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, shapes, elements=in_range))
def test_png_round_trip_within_1_128_px(flow):
    data, n_saturated = encode_flow_png(flow)
    decoded, valid = decode_flow_png(data)
    assert n_saturated == 0
    assert valid.all()
    assert decoded.dtype == np.float32 and decoded.shape == flow.shape
    assert np.abs(decoded.astype(np.float64) - flow).max() <= PNG_MAX_ERROR


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, shapes, elements=in_range),
    st.data(),
)
def test_png_valid_channel_follows_mask(flow, data):
    valid = data.draw(arrays(np.bool_, flow.shape[:2]))
    _, decoded_valid = decode_flow_png(encode_flow_png(flow, valid)[0])
    np.testing.assert_array_equal(decoded_valid, valid)


@settings(max_examples=40, deadline=None)
@given(
    st.floats(PNG_FLOW_MAX, 1e6, exclude_min=True, width=32)
    | st.floats(-1e6, PNG_FLOW_MIN, exclude_max=True, width=32),
    st.integers(0, 1),
)
def test_png_out_of_range_saturates_invalid_and_counted(value, channel):
    flow = np.zeros((2, 3, 2), np.float32)
    flow[1, 2, channel] = value
    data, n_saturated = encode_flow_png(flow)
    decoded, valid = decode_flow_png(data)
    assert n_saturated == 1
    assert not valid[1, 2] and valid.sum() == 5
    assert decoded[1, 2, channel] == (PNG_FLOW_MAX if value > 0 else PNG_FLOW_MIN)


def test_png_range_edges_exact():
    just_in = [PNG_FLOW_MIN, PNG_FLOW_MAX, np.nextafter(np.float32(PNG_FLOW_MAX), np.float32(0))]
    just_out = [
        np.nextafter(np.float32(PNG_FLOW_MAX), np.float32(np.inf)),
        np.nextafter(np.float32(PNG_FLOW_MIN), np.float32(-np.inf)),
        512.0,
    ]
    values = np.array(just_in + just_out, np.float32)
    flow = np.stack([values, np.zeros_like(values)], axis=-1)[None]
    data, n_saturated = encode_flow_png(flow)
    decoded, valid = decode_flow_png(data)
    assert n_saturated == 3
    np.testing.assert_array_equal(valid[0], [True, True, True, False, False, False])
    np.testing.assert_allclose(decoded[0, :3, 0], values[:3], atol=PNG_MAX_ERROR)
    assert decoded[0, 0, 0] == -512.0 and decoded[0, 1, 0] == PNG_FLOW_MAX


def test_png_non_finite_invalid_not_saturated():
    flow = np.zeros((2, 2, 2), np.float32)
    flow[0, 0, 0] = np.nan
    flow[0, 1, 1] = np.inf
    flow[1, 0, 0] = 600.0
    decoded, valid = decode_flow_png(encode_flow_png(flow)[0])
    np.testing.assert_array_equal(valid, [[False, False], [False, True]])
    assert encode_flow_png(flow)[1] == 1
    assert decoded[0, 0, 0] == 0.0 and decoded[0, 1, 1] == 0.0


def test_png_channel_order_is_kitti_rgb():
    import cv2

    flow = np.zeros((1, 1, 2), np.float32)
    flow[0, 0] = (1.0, -2.0)
    bgr = cv2.imdecode(np.frombuffer(encode_flow_png(flow)[0], np.uint8), cv2.IMREAD_UNCHANGED)
    rgb = bgr[0, 0, ::-1]
    assert tuple(int(c) for c in rgb) == (32768 + 64, 32768 - 128, 1)


def test_png_file_round_trip_atomic(tmp_path):
    flow = np.random.default_rng(0).uniform(-20, 20, (7, 9, 2)).astype(np.float32)
    path = tmp_path / "sub" / "f.png"
    assert write_flow_png(path, flow) == 0
    decoded, valid = read_flow_png(path)
    assert valid.all() and np.abs(decoded - flow).max() <= PNG_MAX_ERROR
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]  # no temporary left behind


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.int16)],
)
def test_png_rejects_bad_flow(bad):
    with pytest.raises(ValueError):
        encode_flow_png(bad)


def test_png_rejects_bad_mask_and_bad_bytes():
    import cv2

    with pytest.raises(ValueError, match="valid mask"):
        encode_flow_png(np.zeros((3, 3, 2), np.float32), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="PNG"):
        decode_flow_png(b"not a png")
    eight_bit = cv2.imencode(".png", np.zeros((3, 3, 3), np.uint8))[1].tobytes()
    with pytest.raises(ValueError, match="16-bit"):
        decode_flow_png(eight_bit)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, shapes, elements=st.floats(-1e4, 1e4, width=32)))
def test_flo_round_trip_exact(flow):
    decoded = decode_flo(encode_flo(flow))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, flow)


def test_flo_header_and_file(tmp_path):
    flow = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    data = encode_flo(flow)
    assert np.frombuffer(data[:4], "<f4")[0] == 202021.25
    assert np.frombuffer(data[4:12], "<i4").tolist() == [3, 2]
    write_flo(tmp_path / "a.flo", flow)
    np.testing.assert_array_equal(read_flo(tmp_path / "a.flo"), flow)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"XXXX" + d[4:], "tag"),
        (lambda d: d[:-4], "bytes"),
        (lambda d: d[:8], "header"),
        (lambda d: d[:4] + np.array([0, 2], "<i4").tobytes() + d[12:], "size"),
    ],
)
def test_flo_rejects_bad_file(tmp_path, mutate, message):
    data = encode_flo(np.zeros((2, 3, 2), np.float32))
    path = tmp_path / "bad.flo"
    path.write_bytes(mutate(data))
    with pytest.raises(ValueError, match=message):
        read_flo(path)


def test_log_normalise_known_values_and_inverse():
    M = 56.0
    flow = np.array([0.0, 1.0, -M, 100.0, -3.5], np.float32)
    g = log_normalise_flow(flow, M)
    np.testing.assert_allclose(g[:3], [0.0, np.log(2) / np.log(57), -1.0], rtol=1e-6)
    assert g[3] == 1.0  # beyond the bound saturates
    np.testing.assert_allclose(
        log_denormalise_flow(g, M)[[0, 1, 2, 4]], flow[[0, 1, 2, 4]], atol=1e-4
    )
    assert log_denormalise_flow(g, M)[3] == pytest.approx(M)
    with pytest.raises(ValueError):
        log_normalise_flow(flow, M=0.0)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, shapes, elements=st.floats(-56, 56, width=32)))
def test_log_normalise_monotone_bounded_invertible(flow):
    g = log_normalise_flow(flow)
    assert np.all(np.abs(g) <= 1.0)
    assert np.all(np.sign(g) * np.sign(flow) >= 0)  # never flips (tiny values may underflow)
    np.testing.assert_allclose(log_denormalise_flow(g), flow, atol=1e-3, rtol=1e-4)


def test_target_size_policy():
    assert target_size(272, 640, short_side=136) == (136, 320)
    assert target_size(272, 640, long_side=320) == (136, 320)
    assert target_size(272, 640, short_side=416) == (416, 979)
    assert target_size(272, 640, short_side=416, upscale=False) == (272, 640)
    assert target_size(272, 640, short_side=200, long_side=320) == (136, 320)
    assert target_size(272, 640) == (272, 640)
    with pytest.raises(ValueError):
        target_size(0, 10, short_side=5)
    with pytest.raises(ValueError):
        target_size(10, 10, short_side=-1)


def test_resize_frame_and_flow_scale_vectors():
    img = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    small = resize_frame(img, short_side=20)
    assert small.shape == (20, 30, 3) and small.dtype == np.uint8
    # Area interpolation averages: a 2x shrink of a constant image stays constant.
    assert np.all(resize_frame(np.full((40, 60, 3), 77, np.uint8), short_side=20) == 77)
    flow = np.zeros((40, 60, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -2.0
    resized = resize_flow(flow, (20, 15))
    assert resized.shape == (20, 15, 2)
    np.testing.assert_allclose(resized[..., 0], 0.75)
    np.testing.assert_allclose(resized[..., 1], -1.0)
    with pytest.raises(ValueError):
        resize_flow(np.zeros((4, 4)), (2, 2))
