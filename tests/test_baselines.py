"""The CMP validation baselines on hand-made flows whose EPEs are computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from models.baselines import (
    baseline_epes,
    guidance_mean_fill,
    nearest_guidance_fill,
    zero_fill,
)


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1×4 strip: left half moves (+3, +4), right half (0, 0); one guidance point per half
    (pixels 0 and 3)."""
    flow = torch.zeros(1, 2, 1, 4)
    flow[0, 0, 0, :2] = 3.0
    flow[0, 1, 0, :2] = 4.0
    sparse = torch.zeros(1, 4, 1, 4)
    for x in (0, 3):
        sparse[0, 0:2, 0, x] = flow[0, :, 0, x]
        sparse[0, 2:4, 0, x] = 1.0
    return flow, sparse


def test_baselines_on_a_hand_made_strip() -> None:
    flow, sparse = _case()
    epes = baseline_epes(flow, sparse)
    # zero: |(3,4)| = 5 on two of four pixels -> 2.5
    assert epes["zero"] == pytest.approx(2.5)
    # mean of the two guidance vectors is (1.5, 2); error 2.5 on every pixel
    assert epes["guidance_mean"] == pytest.approx(2.5)
    # nearest: pixels 0,1 -> point 0 (exact), pixels 2,3 -> point 3 (exact)
    assert epes["nearest_guidance"] == pytest.approx(0.0)


def test_nearest_fill_is_a_voronoi_fill_and_ties_go_to_the_first_point() -> None:
    sparse = torch.zeros(1, 4, 3, 3)
    sparse[0, 0, 0, 0], sparse[0, 2, 0, 0] = 1.0, 1.0  # (0,0): dx = 1
    sparse[0, 1, 2, 2], sparse[0, 2, 2, 2] = 7.0, 1.0  # (2,2): dy = 7
    fill = nearest_guidance_fill(sparse, chunk=2)  # a small chunk exercises the blocking
    dx, dy = fill[0, 0], fill[0, 1]
    # anti-diagonal pixels are equidistant: the first point in row-major order wins
    expected_first = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert torch.equal(dx == 1.0, expected_first)
    assert torch.equal(dy == 7.0, ~expected_first)


def test_valid_mask_and_empty_guidance() -> None:
    flow, sparse = _case()
    valid = torch.tensor([[[[True, False, True, True]]]])
    epes = baseline_epes(flow, sparse, valid)
    assert epes["zero"] == pytest.approx(5.0 / 3.0)
    empty = torch.zeros_like(sparse)
    assert torch.equal(nearest_guidance_fill(empty), zero_fill(empty))
    assert torch.equal(guidance_mean_fill(empty), zero_fill(empty))
    # two samples, one without guidance: the mean fill of that one stays zero
    both = torch.cat([sparse, empty])
    assert torch.equal(guidance_mean_fill(both)[1], torch.zeros(2, 1, 4))
    assert guidance_mean_fill(both)[0, :, 0, 0].tolist() == [1.5, 2.0]
    assert math.isclose(baseline_epes(flow, sparse)["guidance_mean"], 2.5)


def test_bad_shapes_are_refused() -> None:
    flow, sparse = _case()
    with pytest.raises(ValueError, match="sparse must be"):
        zero_fill(sparse[0])
    with pytest.raises(ValueError, match="flow must be"):
        baseline_epes(flow[:, :1], sparse)
