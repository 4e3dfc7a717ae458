"""CMP pretraining method (Zhan et al. 2019): the LightningModule, its metric and its figures.

``CMPModule`` holds the science of Sec. 3.1 (loss) and Sec. 4 (training schedule):
quantised-flow cross-entropy (``models.cmp.cmp_loss``), end-point error of the expectation flow as
the metric, SGD lr 0.1 / momentum 0.9 / weight decay 1e-4, learning rate ×0.1 at 2/3.5 and 3/3.5
of the iterations (stepped per iteration; ``models.methods.base``). The model and loss live in
``models/cmp.py``.

Batch contract (the ``cmp`` view of ``models.data``, as a dict of tensors):

============  ======================  =====================================================
key           dtype / shape           meaning
============  ======================  =====================================================
``image``     float32 (B, 3, H, W)    frame t, RGB, ``(x/255 - mean) / std`` with ImageNet
                                      mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
``flow``      float32 (B, 2, H, W)    target forward flow t→t+gap, (dx, dy) in px of ``image``
``sparse``    float32 (B, 4, H, W)    guidance: dx, dy at the guidance points (0 elsewhere),
                                      then the point mask (1 at points) twice
``valid``     bool (B, 1, H, W)       optional; pixels left out of loss and metric when False
============  ======================  =====================================================

H and W must be multiples of the encoder's output stride (8; 32 for the stride-32 AlexNet).

Figures: per validation sample the frame, its guidance arrows, the target flow and the predicted
(softmax-expectation) flow, both colour-coded on the Middlebury wheel with one FIXED max
magnitude so panels compare across samples and runs (REFERENCE.md, "Flow formats": torchvision's
per-batch normalisation hides magnitude differences).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from models.baselines import baseline_epes
from models.cmp import cmp_loss, cmp_model, predict_flow
from models.figures import save_figure, to_rgb, validation_batches
from models.methods.base import PretrainMethod, masked_mean
from pipeline.viz import draw_guidance_arrows, flow_to_color

__all__ = [
    "CMPModule",
    "collect_cmp_samples",
    "endpoint_error",
    "plot_cmp_panels",
    "write_cmp_panels",
]


def endpoint_error(
    pred_flow: torch.Tensor, target_flow: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean end-point error ||pred - target||₂ over pixels (valid ones when a mask is given)."""
    if pred_flow.shape != target_flow.shape:
        raise ValueError(f"shapes differ: {tuple(pred_flow.shape)} vs {tuple(target_flow.shape)}")
    epe = (pred_flow.float() - target_flow.float()).square().sum(dim=1).sqrt()
    return masked_mean(epe, valid)


