"""CPFS pretraining as a LightningModule (Mahendran et al. 2018, Sec. 3-4.3).

A hypercolumn embedder (``models.hypercolumn``) over a trunk (``models.backbones``) maps P
uniformly sampled pixels per image to unit D-dimensional embeddings; the loss
(``models.methods.cpfs.cpfs_loss``: CE, CE-rev or KTA) matches their kernel to the Gaussian kernel
of the log-normalised flow at the same pixels, with σ learned (parametrised as log σ²). Adam,
lr 1e-4, β = (0.9, 0.999), ε = 1e-8, no weight decay (Sec. 4.3). The paper stops early on the
validation loss because AlexNet overfits; ``val/loss`` is logged for that (the entry point's
early-stopping callback monitors it).

Batch contract (the ``cpfs`` view of ``models.data``): ``image`` float32 (B, 3, H, W)
ImageNet-normalised, ``flow`` float32 (B, 2, H, W) log-normalised with eq. (6) (M = 56),
``valid`` optional bool (B, 1, H, W): invalid pixels are never sampled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from models.backbones import build_backbone
from models.hypercolumn import DEFAULT_TAPS, HypercolumnEmbedder
from models.methods.cpfs import CPFS_LOSSES, cpfs_loss, sample_pixels

__all__ = ["CPFSModule", "gather_pixels"]


def gather_pixels(field: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of ``field`` (B, C, H, W) at flat pixel indices (B, P) -> (B, P, C)."""
    flat = field.flatten(2)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


class CPFSModule(pl.LightningModule):
    """Cross pixel flow similarity: batches of the ``cpfs`` view -> loss; logs σ²."""

    def __init__(
        self,
        backbone: str = "alexnet",
        backbone_kwargs: dict | None = None,
        taps: Sequence[str] | None = None,
        embed_dim: int = 16,
        hidden: int = 512,
        num_pixels: int = 512,
        loss: str = "ce",
        init_sigma2: float = 0.01,
        lr: float = 1.0e-4,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1.0e-8,
        weight_decay: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if loss not in CPFS_LOSSES:
            raise ValueError(f"loss must be one of {CPFS_LOSSES}, got {loss!r}")
        if num_pixels < 2:
            raise ValueError(f"num_pixels must be >= 2, got {num_pixels}")
        if not init_sigma2 > 0:
            raise ValueError(f"init_sigma2 must be > 0, got {init_sigma2}")
        if taps is None and backbone not in DEFAULT_TAPS:
            raise ValueError(f"no default taps for backbone {backbone!r}; set model.taps")
        self.save_hyperparameters()
        trunk, _ = build_backbone(backbone, **dict(backbone_kwargs or {}))
        self.model = HypercolumnEmbedder(
            trunk, list(taps or DEFAULT_TAPS[backbone]), embed_dim=embed_dim, hidden=hidden
        )
        self.log_sigma2 = torch.nn.Parameter(torch.tensor(math.log(init_sigma2)))
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @property
    def sigma(self) -> torch.Tensor:
        return (0.5 * self.log_sigma2).exp()

    def forward(self, image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.model(image, index)

    def _loss(
        self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        missing = {"image", "flow"} - set(batch)
        if missing:
            raise ValueError(f"batch lacks {sorted(missing)}")
        image, flow = batch["image"], batch["flow"]
        valid = batch.get("valid")
        if valid is None:
            valid = torch.ones_like(flow[:, :1], dtype=torch.bool)
        mask = valid.flatten(1).cpu()
        index = sample_pixels(mask, self.hparams.num_pixels, generator).to(image.device)
        embeddings = self(image, index).float()
        targets = gather_pixels(flow.float(), index)
        return cpfs_loss(embeddings, targets, self.sigma.float(), loss=self.hparams.loss)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        batch_size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/sigma2", self.log_sigma2.exp().detach(), batch_size=batch_size)
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        # The same pixels at every validation: the early-stopping signal is not sampling noise.
        loss = self._loss(batch, torch.Generator().manual_seed(batch_idx))
        self.log(
            "val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["image"].shape[0]
        )

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return torch.optim.Adam(
            self.parameters(),
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.eps,
            weight_decay=hp.weight_decay,
        )
