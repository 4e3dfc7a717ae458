"""Stride-8 trunks: output shapes, dilation layout, torchvision-compatible export."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from models.backbones import build_backbone, export_trunk_state_dict


@pytest.mark.parametrize(("name", "channels"), [("resnet18", 512), ("resnet50", 2048)])
def test_resnet_trunk_is_stride_8_and_exports_into_torchvision(name: str, channels: int) -> None:
    trunk, out_channels = build_backbone(name)
    assert out_channels == channels
    with torch.no_grad():
        features = trunk.eval()(torch.randn(1, 3, 64, 48))
    assert features.shape == (1, channels, 8, 6)

    exported = export_trunk_state_dict(trunk)
    reference = getattr(torchvision.models, name)()
    result = reference.load_state_dict(exported, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    # The values themselves arrive, not just the names.
    key = "layer4.0.conv1.weight"
    assert torch.equal(reference.state_dict()[key], exported[key])
    assert all(t.device.type == "cpu" for t in exported.values())


def test_resnet18_dilation_layout_matches_torchvision_resnet50_rule() -> None:
    trunk, _ = build_backbone("resnet18")
    convs = {n: m for n, m in trunk.named_modules() if isinstance(m, nn.Conv2d)}
    # No stride left after layer2; dilation 2 in layer3 and 4 in layer4, the first conv of each
    # dilated layer keeping the previous rate.
    for name, conv in convs.items():
        if name.startswith(("layer3", "layer4")):
            assert conv.stride == (1, 1), name
    assert convs["layer3.0.conv1"].dilation == (1, 1)
    assert convs["layer3.0.conv2"].dilation == (2, 2)
    assert convs["layer3.1.conv1"].dilation == (2, 2)
    assert convs["layer4.0.conv1"].dilation == (2, 2)
    assert convs["layer4.1.conv2"].dilation == (4, 4)
    assert convs["layer4.1.conv2"].padding == (4, 4)
    assert convs["layer2.0.conv1"].stride == (2, 2)


def test_export_strips_wrapper_prefixes() -> None:
    trunk, _ = build_backbone("alexnet", fc_channels=8)
    wrapped = nn.Sequential()
    wrapped.add_module("module", trunk)
    assert export_trunk_state_dict(wrapped).keys() == trunk.state_dict().keys()


def test_alexnet_fcn_shapes_and_xavier_init() -> None:
    trunk, channels = build_backbone("alexnet", fc_channels=32, dropout=0.0)
    assert channels == 32
    with torch.no_grad():
        assert trunk.eval()(torch.randn(2, 3, 64, 80)).shape == (2, 32, 8, 10)
    conv = trunk.conv3[0]
    bound = (6.0 / (conv.in_channels * 9 + conv.out_channels * 9)) ** 0.5
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(conv.bias) == 0


def test_bad_backbone_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="fc_channels"):
        build_backbone("alexnet", fc_channels=0)
    with pytest.raises(ValueError, match="dropout"):
        build_backbone("alexnet", dropout=1.0)