class CMPModule(PretrainMethod):
    """CMP pretraining: batches of the contract in the module docstring → loss, EPE."""

    BATCH_KEYS: ClassVar[tuple[str, ...]] = ("image", "flow", "sparse")
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {
            "backbone": "resnet50",
            "backbone_kwargs": {},
            "num_bins": 99,
            "max_flow": 50.0,
            "image_channels": 256,
            "sparse_channels": 16,
            "decoder_strides": [1, 2, 4],
            "decoder_channels": 128,
            "init": "authors",
            "dilation_layout": "authors",
            "output_stride": 8,
            "sparse_strides": None,
        },
        "optim": {
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 1.0e-4,
            "lr_milestones": [2 / 3.5, 3 / 3.5],
            "lr_gamma": 0.1,
        },
        "figures": {"max_magnitude": 20.0},
    }
    CURVE: ClassVar[dict[str, str]] = {
        "metric": "val/epe",
        "metric_label": "validation EPE (px)",
        "loss_label": "CE(x) + CE(y)",
        "title": "CMP pretraining",
    }

    def __init__(
        self,
        backbone: str = "resnet50",
        backbone_kwargs: dict | None = None,
        num_bins: int = 99,
        max_flow: float = 50.0,
        image_channels: int = 256,
        sparse_channels: int = 16,
        decoder_strides: Sequence[int] = (1, 2, 4),
        decoder_channels: int = 128,
        init: str = "authors",
        dilation_layout: str = "authors",
        output_stride: int = 8,
        sparse_strides: Sequence[int] | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1.0e-4,
        lr_milestones: Sequence[float] = (2 / 3.5, 3 / 3.5),
        lr_gamma: float = 0.1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if any(not 0.0 < m <= 1.0 for m in lr_milestones):
            raise ValueError(
                f"lr_milestones are fractions of max_steps in (0, 1], got {lr_milestones}"
            )
        self.save_hyperparameters()
        self.model = cmp_model(
            backbone=backbone,
            num_bins=num_bins,
            max_flow=max_flow,
            image_channels=image_channels,
            sparse_channels=sparse_channels,
            decoder_strides=tuple(decoder_strides),
            decoder_channels=decoder_channels,
            backbone_kwargs=backbone_kwargs,
            init=init,
            dilation_layout=dilation_layout,
            output_stride=output_stride,
            sparse_strides=None if sparse_strides is None else tuple(sparse_strides),
        )
        self.use_channels_last(channels_last)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    def forward(self, image: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.model(self.to_memory_format(image), self.to_memory_format(sparse))

    def compute_loss(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self(batch["image"], batch["sparse"])
        loss = cmp_loss(
            logits,
            batch["flow"],
            valid=batch.get("valid"),
            num_bins=self.model.num_bins,
            max_flow=self.model.max_flow,
        )
        return loss, {"logits": logits}

    def validation_metrics(
        self, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        flow = predict_flow(
            outputs["logits"], batch["flow"].shape[-2:], self.model.num_bins, self.model.max_flow
        )
        metrics = {"epe": endpoint_error(flow, batch["flow"], batch.get("valid"))}
        # what the guidance alone gives, on the same pixels: CMP must beat the nearest fill
        # to count as propagating motion (models.baselines)
        baselines = baseline_epes(batch["flow"], batch["sparse"], batch.get("valid"))
        for name, value in baselines.items():
            metrics[f"baseline_{name}"] = torch.as_tensor(value, device=flow.device)
        return metrics


# --------------------------------------------------------------------------- figures


def collect_cmp_samples(
    module: CMPModule, datamodule: pl.LightningDataModule, num_samples: int = 4
) -> list[dict[str, np.ndarray]]:
    """Run the model on the first ``num_samples`` validation samples.

    Returns dicts with ``image`` (H, W, 3) uint8, ``points_yx`` (P, 2), ``vectors_dxdy`` (P, 2),
    ``target`` and ``pred`` flow (H, W, 2).
    """
    model = module.model
    samples: list[dict[str, np.ndarray]] = []
    for batch in validation_batches(module, datamodule, num_samples):
        image = batch["image"].to(torch.float32)
        sparse = batch["sparse"].to(torch.float32)
        logits = model(image, sparse)
        pred = predict_flow(logits, image.shape[-2:], model.num_bins, model.max_flow)
        for i in range(image.shape[0]):
            mask = sparse[i, 2].cpu().numpy() > 0
            ys, xs = np.nonzero(mask)
            vectors = sparse[i, 0:2].cpu().numpy()[:, ys, xs].T
            samples.append(
                {
                    "image": to_rgb(image[i].cpu().numpy()),
                    "points_yx": np.stack([ys, xs], axis=1),
                    "vectors_dxdy": vectors.astype(np.float32),
                    "target": batch["flow"][i].float().cpu().numpy().transpose(1, 2, 0),
                    "pred": pred[i].float().cpu().numpy().transpose(1, 2, 0),
                }
            )
    return samples


def plot_cmp_panels(
    samples: Sequence[Mapping[str, np.ndarray]], out_path: str | Path, max_magnitude: float = 20.0
) -> Path:
    """One row per sample: frame | guidance arrows | target flow | predicted flow."""
    if not samples:
        raise ValueError("no samples to plot")
    if not max_magnitude > 0:
        raise ValueError(f"max_magnitude must be > 0, got {max_magnitude}")
    titles = ("frame", "guidance", "target flow", f"predicted flow (max {max_magnitude:g} px)")
    fig, axes = plt.subplots(len(samples), 4, figsize=(12, 3 * len(samples)), squeeze=False)
    for row, sample in zip(axes, samples, strict=True):
        guided = draw_guidance_arrows(
            sample["image"], sample["points_yx"], sample["vectors_dxdy"], color=(255, 255, 0)
        )
        panels = (
            sample["image"],
            guided,
            flow_to_color(sample["target"], max_magnitude),
            flow_to_color(sample["pred"], max_magnitude),
        )
        for axis, panel, title in zip(row, panels, titles, strict=True):
            axis.imshow(panel)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    return save_figure(fig, out_path)


def write_cmp_panels(
    module: CMPModule,
    datamodule: pl.LightningDataModule,
    out_path: Path,
    num_samples: int = 4,
    max_magnitude: float = 20.0,
) -> Path | None:
    """The validation panels of a CMP run (None when there is no validation data)."""
    samples = collect_cmp_samples(module, datamodule, num_samples)
    return plot_cmp_panels(samples, out_path, max_magnitude) if samples else None
