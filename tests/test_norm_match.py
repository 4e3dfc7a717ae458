"""models.norm_match: rescaling BN-followed convs keeps the function and sets the init's norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.backbones import build_backbone
from models.finetune import load_trunk_weights
from models.norm_match import conv_bn_pairs, match_init_norms, norm_matched_copy


def _scrambled_resnet18(seed: int) -> nn.Module:
    """A ResNet-18 trunk whose conv norms and BN statistics are far from a fresh init's."""
    torch.manual_seed(seed)
    trunk, _ = build_backbone("resnet18")
    with torch.no_grad():
        for i, conv in enumerate(m for m in trunk.modules() if isinstance(m, nn.Conv2d)):
            conv.weight.mul_(0.05 if i % 2 else 7.0)  # shrunk and grown, like CMP and flowcls
        for bn in (m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_(0.0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    return trunk


def test_every_resnet18_conv_is_paired_with_its_own_batchnorm():
    trunk, _ = build_backbone("resnet18")
    pairs = dict(conv_bn_pairs(trunk))
    convs = [n for n, m in trunk.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(pairs) == sorted(convs)  # 20 convs in a ResNet-18 trunk, each before a BN
    assert pairs["conv1"] == "bn1"
    assert pairs["layer2.0.downsample.0"] == "layer2.0.downsample.1"
    assert pairs["layer4.1.conv2"] == "layer4.1.bn2"


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_rescaling_keeps_the_function_and_sets_the_reference_norms(mode):
    trunk = _scrambled_resnet18(0)
    torch.manual_seed(1)
    reference, _ = build_backbone("resnet18")
    x = torch.randn(4, 3, 48, 48)
    getattr(trunk, mode)()
    with torch.no_grad():
        before = trunk(x).clone()
    if mode == "train":  # the forward above moved the running statistics; start from the same
        trunk = _scrambled_resnet18(0)
        trunk.train()
    factors = match_init_norms(trunk, reference)
    with torch.no_grad():
        after = trunk(x)
    # equal up to BatchNorm's eps, which a rescaled running variance weighs differently
    scale = float(before.abs().max())
    torch.testing.assert_close(after, before, rtol=0.02, atol=0.01 * scale)
    assert float((after - before).abs().mean()) < 1e-3 * scale
    assert min(factors.values()) < 0.5 and max(factors.values()) > 5  # it did rescale both ways
    for conv_name, _ in conv_bn_pairs(trunk):
        got = trunk.get_submodule(conv_name).weight.norm()
        want = reference.get_submodule(conv_name).weight.norm()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=0)


def test_a_trunk_without_batchnorm_is_refused():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match="BatchNorm"):
        match_init_norms(plain, plain)


def test_norm_matched_copy_loads_into_a_trunk(tmp_path):
    trunk = _scrambled_resnet18(2)
    src = tmp_path / "backbone.pth"
    torch.save(trunk.state_dict(), src)
    out = tmp_path / "matched.pth"
    factors = norm_matched_copy("resnet18", src, out, seed=0)
    assert len(factors) == 20
    fresh, _ = build_backbone("resnet18")
    load_trunk_weights(fresh, out)  # strict: every key, right shapes
    torch.manual_seed(0)
    reference, _ = build_backbone("resnet18")
    torch.testing.assert_close(
        fresh.layer3[0].conv1.weight.norm(),
        reference.layer3[0].conv1.weight.norm(),
        rtol=1e-4,
        atol=0,
    )
