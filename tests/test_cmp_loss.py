"""cmp_loss's fast path (GEMM upsampling, bins last, chunked) against the straightforward one.

The reference below is cmp_loss as it was before the fast path (F.interpolate of the logits to
the target size, then F.cross_entropy per axis): value and gradient must agree to 100 machine
epsilons relative (``TOLERANCE_EPS``). Measured over this file's float32 cases: value 1.5e-7,
gradient 3.1e-7 (≈ 2.6 eps, so the bound is ~40x above it); float64: 2.3e-16 (≈ 1 eps); the same
with 1 or 2 threads and with ATen's default (non-AVX2) kernels. bf16 logits: value 9.4e-6.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import models.cmp as cmp
from models.cmp import cmp_loss, flow_to_bins

C = 99
TOLERANCE_EPS = 100  # relative error bound, in machine epsilons of the logits' dtype


def reference_loss(logits, target_flow, valid=None, num_bins=C, max_flow=50.0):
    size = target_flow.shape[-2:]
    bins = flow_to_bins(target_flow, num_bins, max_flow)
    per_pixel = 0
    for axis, part in enumerate((logits[:, :num_bins], logits[:, num_bins:])):
        if tuple(part.shape[-2:]) != tuple(size):
            part = F.interpolate(part, size=tuple(size), mode="bilinear", align_corners=False)
        if part.dtype not in (torch.float32, torch.float64):
            part = part.float()
        per_pixel = per_pixel + F.cross_entropy(part, bins[:, axis], reduction="none")
    if valid is None:
        return per_pixel.mean()
    weight = (valid[:, 0] if valid.ndim == 4 else valid).to(per_pixel.dtype)
    return (per_pixel * weight).sum() / weight.sum().clamp(min=1.0)


def _value_and_grad(loss_fn, logits, *args, **kwargs):
    x = logits.detach().clone().requires_grad_()
    loss = loss_fn(x, *args, **kwargs)
    loss.backward()
    return loss.detach(), x.grad


def _assert_same(logits, flow, valid=None, num_bins=C, max_flow=50.0):
    got, got_grad = _value_and_grad(cmp_loss, logits, flow, valid, num_bins, max_flow)
    want, want_grad = _value_and_grad(reference_loss, logits, flow, valid, num_bins, max_flow)
    assert got.dtype == want.dtype
    tolerance = TOLERANCE_EPS * torch.finfo(logits.dtype).eps
    assert (got - want).abs() <= tolerance * want.abs(), (got, want, tolerance)
    rel = (got_grad - want_grad).norm() / want_grad.norm().clamp(min=1e-12)
    assert rel <= tolerance, (rel, tolerance)


def _inputs(batch, small, big, seed=0, spread=3.0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 2 * C, *small, generator=generator, dtype=dtype) * spread
    flow = (torch.rand(batch, 2, *big, generator=generator, dtype=dtype) - 0.5) * 120
    valid = torch.rand(batch, 1, *big, generator=generator) > 0.3
    return logits, flow, valid


@pytest.mark.parametrize(
    ("small", "big"),
    [((4, 4), (32, 32)), ((5, 7), (23, 31)), ((8, 8), (8, 8)), ((6, 6), (4, 5)), ((1, 3), (8, 8))],
)
def test_loss_and_gradient_equal_the_reference(small, big) -> None:
    logits, flow, valid = _inputs(2, small, big)
    _assert_same(logits, flow)
    _assert_same(logits, flow, valid)
    _assert_same(logits, flow, valid[:, 0])  # (B, H, W) form of the mask


def test_many_chunks_equal_one(monkeypatch: pytest.MonkeyPatch) -> None:
    logits, flow, valid = _inputs(3, (4, 4), (32, 32), seed=1)
    for budget in (32 * C * 3, 32 * 32 * C * 2, 2**30):  # 3 rows, 2 whole maps, everything
        monkeypatch.setitem(cmp.CHUNK_ELEMENTS, "cpu", budget)
        _assert_same(logits, flow, valid)


def test_float64_and_a_reduced_number_of_bins() -> None:
    logits, flow, valid = _inputs(2, (3, 3), (12, 12), seed=2, dtype=torch.float64)
    _assert_same(logits[:, : 2 * 5].contiguous(), flow * 0.1, valid, num_bins=5, max_flow=4.0)


def test_neighbour_cells_far_apart_use_a_per_pixel_shift() -> None:
    # Two neighbouring cells peak at 400 on different bins: shifted by each cell's own max, every
    # bin sits near -200 at the pixels between them and exp underflows (float32).
    logits, flow, valid = _inputs(1, (4, 4), (32, 32), seed=3)
    logits[:, 3, 1, 1] = 400.0
    logits[:, 4, 1, 2] = 400.0
    logits[:, C + 7, 2, 2] = -400.0
    shifted = logits - logits.amax(dim=1, keepdim=True)
    between = F.interpolate(shifted[:, :C], size=(32, 32), mode="bilinear", align_corners=False)
    assert (between.exp().sum(dim=1) == 0).any()  # the case the per-pixel shift is for
    _assert_same(logits, flow, valid)


def test_no_valid_pixel_gives_zero_loss_and_zero_gradient() -> None:
    logits, flow, valid = _inputs(2, (4, 4), (32, 32), seed=4)
    loss, grad = _value_and_grad(cmp_loss, logits, flow, torch.zeros_like(valid))
    assert loss.item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_bf16_logits_under_autocast_are_scored_in_float32() -> None:
    logits, flow, valid = _inputs(2, (4, 4), (32, 32), seed=5)
    logits = logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_grad = _value_and_grad(cmp_loss, logits, flow, valid)
    want, want_grad = _value_and_grad(reference_loss, logits, flow, valid)
    assert got.dtype == torch.float32 and got_grad.dtype == torch.bfloat16
    assert torch.allclose(got, want, rtol=1e-4)  # measured 9.4e-6 relative
    rel = (got_grad.float() - want_grad.float()).norm() / want_grad.float().norm()
    assert rel < 1e-2  # both gradients are rounded to bf16 (eps 7.8e-3): measured 1.9e-3


def test_a_retained_graph_gives_the_same_gradient_twice() -> None:
    logits, flow, valid = _inputs(1, (4, 4), (32, 32), seed=6)
    x = logits.requires_grad_()
    loss = cmp_loss(x, flow, valid)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(first, second)
