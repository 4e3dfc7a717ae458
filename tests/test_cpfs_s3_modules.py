"""CPFS and S3 LightningModules: a few optimiser steps on the layered synthetic clips."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from models.methods.cpfs import CPFSModule, gather_pixels
from models.methods.s3 import S3Module
from models.methods.synthetic_layers import SyntheticLayersDataModule


def _fit(module: pl.LightningModule, view: str, tmp_path, steps: int = 3) -> dict[str, float]:
    dm = SyntheticLayersDataModule(
        view=view, train_clips=1, val_clips=1, frames_per_clip=4, size=(32, 32), batch_size=2
    )
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
    )
    trainer.fit(module, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_gather_pixels() -> None:
    field = torch.arange(12.0).reshape(1, 1, 3, 4).expand(1, 2, 3, 4).clone()
    field[:, 1] *= 10
    out = gather_pixels(field, torch.tensor([[0, 5, 11]]))
    assert out.tolist() == [[[0.0, 0.0], [5.0, 50.0], [11.0, 110.0]]]


def test_cpfs_module_trains_and_learns_sigma(tmp_path) -> None:
    torch.manual_seed(0)
    module = CPFSModule(
        backbone="alexnet", backbone_kwargs={"fc_channels": 32}, hidden=32, num_pixels=64
    )
    before = module.log_sigma2.item()
    metrics = _fit(module, "cpfs", tmp_path)
    assert module.log_sigma2.item() != before
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["weight_decay"] == 0.0 and opt.defaults["lr"] == 1e-4


def test_s3_module_trains_with_both_losses(tmp_path) -> None:
    torch.manual_seed(0)
    module = S3Module(
        backbone="alexnet",
        backbone_kwargs={"fc_channels": 32},
        num_segments=3,
        losses=["affine", "entropy"],
    )
    metrics = _fit(module, "s3", tmp_path)
    for key in ("val/loss", "val/affine", "val/entropy"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    segments = module(torch.randn(1, 3, 32, 32))
    assert segments.shape == (1, 3, 32, 32)
    assert torch.allclose(segments.sum(1), torch.ones(1, 32, 32), atol=1e-5)


def test_modules_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="loss must be"):
        CPFSModule(backbone="alexnet", backbone_kwargs={"fc_channels": 8}, loss="l2")
    with pytest.raises(ValueError, match="subset"):
        S3Module(backbone="alexnet", backbone_kwargs={"fc_channels": 8}, losses=["l2"])
    with pytest.raises(ValueError, match="num_segments"):
        S3Module(backbone="alexnet", backbone_kwargs={"fc_channels": 8}, num_segments=1)


@pytest.mark.parametrize("method", ["cpfs", "s3"])
def test_entry_point_trains_resumes_stops_early_and_exports(method: str, tmp_path, caplog) -> None:
    import logging

    import torchvision

    from models.train import fit, load_run_config

    out = tmp_path / method
    tiny = [
        f"method={method}",
        f"output_dir={out}",
        "data.factory=models.synthetic.SyntheticDataModule",
        "data.kwargs={num_train: 8, num_val: 4, size: 32, batch_size: 4}",
        "model.backbone=resnet18",
        "trainer.log_every_n_steps=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.val_check_interval=2",
        "trainer.checkpoint_every_n_steps=2",
        "trainer.early_stopping_patience=50",
        "figures.num_samples=2",
        'optim={"lr": 0.0001, "eps": 1e-08}',  # as the rules pass it (JSON)
    ]
    if method == "cpfs":
        tiny += ["model.num_pixels=64", "model.hidden=16"]
    # training on past a completed run's max_steps needs its full resume state
    fit(load_run_config(None, [*tiny, "trainer.max_steps=2", "trainer.final_checkpoint=full"]))
    with caplog.at_level(logging.INFO):
        fit(load_run_config(None, [*tiny, "trainer.max_steps=4"]))
    assert "training starts at global step 2" in caplog.text
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    # the export is the lowest-val/loss checkpoint's trunk (early stopping keeps the best)
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    state = torch.load(out / "backbone.pth", weights_only=True)
    result = torchvision.models.resnet18().load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    for key, value in state.items():
        assert torch.equal(best[f"model.backbone.{key}"], value), key
    for name in ("loss_curves.png", "val_predictions.png"):
        assert (out / "figures" / name).stat().st_size > 1000
