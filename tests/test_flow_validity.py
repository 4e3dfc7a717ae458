"""Flow validity (issue 12): the checks, the PNG's valid bit, and the consumers that honour it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.flow import make_flow_fn
from pipeline.flow.validity import (
    chain_flows,
    flow_validity,
    forward_backward_consistent,
    photometric_error,
)
from pipeline.flowio import decode_flow_png, encode_flow_png
from pipeline.guidance import sample_guidance
from pipeline.synthetic_movers import render_mover_clip


def _constant(h: int, w: int, u: float, v: float) -> np.ndarray:
    flow = np.empty((h, w, 2), np.float32)
    flow[..., 0], flow[..., 1] = u, v
    return flow


def test_forward_backward_test_by_hand():
    forward = _constant(6, 10, 2.0, 0.0)
    ok = forward_backward_consistent(forward, _constant(6, 10, -2.0, 0.0))
    assert ok[:, :8].all() and not ok[:, 8:].any()  # the last two columns land off the frame
    # |f + b|^2 = 1 > 0.01 (4 + 1) + 0.5 = 0.55: inconsistent everywhere
    assert not forward_backward_consistent(forward, _constant(6, 10, -1.0, 0.0)).any()
    # with beta = 1.2 the same pair passes (1 < 0.05 + 1.2)
    assert forward_backward_consistent(forward, _constant(6, 10, -1.0, 0.0), beta=1.2)[:, :8].all()


def test_photometric_error_is_zero_for_the_true_shift_and_large_for_a_wrong_one():
    rng = np.random.default_rng(0)
    img0 = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    img1 = np.roll(img0, 3, axis=1)  # content moves 3 px right
    right = photometric_error(img0, img1, _constant(20, 30, 3.0, 0.0), window=1)
    wrong = photometric_error(img0, img1, _constant(20, 30, 0.0, 0.0), window=1)
    assert right[:, :27].max() == 0.0
    assert wrong.mean() > 40.0


def test_a_forward_flow_that_misses_the_mover_gets_the_mover_marked_invalid():
    clip = render_mover_clip(seed=1, gap=3, short_side=144)
    background = np.median(clip.flow[~clip.mover], axis=0)
    h, w = clip.flow.shape[:2]
    # what a backend that lost the object returns: the camera's motion everywhere, both ways
    forward = _constant(h, w, *background)
    backward = _constant(h, w, *-background)
    checks = flow_validity(clip.frames[0], clip.frames[-1], forward, backward)
    assert checks.consistent[clip.mover].mean() > 0.9  # the two directions agree ...
    assert (~checks.valid[clip.mover]).mean() > 0.8  # ... but the warped frame gives it away
    visible = ~clip.mover & ~clip.occluded
    assert checks.valid[visible].mean() > 0.9
    assert 0.0 < checks.invalid_fraction < 0.5


def test_a_real_backend_that_misses_the_mover_is_flagged():
    clip = render_mover_clip(seed=0, gap=3, short_side=144)
    fn = make_flow_fn("dis_fast")
    forward, backward = fn(clip.frames[0], clip.frames[-1]), fn(clip.frames[-1], clip.frames[0])
    epe = np.hypot(*(forward - clip.flow).transpose(2, 0, 1))
    assert np.median(epe[clip.mover]) > 5.0  # DIS loses this 10-60 px jump at 144 px
    valid = flow_validity(clip.frames[0], clip.frames[-1], forward, backward).valid
    assert (~valid[epe > 3.0]).mean() > 0.9


def test_chain_composes_translations_and_carries_validity():
    first, second = _constant(8, 12, 1.0, 0.0), _constant(8, 12, 2.0, 1.0)
    valid_second = np.ones((8, 12), bool)
    valid_second[4, 6] = False  # frame-1 pixel (6, 4) is reached from frame-0 pixel (5, 4)
    flow, valid = chain_flows([first, second], [np.ones((8, 12), bool), valid_second])
    np.testing.assert_allclose(flow[:4, :8], _constant(4, 8, 3.0, 1.0))
    assert not valid[4, 5] and valid[3, 5] and valid[4, 4]
    assert not valid[:, 9:].any() and not valid[7, :].any()  # leave the frame by t+2


def test_valid_bit_round_trips_through_the_png():
    rng = np.random.default_rng(2)
    flow = rng.uniform(-30, 30, (17, 23, 2)).astype(np.float32)
    valid = rng.random((17, 23)) > 0.3
    data, _ = encode_flow_png(flow, valid)
    decoded, valid_back = decode_flow_png(data)
    np.testing.assert_array_equal(valid_back, valid)
    assert np.abs(decoded - flow).max() <= 1 / 128


def test_guidance_puts_no_point_on_an_invalid_pixel():
    rng = np.random.default_rng(3)
    flow = np.zeros((96, 128, 2), np.float32)
    flow[20:60, 30:80] = (5.0, -3.0)  # a moving block: watershed points inside and around it
    valid = np.ones((96, 128), bool)
    valid[10:70, 20:90] = rng.random((60, 70)) > 0.5  # speckled invalid pixels over it
    valid[:, 60:70] = False  # and a band covering a grid column
    params = {"kernel_size": 15, "grid_stride": 16, "max_points": 500}
    for seed in range(5):
        points = sample_guidance(flow, rng=seed, valid=valid, **params).points
        assert len(points) > 5
        assert valid[points[:, 0], points[:, 1]].all()
        plain = sample_guidance(flow, rng=seed, **params).points
        assert not valid[plain[:, 0], plain[:, 1]].all()  # without the mask some would be
    all_valid = sample_guidance(flow, rng=7, valid=np.ones((96, 128), bool), **params).points
    np.testing.assert_array_equal(all_valid, sample_guidance(flow, rng=7, **params).points)
    with pytest.raises(ValueError, match="valid mask shape"):
        sample_guidance(flow, rng=0, valid=valid[:10], **params)


def test_cmp_loss_ignores_invalid_pixels():
    from models.cmp import cmp_loss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2 * 9, 8, 8, generator=generator)
    flow = torch.rand(2, 2, 8, 8, generator=generator) * 4 - 2
    valid = torch.rand(2, 1, 8, 8, generator=generator) > 0.4
    other = flow.clone()
    other[~valid.expand_as(flow)] = 3.5  # change the target only where it is invalid
    same = cmp_loss(logits, flow, valid=valid, num_bins=9, max_flow=4.0)
    assert torch.allclose(same, cmp_loss(logits, other, valid=valid, num_bins=9, max_flow=4.0))
    assert not torch.allclose(same, cmp_loss(logits, other, num_bins=9, max_flow=4.0))


def test_cmp_epe_metric_ignores_invalid_pixels():
    from models.methods.cmp import endpoint_error

    target = torch.zeros(1, 2, 4, 4)
    pred = torch.zeros(1, 2, 4, 4)
    pred[:, 0, :, :2] = 3.0  # wrong by 3 px on the left half ...
    valid = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    valid[..., :2] = False  # ... which is invalid
    assert endpoint_error(pred, target, valid).item() == 0.0
    assert endpoint_error(pred, target).item() == pytest.approx(1.5)


def test_valid_bit_reaches_the_cmp_batch_and_its_guidance(tmp_path):
    """Flow PNG -> HDF5 shard -> ShardDataset 'cmp' view: batch['valid'] is the PNG's valid bit
    and no guidance point lands on an invalid pixel."""
    from models.data import ShardDataset
    from pipeline.shards.writer import write_shards
    from tests.test_shards import HEIGHT, WIDTH, make_video

    video = make_video(tmp_path, "vid0-abcdef00", n_pairs=2, masks=False, guidance=False)
    valid = np.ones((HEIGHT, WIDTH), bool)
    valid[:, : WIDTH // 2] = False  # the left half fails the checks
    for png in sorted((video.flow_dir / "flow").glob("*.png")):
        flow, _ = decode_flow_png(png.read_bytes())
        flow[:20, 30:] += 6.0  # motion boundaries in the valid half too
        png.write_bytes(encode_flow_png(flow, valid)[0])
    index = write_shards([video], tmp_path / "shards", val_fraction=0.0)
    assert index["totals"]["n_samples"] == 2
    data = ShardDataset(
        [tmp_path / "shards" / "index.json"],
        view="cmp",
        crop_size=(HEIGHT, WIDTH),
        augment=False,
        guidance={"kernel_size": 7, "grid_stride": 8, "max_points": 100},
        seed=0,
    )
    for i in range(len(data)):
        item = data[i]
        assert item["valid"].shape == (1, HEIGHT, WIDTH)
        np.testing.assert_array_equal(item["valid"][0].numpy(), valid)
        points = item["points"][(item["points"] >= 0).all(dim=1)].numpy()
        assert len(points) > 0 and valid[points[:, 0], points[:, 1]].all()


def test_unlc_saliency_skips_invalid_pixels_without_extra_flow():
    from pipeline.saliency import PAIR_STATIC, motion_saliency_maps, pair_deviation

    flow = np.zeros((20, 20, 2), np.float32)
    flow[:5, :5] = (10.0, 0.0)  # a wrong vector where the checks failed
    valid = np.ones((20, 20), bool)
    valid[:5, :5] = False
    kind, deviation = pair_deviation(flow, valid=valid)
    assert kind == PAIR_STATIC and deviation[:5, :5].max() == 0.0
    assert pair_deviation(flow)[1][:5, :5].min() == 100.0  # without the mask it is the peak
    assert pair_deviation(flow, valid=np.zeros((20, 20), bool)) == ("skipped", None)

    rng = np.random.default_rng(4)
    base = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 2 * t, axis=1) for t in range(5)])[:, :, 4:36]
    calls = []
    fn = make_flow_fn("dis_fast", finest_scale=0)

    def counted(a, b):
        calls.append(1)
        return fn(a, b)

    plain = motion_saliency_maps(frames, counted, radius=2)[0]
    n_plain = len(calls)
    checked = motion_saliency_maps(frames, counted, radius=2, flow_checks={})[0]
    assert len(calls) - n_plain == n_plain  # the reverse flows are reused, not recomputed
    assert checked.shape == plain.shape and np.isfinite(checked).all()


def test_margin_grows_the_invalid_region():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    forward, backward = _constant(12, 12, 0.0, 0.0), _constant(12, 12, 0.0, 0.0)
    backward[5, 6] = (3.0, 0.0)  # one inconsistent pixel
    tight = flow_validity(img, img, forward, backward, margin=0).valid
    assert (~tight).sum() == 1 and not tight[5, 6]
    grown = flow_validity(img, img, forward, backward, margin=1).valid
    assert not grown[4:7, 5:8].any() and (~grown).sum() == 9
    with pytest.raises(ValueError, match="margin"):
        flow_validity(img, img, forward, backward, margin=-1)
