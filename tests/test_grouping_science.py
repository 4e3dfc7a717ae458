"""The grouping losses' minimisers group the synthetic layers (Mahendran et al. 2018: S3 Sec. 3,
CPFS Sec. 3), checked without a network: free per-pixel segments / embeddings are optimised on
one synthetic frame (exact flow, two moving objects + background) and scored against its ground
truth layers with the metrics of ``benchmarks/bench_grouping_science.py``. The network runs (held-
out frames) are that script's; these are the small properties underneath them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.methods.cpfs import cpfs_loss
from models.methods.grouping_eval import best_match_iou, embedding_margin
from models.methods.s3 import affine_motion_loss, s3_loss
from models.methods.synthetic_layers import layer_samples

SIZE = (32, 32)


def _frame(view: str, seed: int = 205) -> dict[str, torch.Tensor]:
    return layer_samples(seed, view, frames=1, size=SIZE, objects=2)[0]


def test_affine_loss_is_zero_on_the_ground_truth_layers_only() -> None:
    sample = _frame("s3")
    flow, layers = sample["flow"][None].double(), sample["layers"]
    assert len(layers.unique()) == 3  # background + both objects visible
    truth = F.one_hot(layers, 4).permute(2, 0, 1)[None].double()  # L = layers + 1
    assert affine_motion_loss(truth, flow).item() < 1e-4  # the flow is affine per layer
    one = torch.zeros_like(truth)
    one[:, 0] = 1.0
    assert affine_motion_loss(one, flow).item() > 0.1
    merged = truth.clone()  # both objects in one segment: still a misfit
    merged[:, 1] += merged[:, 2]
    merged[:, 2] = 0.0
    assert affine_motion_loss(merged, flow).item() > 0.02


def test_free_segments_trained_with_the_affine_loss_recover_the_layers() -> None:
    torch.manual_seed(0)
    sample = _frame("s3")
    flow, layers = sample["flow"][None], sample["layers"]
    logits = (0.01 * torch.randn(1, 4, *SIZE)).requires_grad_()
    start = best_match_iou(logits.argmax(1)[0], layers).item()
    optimiser = torch.optim.Adam([logits], lr=0.1)
    # gradient descent from a random start can stop in a local minimum (a segment straddling two
    # layers): on 4 frames × 2 step sizes at 32², 300 steps ended above 0.85 in 4 of 8 runs
    for _ in range(100):
        loss = s3_loss(logits.softmax(1), flow, losses=("affine",))["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    iou = best_match_iou(logits.argmax(1)[0], layers).item()
    constant = best_match_iou(torch.zeros_like(layers), layers).item()
    assert iou > 0.8 and iou > start + 0.2 and iou > constant + 0.3, (start, iou, constant)


def test_free_embeddings_trained_with_cpfs_ce_separate_the_layers() -> None:
    torch.manual_seed(0)
    sample = _frame("cpfs")
    layers = sample["layers"]
    flow = sample["flow"].flatten(1).T[None]  # (1, P = H·W, 2), log-normalised (eq. 6)
    raw = torch.randn(1, SIZE[0] * SIZE[1], 16, requires_grad=True)
    optimiser = torch.optim.Adam([raw], lr=0.05)

    def margin() -> float:
        emb = F.normalize(raw.detach()[0], dim=-1).T.reshape(16, *SIZE)
        return embedding_margin(emb, layers).item()

    start = margin()
    for _ in range(60):
        loss = cpfs_loss(F.normalize(raw, dim=-1), flow, 0.1, "ce")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert abs(start) < 0.05
    assert margin() > 0.3, (start, margin())


@pytest.mark.parametrize("view", ["s3", "cpfs"])
def test_layer_samples_of_different_seeds_differ(view: str) -> None:
    # the science check's train / select / test splits are different seeds: different frames
    a, b = _frame(view, 100), _frame(view, 10_000)
    assert not torch.equal(a["image"], b["image"]) and not torch.equal(a["layers"], b["layers"])


def test_cosine_box_decays_the_lr_to_zero_over_the_step_budget() -> None:
    # benchmarks/bench_grouping_science.py --lr-schedule cosine: lr = base · ½(1 + cos(π p))
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_grouping_science.py"
    spec = importlib.util.spec_from_file_location("bench_grouping_science", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    optimiser = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    module = SimpleNamespace(hparams=SimpleNamespace(lr=2e-3))
    box = bench.CosineBox(minutes=60.0, max_steps=100)  # the step budget ends first
    lrs = []
    for step in (0, 50, 100, 150):
        trainer = SimpleNamespace(optimizers=[optimiser], global_step=step)
        box.on_train_batch_start(trainer, module, None, step)
        lrs.append(optimiser.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(2e-3, rel=1e-3)
    assert lrs[1] == pytest.approx(1e-3, rel=1e-2)
    assert lrs[2] == pytest.approx(0.0, abs=1e-9) and lrs[3] == pytest.approx(0.0, abs=1e-9)
