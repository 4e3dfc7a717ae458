"""CMP parts and the quantised-flow loss: known minima, round trips, shapes, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from models.cmp import (
    SparseMotionEncoder,
    bin_centres,
    bins_to_flow_expectation,
    cmp_loss,
    cmp_model,
    flow_to_bins,
    predict_flow,
    quantised_flow,
    sparse_encoder_strides,
)

C, FMAX = 99, 50.0


def _peaked_logits(flow: torch.Tensor, num_bins: int = C, max_flow: float = FMAX) -> torch.Tensor:
    """Logits with a +40 spike at the true bin of each pixel and axis."""
    bins = flow_to_bins(flow, num_bins, max_flow)  # (B, 2, H, W)
    x = torch.nn.functional.one_hot(bins[:, 0], num_bins).permute(0, 3, 1, 2)
    y = torch.nn.functional.one_hot(bins[:, 1], num_bins).permute(0, 3, 1, 2)
    return 40.0 * torch.cat([x, y], dim=1).float()


def test_bin_centres_are_symmetric_with_zero_in_the_middle() -> None:
    centres = bin_centres(C, FMAX)
    assert centres.shape == (C,)
    assert centres[C // 2].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(centres, -centres.flip(0), atol=1e-5)
    assert centres[0] > -FMAX and centres[-1] < FMAX


def test_flow_to_bins_round_trip_and_clipping() -> None:
    centres = bin_centres(C, FMAX)
    assert torch.equal(flow_to_bins(centres), torch.arange(C))
    edges = flow_to_bins(torch.tensor([-1e4, -FMAX, FMAX, 1e4, float("inf")]))
    assert edges.tolist() == [0, 0, C - 1, C - 1, C - 1]
    step = 2 * FMAX / C
    assert flow_to_bins(torch.tensor([0.49 * step, 0.51 * step])).tolist() == [49, 50]
    with pytest.raises(ValueError, match="floating"):
        flow_to_bins(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="num_bins"):
        flow_to_bins(torch.zeros(3), num_bins=1)


def test_quantised_flow_is_the_decoded_one_hot_and_its_floor_is_hand_computable() -> None:
    # 3 bins over ±3 px: centres -2, 0, 2. A 1-D strip of 4 pixels, dy = 0 (centre bin, exact).
    flow = torch.tensor([[[[0.0, 0.9, 1.1, 7.0]], [[0.0, 0.0, 0.0, 0.0]]]])  # (1, 2, 1, 4)
    floor = quantised_flow(flow, num_bins=3, max_flow=3.0)
    assert floor[0, 0, 0].tolist() == pytest.approx([0.0, 0.0, 2.0, 2.0])  # 7 px clips to 2
    epe = (floor - flow).norm(dim=1).mean().item()
    assert epe == pytest.approx((0.0 + 0.9 + 0.9 + 5.0) / 4)
    # it is what the expectation decoder gives for one-hot logits, and it shrinks with the range
    decoded = bins_to_flow_expectation(_peaked_logits(flow, 3, 3.0), num_bins=3, max_flow=3.0)
    assert torch.allclose(decoded, floor, atol=1e-4)
    finer = quantised_flow(flow, num_bins=99, max_flow=8.0)
    assert (finer - flow).norm(dim=1).mean() < epe


def test_expectation_of_a_one_hot_is_the_bin_centre() -> None:
    flow = torch.tensor([[-37.3, 0.2], [12.9, 49.0]]).view(1, 2, 1, 2)
    expectation = bins_to_flow_expectation(_peaked_logits(flow))
    expected = bin_centres()[flow_to_bins(flow)]
    assert torch.allclose(expectation, expected, atol=1e-4)
    # Quantisation error is at most half a bin.
    assert (expectation - flow).abs().max() <= FMAX / C + 1e-4


def test_loss_is_zero_at_the_true_bins_and_2logC_when_uniform() -> None:
    generator = torch.Generator().manual_seed(0)
    flow = (torch.rand(2, 2, 8, 8, generator=generator) - 0.5) * 80
    assert cmp_loss(_peaked_logits(flow), flow).item() < 1e-6
    uniform = torch.zeros(2, 2 * C, 8, 8)
    assert cmp_loss(uniform, flow).item() == pytest.approx(2 * math.log(C), rel=1e-5)


def test_loss_upsamples_low_resolution_logits() -> None:
    # A constant flow: peaked logits at 1/8 resolution upsample to peaked logits everywhere.
    flow = torch.full((1, 2, 32, 32), 7.0)
    flow[:, 1] = -3.0
    logits = _peaked_logits(flow[:, :, ::8, ::8])
    assert logits.shape[-2:] == (4, 4)
    assert cmp_loss(logits, flow).item() < 1e-6
    assert torch.allclose(predict_flow(logits, (32, 32)), bin_centres()[flow_to_bins(flow)])


def test_valid_mask_excludes_pixels() -> None:
    flow = torch.zeros(1, 2, 4, 4)
    logits = _peaked_logits(flow)
    wrong = flow.clone()
    wrong[..., :2, :] = 30.0  # the target disagrees with the logits in the top half
    valid = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    valid[..., 2:, :] = True
    assert cmp_loss(logits, wrong).item() > 10
    assert cmp_loss(logits, wrong, valid=valid).item() < 1e-6
    none_valid = torch.zeros_like(valid)
    zero = cmp_loss(logits.requires_grad_(), wrong, valid=none_valid)
    assert zero.item() == 0.0
    zero.backward()  # still differentiable
    with pytest.raises(ValueError, match="valid"):
        cmp_loss(logits, wrong, valid=torch.ones(1, 2, 4, 4, dtype=torch.bool))


def test_loss_and_expectation_pass_gradcheck() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 10, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    flow = (torch.rand(1, 2, 6, 6, generator=generator, dtype=torch.float64) - 0.5) * 8
    valid = torch.rand(1, 1, 6, 6, generator=generator) > 0.3
    assert torch.autograd.gradcheck(
        lambda x: cmp_loss(x, flow, valid=valid, num_bins=5, max_flow=4.0), (logits,)
    )
    assert torch.autograd.gradcheck(
        lambda x: predict_flow(x, (6, 6), num_bins=5, max_flow=4.0), (logits,)
    )


def test_bad_loss_inputs_raise() -> None:
    flow = torch.zeros(2, 2, 8, 8)
    with pytest.raises(ValueError, match="2\\*num_bins"):
        cmp_loss(torch.zeros(2, 10, 8, 8), flow)
    with pytest.raises(ValueError, match="target_flow"):
        cmp_loss(torch.zeros(2, 2 * C, 8, 8), torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="batch sizes"):
        cmp_loss(torch.zeros(1, 2 * C, 8, 8), flow)


@pytest.mark.parametrize(
    ("backbone", "kwargs"), [("resnet18", {}), ("alexnet", {"fc_channels": 16})]
)
def test_cmp_forward_shapes(backbone: str, kwargs: dict) -> None:
    model = cmp_model(backbone, backbone_kwargs=kwargs, decoder_strides=(1, 2, 4, 8)).eval()
    image, sparse = torch.randn(2, 3, 64, 80), torch.zeros(2, 4, 64, 80)
    with torch.no_grad():
        logits = model(image, sparse)
    assert logits.shape == (2, 2 * C, 8, 10)
    flow = predict_flow(logits, (64, 80), model.num_bins, model.max_flow)
    assert flow.shape == (2, 2, 64, 80)
    # The authors' init (gain 0.02) starts from near-uniform bins: zero expected motion.
    assert float(logits.std()) < 0.05
    assert flow.abs().max() < 1.0


def test_cmp_alexnet_32x_model() -> None:
    model = cmp_model("alexnet", backbone_kwargs={"fc_channels": 16, "output_stride": 32})
    assert model.stride == 32 and model.sparse_encoder.strides == (2, 2, 8)
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 3, 128, 160), torch.zeros(1, 4, 128, 160))
    assert logits.shape == (1, 2 * C, 4, 5)
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.zeros(1, 3, 64, 80), torch.zeros(1, 4, 64, 80))


@pytest.mark.parametrize(
    ("strides", "first_stride", "size"),
    [((2, 2, 2), 2, 32), ((2, 2, 8), 2, 64), ((1, 4, 2), 1, 32)],
)
def test_sparse_encoder_layouts(strides: tuple, first_stride: int, size: int) -> None:
    encoder = SparseMotionEncoder(strides=strides).eval()
    assert encoder.block1[0].stride == (first_stride, first_stride)
    assert encoder.stride == strides[0] * strides[1] * strides[2]
    with torch.no_grad():
        out = encoder(torch.zeros(1, 4, size, size))
    assert out.shape == (1, 16, size // encoder.stride, size // encoder.stride)


def test_sparse_encoder_strides_follow_the_authors() -> None:
    assert sparse_encoder_strides(8) == (2, 2, 2)  # shallownet8x
    assert sparse_encoder_strides(32) == (2, 2, 8)  # shallownet32x
    assert sparse_encoder_strides(8, "pooled") == (1, 4, 2)
    with pytest.raises(ValueError, match="stride"):
        sparse_encoder_strides(16)
    with pytest.raises(ValueError, match="strides"):
        SparseMotionEncoder(strides=(4, 2))


def test_authors_init_reaches_every_layer_trunk_included() -> None:
    torch.manual_seed(0)
    model = cmp_model("resnet18")
    for name in ("image_encoder.trunk.layer3.1.conv2", "decoder.fusion", "sparse_encoder.block1.0"):
        conv = model.get_submodule(name)
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        std = 0.02 * math.sqrt(2.0 / (fan_in + fan_out))
        assert float(conv.weight.detach().std()) == pytest.approx(std, rel=0.1), name
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    weights = torch.cat([m.weight.detach() for m in bns])
    assert float(weights.mean()) == pytest.approx(1.0, abs=0.002)
    assert float(weights.std()) == pytest.approx(0.02, rel=0.1)
    assert all(torch.count_nonzero(m.bias) == 0 for m in bns)
    # The project's init keeps torchvision's trunk init (kaiming fan-out) and BN at identity.
    project = cmp_model("resnet18", init="xavier")
    conv = project.get_submodule("image_encoder.trunk.layer3.1.conv2")
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2.0 / (256 * 9)), rel=0.1)
    assert all(
        torch.all(m.weight == 1) for m in project.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    with pytest.raises(ValueError, match="init"):
        cmp_model("resnet18", init="kaiming")


def test_logits_follow_the_guidance() -> None:
    """Guidance reaches the logits: moving a point, or changing its flow, changes them."""
    torch.manual_seed(0)
    model = cmp_model("alexnet", backbone_kwargs={"fc_channels": 16}, num_bins=9).eval()
    image = torch.randn(1, 3, 64, 64)
    sparse = torch.zeros(1, 4, 64, 64)
    with torch.no_grad():
        none = model(image, sparse)
        sparse[0, :, 20, 30] = torch.tensor([10.0, -4.0, 1.0, 1.0])
        right = model(image, sparse)
        sparse[0, :2, 20, 30] = torch.tensor([-10.0, 4.0])
        left = model(image, sparse)
    scale = float(none.abs().max())
    for a, b in ((none, right), (right, left)):
        assert float((a - b).abs().max()) > 1e-3 * scale
    # Zero guidance gives the unguided logits back (eval mode is deterministic).
    assert torch.equal(none, model(image, torch.zeros(1, 4, 64, 64)).detach())


def test_cmp_rejects_bad_inputs() -> None:
    model = cmp_model("alexnet", backbone_kwargs={"fc_channels": 8}, num_bins=9)
    with pytest.raises(ValueError, match="image must be"):
        model(torch.zeros(1, 1, 64, 64), torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match="sparse must be"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.zeros(1, 3, 60, 64), torch.zeros(1, 4, 60, 64))
    with pytest.raises(ValueError, match="strides"):
        cmp_model("alexnet", backbone_kwargs={"fc_channels": 8}, decoder_strides=())
    with pytest.raises(ValueError, match="max_flow"):
        cmp_model("alexnet", backbone_kwargs={"fc_channels": 8}, max_flow=0.0)
