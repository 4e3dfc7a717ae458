"""Weight-scale control for transfer benchmarks: a pretrained trunk rescaled to a fresh init's norms.

Every convolution of a torchvision ResNet feeds a BatchNorm, so the network's output does not depend
on the scale of that convolution's weight, but the step SGD takes in it does: the effective learning
rate of a scale-invariant weight is lr / ||w||² (van Laarhoven 2017, "L2 regularization versus batch
and weight normalization"; Hoffer et al. 2018, "Norm matters"). A pretraining run that shrinks the
trunk's weights (CMP's authors' init, Xavier gain 0.02) or grows them (Adam at a large rate)
therefore fine-tunes differently at the benchmark's fixed learning rate whatever its features are.

``match_init_norms`` rescales each such convolution to the norm of the same tensor in a fresh
torchvision init, and the following BatchNorm's running statistics with it, which keeps the
network's function (train and eval mode, up to BatchNorm's ε). A benchmark initialisation from the
rescaled file (``python -m models.norm_match``) then separates "the features" from "their scale".
Convolutions not followed by a BatchNorm are not scale-invariant and are left alone (a trunk
with none is refused).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from models.backbones import build_backbone, export_trunk_state_dict
from models.finetune import build_trunk
from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)


def conv_bn_pairs(trunk: nn.Module) -> list[tuple[str, str]]:
    """(conv, batchnorm) module names where the BatchNorm is the next layer after the conv.

    Registration order is execution order in torchvision's ResNets (conv1, bn1, …, downsample.0,
    downsample.1); a conv followed by another conv or by nothing is left out.
    """
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for name, module in trunk.named_modules():
        if isinstance(module, nn.Conv2d):
            pending = name
        elif isinstance(module, nn.BatchNorm2d) and pending is not None:
            if module.num_features == trunk.get_submodule(pending).out_channels:
                pairs.append((pending, name))
            pending = None
        elif isinstance(module, nn.Linear):
            pending = None
    return pairs


@torch.no_grad()
def match_init_norms(trunk: nn.Module, reference: nn.Module) -> dict[str, float]:
    """Rescale ``trunk``'s BN-followed convs to ``reference``'s weight norms (in place).

    Returns the factor applied per conv. The BatchNorm after each conv gets its running mean
    scaled by the same factor and its running variance by its square, so the function is kept.
    """
    pairs = conv_bn_pairs(trunk)
    if not pairs:
        raise ValueError("no convolution followed by a BatchNorm: the weight scale is not free")
    factors: dict[str, float] = {}
    for conv_name, bn_name in pairs:
        conv = trunk.get_submodule(conv_name)
        target = reference.get_submodule(conv_name).weight.norm()
        norm = conv.weight.norm()
        if norm == 0:
            raise ValueError(f"{conv_name}: all-zero weight, no scale to match")
        scale = float(target / norm)
        conv.weight.mul_(scale)
        if conv.bias is not None:
            conv.bias.mul_(scale)
        bn = trunk.get_submodule(bn_name)
        if bn.running_mean is not None:
            bn.running_mean.mul_(scale)
            bn.running_var.mul_(scale * scale)
        factors[conv_name] = scale
    return factors


def norm_matched_copy(
    arch: str, weights: str | Path, out: str | Path, seed: int = 0
) -> dict[str, float]:
    """Write ``weights`` rescaled to the norms of a fresh ``arch`` trunk (seeded) to ``out``."""
    trunk, _ = build_trunk(arch, weights)
    torch.manual_seed(seed)
    reference, _ = build_backbone(arch)
    factors = match_init_norms(trunk, reference)
    with atomic_path(out) as tmp:
        torch.save(export_trunk_state_dict(trunk), tmp)
    return factors


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a backbone.pth (or torchvision-style trunk state dict)")
    parser.add_argument("out", help="where the rescaled copy goes")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reference init")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    factors = norm_matched_copy(args.backbone, args.weights, args.out, args.seed)
    values = sorted(factors.values())
    log.info(
        "%s: %d convs rescaled, factor min %.3g / median %.3g / max %.3g -> %s",
        args.weights,
        len(values),
        values[0],
        values[len(values) // 2],
        values[-1],
        args.out,
    )


if __name__ == "__main__":
    main()
