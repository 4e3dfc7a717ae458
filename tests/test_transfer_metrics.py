"""Transfer metrics against hand-computed confusion matrices: mIoU accumulated over a validation
epoch (PASCAL VOC style: one confusion matrix, not a mean of per-batch scores) and linear-probe
top-1 (hits over all samples, not a mean of per-batch accuracies)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from models import finetune


def _epoch(module: pl.LightningModule, batches: list) -> None:
    module.trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False)
    module.log = lambda *args, **kwargs: None  # no loop to log into
    module.on_validation_epoch_start()
    for index, batch in enumerate(batches):
        module.validation_step(batch, index)
    module.on_validation_epoch_end()


def test_segmentation_miou_over_an_epoch_by_hand() -> None:
    """Two batches, 3 classes, 255 ignored. (ground truth, prediction) pairs:
    batch 1: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (255,·) (1,1); batch 2: (0,0) (1,1) (2,1) (2,2).
    Confusion (rows truth): [[2,1,0],[0,4,0],[1,1,2]] -> IoU 2/4, 4/6, 2/4 -> mIoU 5/9.
    (The mean of the two per-batch mIoUs would be 0.597.)"""
    labels = [torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]]), torch.tensor([[[0, 1], [2, 2]]])]
    preds = [torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 1]]]), torch.tensor([[[0, 1], [1, 2]]])]
    trunk, channels = finetune.build_trunk("alexnet", None, {"fc_channels": 4})
    module = finetune.SegmentationModule(trunk, channels, num_classes=3, arch="alexnet")
    pairs = zip(labels, preds, strict=True)
    logits = {id(b): F.one_hot(p, 3).permute(0, 3, 1, 2).float() for b, p in pairs}
    batches = [{"image": b, "label": b} for b in labels]
    module.forward = lambda image: logits[id(image)]
    _epoch(module, batches)
    assert module.val_miou == pytest.approx(5 / 9, abs=1e-12)
    expected = torch.tensor([[2, 1, 0], [0, 4, 0], [1, 1, 2]])
    assert torch.equal(module._confusion.cpu(), expected)


def test_probe_top1_over_an_epoch_by_hand() -> None:
    """Scores = W·x with W rows (1,0), (0,1), (-1,-1). Batch 1: (2,0)->0 ✓, (0,3)->1 ✓,
    (-1,-1)->2 ✓, (1,0.5)->0 ✗ (label 1); batch 2: (0,1)->1 ✗ (label 2), (3,1)->0 ✓.
    4 hits of 6 -> 2/3 (the mean of per-batch accuracies would be 0.625)."""
    module = finetune.LinearProbeModule(torch.zeros(2), torch.ones(2), num_classes=3)
    with torch.no_grad():
        module.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        module.linear.bias.zero_()
    batches = [
        (torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0], [1.0, 0.5]]), torch.tensor([0, 1, 2, 1])),
        (torch.tensor([[0.0, 1.0], [3.0, 1.0]]), torch.tensor([2, 0])),
    ]  # fmt: skip
    _epoch(module, batches)
    assert module.val_top1 == pytest.approx(2 / 3, abs=1e-12)
