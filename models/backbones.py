"""Image-encoder trunks for motion-based pretraining (output stride 8, or 32 for AlexNet).

CMP (Zhan et al. 2019, Sec. 3.1 and App. A) keeps spatial structure by running the image encoder
at a total stride of 8: ResNet-50 with the strides of "conv4_x" / "conv5_x" (torchvision
``layer3`` / ``layer4``) replaced by dilations 2 and 4. ``dilation_layout`` says which 3x3 convs
get them:

* ``"authors"`` (default; the CMP authors' code): every ``conv2`` of layer3 has dilation 2 and
  every ``conv2`` of layer4 dilation 4, block 0 included (its former stride-2 conv too).
* ``"deeplab"`` (torchvision's ``replace_stride_with_dilation``): block 0 of each layer keeps the
  previous dilation (layer3.0 1, layer4.0 2), the later blocks get the new one.

The AlexNet variant is the BatchNorm, fully-convolutional AlexNet of CMP's AlexNet experiments.
Their released AlexNet configs all run it at output stride 32 (``alexnet_fcn_32x``, conv1 stride 4,
pool5 stride 2) with the 32x sparse encoder; ``output_stride=8`` is their 8x variant (conv1 stride
2, pool5 stride 1), the one this module's table shows. Pathak et al. 2017 and CPFS (Mahendran et
al. 2018) use the stride-32 AlexNet as well.

Every trunk maps an image ``(B, 3, H, W)`` to a feature map ``(B, C, H/s, W/s)`` with ``s`` its
``output_stride`` attribute (8, or 32 for ``alexnet`` with ``output_stride=32``); H and W must be
multiples of ``s``. The ResNet trunks keep torchvision's parameter names, so ``export_trunk_state_dict`` gives a
state dict that loads into ``torchvision.models.resnet50()`` / ``resnet18()`` with only ``fc.*``
missing; that file is what the downstream benchmarks fine-tune.

Layer sizes of ``AlexNetFCN`` (stride 8 variant of the CMP authors' AlexNet-BN FCN):

=========  ==========================  =======  ========  ======
layer      op                          out ch   stride    total
=========  ==========================  =======  ========  ======
conv1      conv 11x11 pad 5, BN, ReLU  96       2         2
pool1      max 3x3 pad 1               96       2         4
conv2      conv 5x5 pad 2, BN, ReLU    256      1         4
pool2      max 3x3 pad 1               256      2         8
conv3      conv 3x3 pad 1, BN, ReLU    384      1         8
conv4      conv 3x3 pad 1, BN, ReLU    384      1         8
conv5      conv 3x3 pad 1, BN, ReLU    256      1         8
pool5      max 3x3 pad 1               256      1         8
fc6        conv 3x3 pad 1, BN, ReLU,   4096     1         8
           dropout 0.5
fc7        conv 1x1, BN, ReLU,         4096     1         8
           dropout 0.5
=========  ==========================  =======  ========  ======

(The classic AlexNet has conv1 stride 4 and pool5 stride 2, i.e. stride 32 — CMP's released AlexNet
configs; the 8x variant trades them for stride 2 / 1. ``fc_channels`` shrinks fc6/fc7 for
CPU-sized runs.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

__all__ = [
    "AlexNetFCN",
    "BACKBONES",
    "ResNetTrunk",
    "alexnet_fcn",
    "build_backbone",
    "export_trunk_state_dict",
    "resnet18_os8",
    "resnet50_os8",
    "xavier_init_",
]

OUTPUT_STRIDE = 8
DILATION_LAYOUTS = ("authors", "deeplab")


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform conv/linear weights, zero biases, BatchNorm to identity.

    The project's initialisation of new layers; the CMP authors' whole-model init is
    ``models.cmp.authors_init_``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without ``avgpool`` and ``fc``: image -> stride-8 feature map.

    The children keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ...), so the state dict
    keys are exactly those of ``torchvision.models.resnet*()`` minus ``fc.*``.
    """

    output_stride = OUTPUT_STRIDE

    def __init__(self, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _check_layout(dilation_layout: str) -> None:
    if dilation_layout not in DILATION_LAYOUTS:
        raise ValueError(
            f"dilation_layout must be one of {DILATION_LAYOUTS}, got {dilation_layout!r}"
        )


def _dilated_copy(conv: nn.Conv2d, dilation: int) -> nn.Conv2d:
    """The same conv (same weights) at stride 1; 3x3 kernels get ``dilation`` and matching padding."""
    k = conv.kernel_size[0]
    dil = dilation if k > 1 else 1
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=1,
        padding=dil * (k // 2),
        dilation=dil,
        bias=conv.bias is not None,
    )
    new.load_state_dict(conv.state_dict())
    return new


def _dilate_layer(layer: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Turn a strided ResNet layer (Bottleneck or BasicBlock) into a dilated one, in place.

    Every 3x3 conv of the layer gets ``dilation`` at stride 1, except the first block's formerly
    strided conv, which gets ``previous_dilation`` (pass ``dilation`` for the authors' layout);
    the downsample 1x1 loses its stride. Parameters are unchanged.
    """
    for index, block in enumerate(layer):
        first = previous_dilation if index == 0 else dilation
        if isinstance(block, torchvision.models.resnet.Bottleneck):
            block.conv2 = _dilated_copy(block.conv2, first)
        else:  # BasicBlock: the stride sits on conv1 (torchvision refuses dilation > 1 there)
            block.conv1 = _dilated_copy(block.conv1, first)
            block.conv2 = _dilated_copy(block.conv2, dilation)
        if block.downsample is not None:
            block.downsample[0] = _dilated_copy(block.downsample[0], 1)
        block.stride = 1


def _resnet_os8(
    resnet: torchvision.models.ResNet, dilation_layout: str
) -> torchvision.models.ResNet:
    """layer3 at dilation 2, layer4 at dilation 4, both at stride 1 (``dilation_layout``)."""
    _check_layout(dilation_layout)
    authors = dilation_layout == "authors"
    _dilate_layer(resnet.layer3, previous_dilation=2 if authors else 1, dilation=2)
    _dilate_layer(resnet.layer4, previous_dilation=4 if authors else 2, dilation=4)
    return resnet


def resnet50_os8(dilation_layout: str = "authors") -> tuple[ResNetTrunk, int]:
    """ResNet-50, layer3 dilation 2 and layer4 dilation 4 at stride 1 (CMP App. A); 2048 channels.

    ``dilation_layout``: ``"authors"`` (every layer3/4 ``conv2``, block 0 included) or
    ``"deeplab"`` (torchvision's ``replace_stride_with_dilation``); see the module docstring.
    """
    resnet = torchvision.models.resnet50(weights=None)
    return ResNetTrunk(_resnet_os8(resnet, dilation_layout)), 2048


def resnet18_os8(dilation_layout: str = "authors") -> tuple[ResNetTrunk, int]:
    """ResNet-18 dilated like ``resnet50_os8`` (layer3 d=2, layer4 d=4, stride 1); 512 channels.

    ``"authors"`` dilates every 3x3 conv of the layer; ``"deeplab"`` keeps the previous dilation
    on block 0's formerly strided conv.
    """
    resnet = torchvision.models.resnet18(weights=None)
    return ResNetTrunk(_resnet_os8(resnet, dilation_layout)), 512


def _conv_bn_relu(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


ALEXNET_STRIDES = {8: (2, 1), 32: (4, 2)}  # output stride -> (conv1 stride, pool5 stride)


class AlexNetFCN(nn.Module):
    """AlexNet with BatchNorm as a fully-convolutional trunk at ``output_stride`` 8 or 32 (layer
    table in the module docstring). Returns the fc7 map with ``fc_channels`` channels."""

    def __init__(
        self, fc_channels: int = 4096, dropout: float = 0.5, output_stride: int = OUTPUT_STRIDE
    ) -> None:
        super().__init__()
        if fc_channels < 1:
            raise ValueError(f"fc_channels must be >= 1, got {fc_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if output_stride not in ALEXNET_STRIDES:
            raise ValueError(f"output_stride must be 8 or 32, got {output_stride!r}")
        conv1_stride, pool5_stride = ALEXNET_STRIDES[output_stride]
        self.output_stride = output_stride
        self.conv1 = _conv_bn_relu(3, 96, 11, stride=conv1_stride, padding=5)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _conv_bn_relu(96, 256, 5, padding=2)
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv3 = _conv_bn_relu(256, 384, 3, padding=1)
        self.conv4 = _conv_bn_relu(384, 384, 3, padding=1)
        self.conv5 = _conv_bn_relu(384, 256, 3, padding=1)
        self.pool5 = nn.MaxPool2d(3, stride=pool5_stride, padding=1)
        self.fc6 = _conv_bn_relu(256, fc_channels, 3, padding=1)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = _conv_bn_relu(fc_channels, fc_channels, 1)
        self.drop7 = nn.Dropout(dropout)
        xavier_init_(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(image))))
        x = self.pool5(self.conv5(self.conv4(self.conv3(x))))
        return self.drop7(self.fc7(self.drop6(self.fc6(x))))


def alexnet_fcn(
    fc_channels: int = 4096, dropout: float = 0.5, output_stride: int = OUTPUT_STRIDE
) -> tuple[AlexNetFCN, int]:
    """The AlexNet-BN FCN trunk (output stride 8 or 32) and its channel count (``fc_channels``)."""
    model = AlexNetFCN(fc_channels=fc_channels, dropout=dropout, output_stride=output_stride)
    return model, fc_channels


BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "resnet50": resnet50_os8,
    "resnet18": resnet18_os8,
    "alexnet": alexnet_fcn,
}


def build_backbone(name: str, **kwargs: object) -> tuple[nn.Module, int]:
    """Trunk returning its feature map (stride ``trunk.output_stride``) and its channel count.

    ``name`` is one of ``BACKBONES`` (resnet50, resnet18, alexnet); ``kwargs`` go to the builder
    (ResNets: ``dilation_layout``; ``alexnet``: ``fc_channels``, ``dropout``, ``output_stride``).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def export_trunk_state_dict(trunk: nn.Module) -> dict[str, torch.Tensor]:
    """Trunk weights as CPU tensors, with wrapper prefixes (DDP ``module.``, ``torch.compile``'s
    ``_orig_mod.``) removed; for a ResNet trunk the keys load into torchvision's ResNet with only
    ``fc.*`` missing."""
    exported: dict[str, torch.Tensor] = {}
    for key, value in trunk.state_dict().items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        exported[key] = value.detach().to("cpu", copy=True)
    return exported
