"""The contract every pretraining method meets, and the shared parts of its LightningModule.

A method (``models/methods/<name>.py``) subclasses :class:`PretrainMethod` and supplies the
science only:

* ``BATCH_KEYS``: the keys its batches must carry (dict of tensors, as its data view yields them
  after ``models.data.to_model_batch``);
* ``DEFAULTS``: its run-config sections ``model`` / ``optim`` / ``figures`` with every default
  (``models.train`` merges them under the generic keys, so a typo is an error);
* ``compute_loss(batch) -> (loss, outputs)``: the training objective and whatever the metrics and
  figures need from the forward pass;
* ``validation_metrics(batch, outputs) -> {name: scalar}``: logged as ``val/<name>`` next to
  ``val/loss``; baselines (trivial predictors) belong here too, so every number has a reference;
* ``backbone``: the trunk whose weights ``models.train`` exports (torchvision key names);
* ``CURVE``: which logged metric the loss-curve figure shows beside the losses.

A method is registered in ``models/methods/__init__.py`` with its data view and its validation
figure (``/work/notes/REFACTOR.md`` has the whole recipe).

What is shared lives here: input checking, logging, the channels-last switch, SGD with momentum
(CMP Sec. 4) or Adam (Mahendran et al. Sec. 4.1) and a step schedule at fractions of
``max_steps`` (stepped per iteration), pooled validation counts, and the "training starts at
global step N" line the resume test reads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import nn

__all__ = ["PretrainMethod", "masked_mean", "step_schedule_optimizer"]

log = logging.getLogger("models.train")


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-pixel ``values`` over the pixels where ``valid`` is True (all when None);
    ``valid`` is reshaped to ``values``' shape. No valid pixel gives 0, still with a graph."""
    if valid is None:
        return values.mean()
    weight = valid.reshape(values.shape).to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def step_schedule_optimizer(
    parameters: Any,
    *,
    total_steps: int,
    lr: float,
    weight_decay: float,
    lr_milestones: Sequence[float],
    lr_gamma: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    betas: Sequence[float] = (0.9, 0.999),
) -> dict[str, Any]:
    """SGD (with ``momentum``) or Adam (with ``betas``, eps 1e-8) + MultiStepLR at
    ``lr_milestones`` × ``total_steps`` (empty: constant lr), as Lightning's optimiser dict."""
    if any(not 0.0 < m <= 1.0 for m in lr_milestones):
        raise ValueError(f"lr_milestones are fractions of max_steps in (0, 1], got {lr_milestones}")
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            parameters, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    elif optimizer == "adam":
        beta1, beta2 = (float(b) for b in betas)
        opt = torch.optim.Adam(
            parameters, lr=lr, betas=(beta1, beta2), eps=1e-8, weight_decay=weight_decay
        )
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    milestones = sorted({max(1, round(m * total_steps)) for m in lr_milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=lr_gamma)
    return {
        "optimizer": opt,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
    }


class PretrainMethod(pl.LightningModule):
    """Base LightningModule of a pretraining method: dict batch in, loss out (module docstring).

    Subclasses call ``super().__init__()``, then ``self.save_hyperparameters()`` (the optimiser
    reads ``lr``, ``weight_decay``, ``lr_milestones``, ``lr_gamma`` and, when present,
    ``optimizer`` (sgd | adam), ``momentum``, ``betas`` from the hparams)
    and build ``self.model``; ``channels_last`` converts it on GPU runs.
    """

    BATCH_KEYS: ClassVar[tuple[str, ...]] = ("image",)
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {"model": {}, "optim": {}, "figures": {}}
    # Keyword arguments of ``models.figures.plot_loss_curves``: the metric on the right axis.
    CURVE: ClassVar[dict[str, str]] = {"metric": "val/loss", "metric_label": "validation loss"}

    @property
    def backbone(self) -> nn.Module:
        """The trunk exported as ``backbone.pth``."""
        raise NotImplementedError

    def compute_loss(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(scalar loss, outputs for the metrics) of one batch."""
        raise NotImplementedError

    def validation_metrics(
        self, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Named scalars logged as ``val/<name>`` (batch means, averaged over the epoch)."""
        return {}

    def validation_counts(
        self, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Named count tensors summed over the validation epoch (and over DDP processes), then
        handed to ``metrics_from_counts``: exact pooled metrics such as IoU or accuracy."""
        return {}

    def metrics_from_counts(self, counts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named scalars logged as ``val/<name>`` at the end of a validation epoch."""
        return {}

    # ------------------------------------------------------------------ shared machinery

    def use_channels_last(self, enabled: bool) -> None:
        self.channels_last = bool(enabled)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in channels-last layout when the run uses it (4-D tensors only)."""
        if getattr(self, "channels_last", False) and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def check_batch(self, batch: Mapping[str, torch.Tensor]) -> None:
        missing = set(self.BATCH_KEYS) - set(batch)
        if missing:
            raise ValueError(f"batch lacks {sorted(missing)}")

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.check_batch(batch)
        loss, _ = self.compute_loss(batch)
        batch_size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self.check_batch(batch)
        loss, outputs = self.compute_loss(batch)
        batch_size = batch["image"].shape[0]
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch_size)
        for name, value in self.validation_metrics(batch, outputs).items():
            self.log(f"val/{name}", value, sync_dist=True, batch_size=batch_size)
        for name, value in self.validation_counts(batch, outputs).items():
            total = self._val_counts.get(name)
            self._val_counts[name] = value.detach().double() + (0 if total is None else total)

    def on_validation_epoch_start(self) -> None:
        self._val_counts: dict[str, torch.Tensor] = {}

    def on_validation_epoch_end(self) -> None:
        counts = getattr(self, "_val_counts", {})
        if not counts:
            return
        reduce = self.trainer.strategy.reduce
        summed = {name: reduce(value, reduce_op="sum") for name, value in counts.items()}
        for name, value in self.metrics_from_counts(summed).items():
            self.log(f"val/{name}", torch.as_tensor(value, dtype=torch.float32))

    def on_train_start(self) -> None:
        # The resume test (and a person reading the log) checks where training picked up.
        if self.trainer.is_global_zero:
            log.info("training starts at global step %d", self.global_step)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = self.trainer.max_steps
        if total is None or total < 1:
            total = int(self.trainer.estimated_stepping_batches)
        return step_schedule_optimizer(
            self.parameters(),
            total_steps=total,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            lr_milestones=hp.lr_milestones,
            lr_gamma=hp.lr_gamma,
            optimizer=hp.get("optimizer", "sgd"),
            momentum=hp.get("momentum", 0.9),
            betas=hp.get("betas", (0.9, 0.999)),
        )
