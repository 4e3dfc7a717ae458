"""CPFS maths (Mahendran et al. 2018): eqs. (2)-(5), the losses, pixel sampling, hypercolumns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.backbones import alexnet_fcn, resnet18_os8
from models.hypercolumn import DEFAULT_TAPS, HypercolumnEmbedder, sample_features
from models.methods.cpfs import (
    EMBEDDING_DIAGONAL,
    FLOW_DIAGONAL,
    column_softmax,
    cpfs_loss,
    embedding_kernel,
    flow_kernel,
    kernel_target_alignment,
    sample_pixels,
)


def test_eq4_flow_column_softmax_matches_hand_computed_3x3() -> None:
    a, b, c = 0.2, 0.7, 0.4  # K_f off-diagonal; K_f(p, p) = 1 is replaced by exp(0) = 1
    kernel = torch.tensor([[1.0, a, b], [a, 1.0, c], [b, c, 1.0]], dtype=torch.float64)[None]
    s = column_softmax(kernel, FLOW_DIAGONAL)[0]
    ea, eb, ec = math.exp(a), math.exp(b), math.exp(c)
    # column q = 0: p = 0 (diagonal), 1 (K = a), 2 (K = b)
    z0, z1, z2 = 1 + ea + eb, ea + 1 + ec, eb + ec + 1
    expected = [
        [1 / z0, ea / z1, eb / z2],
        [ea / z0, 1 / z1, ec / z2],
        [eb / z0, ec / z1, 1 / z2],
    ]
    assert s.numpy() == pytest.approx(np.array(expected), abs=1e-12)
    assert s.sum(0).numpy() == pytest.approx(np.ones(3), abs=1e-12)  # columns are distributions


def test_eq5_embedding_column_softmax_uses_exp_minus_three_quarters() -> None:
    # three embeddings with cosines 0 (e0, e1), 1 (e0, e0') and -1 (e0, -e0)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)[None]
    kernel = embedding_kernel(emb)
    assert kernel[0].diagonal().numpy() == pytest.approx(np.full(3, 0.25))
    s = column_softmax(kernel, EMBEDDING_DIAGONAL)[0]
    d, e0, em = math.exp(-0.75), math.exp(0.0), math.exp(-0.25)
    # column 0: p = 0 diag, p = 1 cos 0 -> K = 0, p = 2 cos -1 -> K = -1/4
    z0 = d + e0 + em
    assert s[0, 0].item() == pytest.approx(d / z0, abs=1e-12)
    assert s[1, 0].item() == pytest.approx(e0 / z0, abs=1e-12)
    assert s[2, 0].item() == pytest.approx(em / z0, abs=1e-12)
    z1 = e0 + d + e0  # column 1: p = 0 and p = 2 both have cosine 0
    assert s[:, 1].numpy() == pytest.approx(np.array([e0, d, e0]) / z1, abs=1e-12)


def test_flow_kernel_is_gaussian() -> None:
    flow = torch.tensor([[[0.0, 0.0], [0.3, 0.4], [0.0, 0.1]]], dtype=torch.float64)
    k = flow_kernel(flow, 0.5)[0]
    assert k[0, 1].item() == pytest.approx(math.exp(-0.25 / 0.5), abs=1e-12)
    assert k[0, 2].item() == pytest.approx(math.exp(-0.01 / 0.5), abs=1e-12)
    assert k.diagonal().numpy() == pytest.approx(np.ones(3))


def test_kta_of_identical_kernels_is_one_and_lower_otherwise() -> None:
    gen = torch.Generator().manual_seed(0)
    k = flow_kernel(torch.rand(2, 20, 2, generator=gen), 0.3)
    assert kernel_target_alignment(k, k).numpy() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert kernel_target_alignment(k, 3.0 * k).numpy() == pytest.approx([1.0, 1.0], abs=1e-6)
    other = flow_kernel(torch.rand(2, 20, 2, generator=gen), 0.3)
    assert (kernel_target_alignment(k, other) < 0.999).all()


def test_sigma_receives_a_gradient_for_every_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 32, 16, generator=gen, requires_grad=True)
    flow = torch.rand(2, 32, 2, generator=gen) * 2 - 1
    for name in ("ce", "ce_rev", "kta"):
        log_sigma = torch.tensor(math.log(0.1), requires_grad=True)
        loss = cpfs_loss(emb, flow, log_sigma.exp(), loss=name)
        loss.backward()
        assert log_sigma.grad is not None and log_sigma.grad.abs().item() > 0, name
        assert emb.grad is not None and emb.grad.abs().sum() > 0
        emb.grad = None


def test_ce_is_lower_when_embeddings_group_like_the_flow() -> None:
    # two objects moving apart: embeddings that separate them beat random ones
    flow = torch.cat([torch.full((1, 16, 2), 0.5), torch.full((1, 16, 2), -0.5)], 1)
    grouped = torch.cat(
        [torch.tensor([1.0, 0.0]).expand(1, 16, 2), torch.tensor([-1.0, 0.0]).expand(1, 16, 2)], 1
    )
    mixed = torch.randn(1, 32, 2, generator=torch.Generator().manual_seed(0))
    for name in ("ce", "ce_rev", "kta"):
        assert cpfs_loss(grouped, flow, 0.1, name) < cpfs_loss(mixed, flow, 0.1, name), name
    assert cpfs_loss(grouped, flow, 0.1, "kta").item() < 0.5


def test_cpfs_loss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="loss must be"):
        cpfs_loss(torch.zeros(1, 4, 3), torch.zeros(1, 4, 2), 0.1, "mse")
    with pytest.raises(ValueError, match="differ"):
        cpfs_loss(torch.zeros(1, 4, 3), torch.zeros(1, 5, 2), 0.1)


def test_sample_pixels_draws_distinct_valid_pixels() -> None:
    valid = torch.zeros(3, 100, dtype=torch.bool)
    valid[0, :50] = True
    valid[1] = True
    valid[2, :5] = True  # fewer than P: with replacement
    idx = sample_pixels(valid, 20, torch.Generator().manual_seed(0))
    assert idx.shape == (3, 20)
    assert (idx[0] < 50).all() and len(set(idx[0].tolist())) == 20
    assert len(set(idx[1].tolist())) == 20
    assert (idx[2] < 5).all()


def test_sample_features_reads_pixel_centres() -> None:
    feature = torch.arange(16.0).reshape(1, 1, 4, 4)
    index = torch.tensor([[0, 5, 15]])  # same resolution: exact values
    assert sample_features(feature, index, 4, 4)[0, :, 0].tolist() == [0.0, 5.0, 15.0]
    coarse = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # stride 2: pixel 0 lies in cell (0, 0)
    assert sample_features(coarse, torch.tensor([[0]]), 4, 4).item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["alexnet", "resnet18"])
def test_hypercolumn_embeddings_are_unit_vectors(name: str) -> None:
    trunk, _ = alexnet_fcn(fc_channels=64) if name == "alexnet" else resnet18_os8()
    head = HypercolumnEmbedder(trunk, DEFAULT_TAPS[name], embed_dim=16, hidden=32)
    expected = (96 + 96 + 384 + 256 + 64) if name == "alexnet" else (64 + 64 + 128 + 256 + 512)
    assert head.hypercolumn_dim == expected
    image = torch.randn(2, 3, 32, 32)
    index = torch.randint(0, 32 * 32, (2, 10))
    emb = head(image, index)
    assert emb.shape == (2, 10, 16)
    assert emb.norm(dim=-1).detach().numpy() == pytest.approx(np.ones((2, 10)), abs=1e-5)
    head.eval()
    dense = head.embed_dense(image, chunk=100)
    assert dense.shape == (2, 16, 32, 32)
    sparse = head(image, index)
    picked = dense.flatten(2).gather(2, index[:, None].expand(-1, 16, -1)).transpose(1, 2)
    assert torch.allclose(picked, sparse, atol=1e-5)


def test_hypercolumn_rejects_unknown_taps() -> None:
    trunk, _ = alexnet_fcn(fc_channels=8)
    with pytest.raises(ValueError, match="unknown taps"):
        HypercolumnEmbedder(trunk, ["conv9"])


def test_embedding_margin_hand_cases() -> None:
    from models.methods.grouping_eval import embedding_margin

    layers = torch.tensor([[0, 0, 1, 1]])
    apart = torch.tensor([[[1.0, 1.0, -1.0, -1.0]], [[0.0, 0.0, 0.0, 0.0]]])  # (D=2, 1, 4)
    assert embedding_margin(apart, layers).item() == pytest.approx(2.0)  # 1 - (-1)
    same = torch.ones(2, 1, 4)
    assert embedding_margin(same, layers).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(embedding_margin(same, torch.zeros(1, 4, dtype=torch.long)).item())


def test_kernel_rows_of_the_figure_match_the_full_kernels() -> None:
    from models.methods.grouping_figures import _kernel_rows

    gen = torch.Generator().manual_seed(0)
    emb, flow = torch.randn(4, 3, 5, generator=gen), torch.rand(2, 3, 5, generator=gen)
    k_f, k_phi = _kernel_rows(emb, flow, 0.3, pixel=7)
    full_phi = embedding_kernel(emb.flatten(1).T[None])[0, 7].reshape(3, 5)
    full_f = flow_kernel(flow.flatten(1).T[None], 0.3)[0, 7].reshape(3, 5)
    assert np.allclose(k_phi, full_phi.numpy(), atol=1e-6)
    assert np.allclose(k_f, full_f.numpy(), atol=1e-6)
