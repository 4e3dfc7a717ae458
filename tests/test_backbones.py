"""Trunks: output shapes, dilation layouts, AlexNet strides, torchvision-compatible export."""

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


def _convs(trunk: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in trunk.named_modules() if isinstance(m, nn.Conv2d)}


def test_resnet50_authors_dilation_layout_block_by_block() -> None:
    trunk, _ = build_backbone("resnet50")  # the default layout is the authors'
    convs = _convs(trunk)
    # The CMP authors' models/backbone/resnet.py: every layer3 conv2 at dilation 2 and every
    # layer4 conv2 at dilation 4, block 0 included (tests/test_paper_recipes.py has the table).
    rate = {"layer1": 1, "layer2": 1, "layer3": 2, "layer4": 4}
    conv2 = {n: c for n, c in convs.items() if n.endswith("conv2")}
    assert len(conv2) == 3 + 4 + 6 + 3
    for name, conv in conv2.items():
        assert conv.dilation == (rate[name[:6]],) * 2, name
    for name, conv in convs.items():
        if name.startswith(("layer3", "layer4")):
            assert conv.stride == (1, 1), name
            if name.endswith("conv2"):
                assert conv.padding == conv.dilation, name  # 3x3: the map keeps its size
            else:
                assert conv.kernel_size == (1, 1) and conv.dilation == (1, 1), name
    assert convs["layer2.0.conv2"].stride == (2, 2)
    assert convs["layer2.0.downsample.0"].stride == (2, 2)


def test_resnet50_deeplab_layout_is_torchvisions_replace_stride_with_dilation() -> None:
    trunk, _ = build_backbone("resnet50", dilation_layout="deeplab")
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    reference.load_state_dict(export_trunk_state_dict(trunk), strict=False)
    ours, theirs = _convs(trunk), _convs(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dilation == theirs[name].dilation, name
        assert ours[name].stride == theirs[name].stride, name
    assert ours["layer3.0.conv2"].dilation == (1, 1)
    assert ours["layer4.0.conv2"].dilation == (2, 2)
    x = torch.randn(1, 3, 48, 48)
    body = nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(trunk.eval()(x), body.eval()(x))


def test_resnet18_layouts() -> None:
    authors = _convs(build_backbone("resnet18")[0])
    deeplab = _convs(build_backbone("resnet18", dilation_layout="deeplab")[0])
    for convs in (authors, deeplab):
        for name, conv in convs.items():
            if name.startswith(("layer3", "layer4")):
                assert conv.stride == (1, 1), name
        assert convs["layer2.0.conv1"].stride == (2, 2)
        assert convs["layer3.0.conv2"].dilation == (2, 2)
        assert convs["layer3.1.conv1"].dilation == (2, 2)
        assert convs["layer4.1.conv2"].dilation == (4, 4)
        assert convs["layer4.1.conv2"].padding == (4, 4)
    assert authors["layer3.0.conv1"].dilation == (2, 2)
    assert authors["layer4.0.conv1"].dilation == (4, 4)
    assert deeplab["layer3.0.conv1"].dilation == (1, 1)
    assert deeplab["layer4.0.conv1"].dilation == (2, 2)


def test_alexnet_output_stride_32_is_the_authors_32x_trunk() -> None:
    trunk, _ = build_backbone("alexnet", fc_channels=16, output_stride=32)
    assert trunk.output_stride == 32
    assert trunk.conv1[0].stride == (4, 4) and trunk.pool5.stride == 2
    with torch.no_grad():
        assert trunk.eval()(torch.randn(1, 3, 96, 128)).shape == (1, 16, 3, 4)
    eight, _ = build_backbone("alexnet", fc_channels=16)
    assert eight.output_stride == 8
    assert eight.conv1[0].stride == (2, 2) and eight.pool5.stride == 1
    # Same layers, same parameters: only strides differ.
    assert [p.shape for p in trunk.parameters()] == [p.shape for p in eight.parameters()]


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
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("alexnet", output_stride=16)
    with pytest.raises(ValueError, match="dilation_layout"):
        build_backbone("resnet50", dilation_layout="multigrid")
