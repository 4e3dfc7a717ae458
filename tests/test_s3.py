"""S3 grouping losses (Mahendran et al. 2018, ECCV-W): affine fit, recombined flow, entropy."""

from __future__ import annotations

import math

import pytest
import torch

from models.methods.s3 import (
    affine_fit,
    affine_motion_loss,
    coordinate_design,
    histogram_entropy,
    low_entropy_loss,
    recombined_affine_flow,
    s3_loss,
    soft_magnitude_histogram,
)


def _affine_field(a: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(1, 2, H, W) flow X A for A (3, 2) in normalised coordinates."""
    design = coordinate_design(height, width, a.dtype)
    return (design @ a).T.reshape(1, 2, height, width)


def test_affine_fit_recovers_a_known_affine_field_exactly() -> None:
    a_true = torch.tensor([[1.5, -0.3], [0.2, 2.0], [3.0, -1.0]], dtype=torch.float64)
    flow = _affine_field(a_true, 12, 16)
    weights = torch.rand(1, 1, 12 * 16, dtype=torch.float64) + 0.1
    fit = affine_fit(
        weights, coordinate_design(12, 16, torch.float64), flow.flatten(2).mT, ridge=0.0
    )
    assert torch.allclose(fit[0, 0], a_true, atol=1e-10)


def test_two_segments_with_their_own_affine_motions_give_zero_residual() -> None:
    h, w = 10, 12
    a1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.0]], dtype=torch.float64)
    a2 = torch.tensor([[0.0, -2.0], [2.0, 0.0], [-4.0, 3.0]], dtype=torch.float64)
    left = torch.zeros(1, 1, h, w, dtype=torch.float64)
    left[..., : w // 2] = 1.0
    segments = torch.cat([left, 1 - left], 1)
    flow = left * _affine_field(a1, h, w) + (1 - left) * _affine_field(a2, h, w)
    assert torch.allclose(recombined_affine_flow(segments, flow, ridge=0.0), flow, atol=1e-9)
    assert affine_motion_loss(segments, flow, epsilon=0.01).item() < 1e-9
    # one segment cannot explain two motions
    one = torch.cat([torch.ones_like(left), torch.zeros_like(left)], 1)
    assert affine_motion_loss(one, flow).item() > 0.5


def test_affine_fit_passes_gradcheck_in_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    design = coordinate_design(4, 5, torch.float64)
    weights = (torch.rand(1, 2, 20, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    flow = torch.randn(1, 20, 2, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda w, f: affine_fit(w, design, f), (weights, flow))
    logits = torch.randn(1, 3, 4, 5, generator=gen, dtype=torch.float64).requires_grad_()
    target = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: affine_motion_loss(z.softmax(1), target), (logits,))


def test_entropy_of_a_one_bin_histogram_is_zero() -> None:
    hist = torch.tensor([[0.0, 7.0, 0.0, 0.0]])
    assert histogram_entropy(hist).item() == 0.0
    assert histogram_entropy(torch.ones(1, 4)).item() == pytest.approx(math.log(4))
    assert histogram_entropy(torch.zeros(1, 4)).item() == 0.0  # an empty segment
    # a magnitude on a bin centre lands in that bin only: entropy exactly 0
    seg = torch.ones(1, 1, 3, 3)
    mag = torch.full((1, 3, 3), 5.0)
    soft = soft_magnitude_histogram(seg, mag, num_bins=5, max_magnitude=10.0)
    assert soft[0, 0].tolist() == [0.0, 0.0, 9.0, 0.0, 0.0]
    assert histogram_entropy(soft).item() == 0.0


def test_soft_histogram_splits_linearly_between_bins() -> None:
    hist = soft_magnitude_histogram(torch.ones(1, 1, 1, 1), torch.full((1, 1, 1), 3.75), 5, 10.0)
    assert hist[0, 0].tolist() == pytest.approx([0.0, 0.5, 0.5, 0.0, 0.0])


def test_low_entropy_loss_prefers_segments_that_split_the_motion() -> None:
    h, w = 8, 8
    left = torch.zeros(1, 1, h, w)
    left[..., : w // 2] = 1.0
    flow = torch.cat([left * 10.0, torch.zeros_like(left)], 1)  # left half moves 10 px
    split = torch.cat([left, 1 - left], 1)
    mixed = torch.full((1, 2, h, w), 0.5)
    assert low_entropy_loss(split, flow, max_magnitude=10.0).item() == pytest.approx(0.0, abs=1e-6)
    assert low_entropy_loss(mixed, flow, max_magnitude=10.0).item() == pytest.approx(math.log(2))


def test_s3_loss_combines_and_validates() -> None:
    seg = torch.softmax(torch.randn(2, 3, 8, 8), 1)
    flow = torch.randn(2, 2, 8, 8)
    out = s3_loss(seg, flow, losses=["affine", "entropy"], weights={"entropy": 0.5})
    assert out["total"].item() == pytest.approx((out["affine"] + 0.5 * out["entropy"]).item())
    valid = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    valid[..., :2] = False
    assert torch.isfinite(s3_loss(seg, flow, valid, losses=["affine"])["total"])
    with pytest.raises(ValueError, match="subset"):
        s3_loss(seg, flow, losses=["magic"])
    with pytest.raises(ValueError, match="need segments"):
        s3_loss(seg[0], flow)


def test_low_entropy_gradient_is_finite_with_empty_bins() -> None:
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    flow = torch.zeros(1, 2, 6, 6)
    flow[:, 0, :, :3] = 4.0  # two magnitudes only: most bins stay empty
    low_entropy_loss(logits.softmax(1), flow, num_bins=8, max_magnitude=8.0).backward()
    assert torch.isfinite(logits.grad).all()


def test_best_match_iou_hand_cases() -> None:
    from models.methods.grouping_eval import best_match_iou

    layers = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    assert best_match_iou(layers + 5, layers).item() == pytest.approx(1.0)
    one = torch.zeros_like(layers)  # one segment covers both layers: IoU 0.5 each
    assert best_match_iou(one, layers).item() == pytest.approx(0.5)
    # layer 1 split in two halves: best half has IoU 0.5; layer 0 matched exactly
    split = torch.tensor([[0, 0, 1, 2], [0, 0, 1, 2]])
    assert best_match_iou(split, layers).item() == pytest.approx(0.75)
