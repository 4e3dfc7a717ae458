"""Motion-mask and flow-classification methods: losses on hand-computed cases, eq. 6 binning,
pooled metrics against their baselines, loss falling on synthetic batches, the registry."""

from __future__ import annotations

import math

import pytest
import torch

from models.methods import METHODS
from models.methods.flowcls import FlowClsModule, flow_to_classes, flowcls_loss
from models.methods.motionmask import MotionMaskModule, centre_blob, masked_logistic_loss
from models.synthetic import SyntheticDataModule
from models.train import build_module, default_config, load_run_config
from pipeline.flowio import log_normalise_flow


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_masked_logistic_loss_hand_computed_and_ignore_band() -> None:
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 5.0]]], requires_grad=True)
    trimap = torch.tensor([[[1, 0], [255, 1]]])
    # BCE: label 1 → softplus(-z), label 0 → softplus(z); mean over the 3 decided pixels.
    expected = (_softplus(-0.0) + _softplus(2.0) + _softplus(-5.0)) / 3
    loss = masked_logistic_loss(logits, trimap)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1, 0] == 0.0 and logits.grad[0, 0, 0] != 0.0
    # Whatever the network says on an ignored pixel changes nothing.
    moved = logits.detach().clone()
    moved[0, 1, 0] = 40.0
    assert masked_logistic_loss(moved, trimap).item() == pytest.approx(expected, rel=1e-6)
    # (B, 1, H, W) logits are accepted; an all-ignored map gives 0 with a zero gradient.
    assert masked_logistic_loss(logits[:, None], trimap).item() == pytest.approx(expected)
    empty = masked_logistic_loss(logits, torch.full_like(trimap, 255))
    empty.backward()
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="labels must be 0, 1 or 255"):
        masked_logistic_loss(logits, torch.tensor([[[2, 0], [0, 1]]]))
    with pytest.raises(ValueError, match="do not match"):
        masked_logistic_loss(logits, trimap[:, :1])


def test_flow_classes_follow_eq6_on_hand_picked_vectors() -> None:
    flow_px = torch.tensor([0.0, 1.0, -1.0, 56.0, -56.0, 300.0, -300.0, 5.0])
    # eq. 6 by hand: sign(f) min(1, log(|f|+1) / log(57)); class = floor((f' + 1) * 8), 15 at +1.
    by_hand = []
    for f in flow_px.tolist():
        g = math.copysign(min(1.0, math.log(abs(f) + 1) / math.log(57.0)), f)
        by_hand.append(min(15, math.floor((g + 1) * 8)))
    assert by_hand == [8, 9, 6, 15, 0, 15, 0, 11]
    normalised = torch.from_numpy(log_normalise_flow(flow_px.numpy(), M=56.0))
    assert flow_to_classes(normalised).tolist() == by_hand
    # Bin edges: [-1 + 2k/16, -1 + 2(k+1)/16) is class k; +1 closes the last bin.
    edges = torch.tensor([-1.0, -0.875, -0.8751, -0.125, 0.0, 0.5, 0.4999, 0.9999, 1.0, 1.5])
    assert flow_to_classes(edges).tolist() == [0, 1, 0, 7, 8, 12, 11, 15, 15, 15]
    assert flow_to_classes(torch.tensor([-0.5, 0.0, 0.5]), num_classes=4).tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        flow_to_classes(edges, num_classes=1)


def test_flowcls_loss_is_two_cross_entropies_over_valid_pixels() -> None:
    k = 4
    flow = torch.tensor([-0.9, 0.6]).view(1, 2, 1, 1).expand(1, 2, 1, 2).clone()
    logits = torch.zeros(1, 2 * k, 1, 2)
    assert flowcls_loss(logits, flow, num_classes=k).item() == pytest.approx(2 * math.log(k))
    logits[0, 0] = 30.0  # x: class 0 (flow -0.9), right
    logits[0, k + 3] = 30.0  # y: class 3 (flow 0.6), right
    assert flowcls_loss(logits, flow, num_classes=k).item() < 1e-6
    wrong = flow.clone()
    wrong[0, :, 0, 1] = 0.1  # pixel 1 now has other classes; leave it out and the loss stays ~0
    valid = torch.tensor([[[[True, False]]]])
    assert flowcls_loss(logits, wrong, num_classes=k).item() > 10
    assert flowcls_loss(logits, wrong, valid, num_classes=k).item() < 1e-6
    with pytest.raises(ValueError, match="2 x 4 channels"):
        flowcls_loss(logits[:, :5], flow, num_classes=k)


def test_centre_blob_area_and_position() -> None:
    blob = centre_blob(40, 60, 0.3)
    assert blob.float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert blob[20, 30] and not blob[0, 0] and not blob[39, 59]
    assert not centre_blob(8, 8, 0.0).any()


def test_motionmask_metrics_pool_counts_beside_baselines() -> None:
    module = MotionMaskModule(backbone="resnet18", head_channels=8)
    trimap = torch.zeros(1, 8, 8, dtype=torch.long)
    trimap[0, 4:8, 4:8] = 1
    trimap[0, 0, :] = 255
    perfect = torch.where(trimap == 1, 5.0, -5.0).float()
    counts = module.validation_counts({"trimap": trimap}, {"logits": perfect})
    metrics = module.metrics_from_counts(counts)
    assert metrics["iou_fg"].item() == 1.0 and metrics["miou"].item() == 1.0
    assert metrics["iou_fg_all_background"].item() == 0.0
    # All background: background IoU = 40 negatives / 56 decided pixels, foreground IoU 0.
    assert metrics["miou_all_background"].item() == pytest.approx(40 / 56 / 2)
    # Before any training target the blob covers 1/4 of the frame: the centre 4 × 4 here,
    # which meets the 4 × 4 object in its corner 2 × 2: IoU 4 / (16 + 16 - 4).
    assert module.blob_fraction() == 0.25
    assert metrics["iou_fg_centre_blob"].item() == pytest.approx(4 / 28)


def test_flowcls_majority_baseline_comes_from_training_targets() -> None:
    module = FlowClsModule(backbone="resnet18", head_channels=8, num_classes=4)
    flow = torch.full((2, 2, 8, 8), 0.1)  # class 2 on both axes
    module.train()
    module.compute_loss({"image": torch.zeros(2, 3, 8, 8), "flow": flow})
    assert module.train_class_counts[:, 2].tolist() == [128.0, 128.0]
    logits = torch.zeros(2, 8, 8, 8)
    logits[:, 0] = 1.0  # predicts class 0 on x, class 0 on y (ties → first)
    counts = module.validation_counts({"image": flow, "flow": flow}, {"logits": logits})
    metrics = module.metrics_from_counts(counts)
    assert metrics["accuracy_majority"].item() == 1.0 and metrics["accuracy"].item() == 0.0


@pytest.mark.parametrize("method", ["motionmask", "flowcls"])
def test_a_few_steps_reduce_the_loss(method: str) -> None:
    torch.manual_seed(0)
    config = load_run_config(None, [f"method={method}", "model.backbone=resnet18"])
    config["trainer"]["channels_last"] = False
    module = build_module(config)
    view = METHODS[method].view
    datamodule = SyntheticDataModule(num_train=8, num_val=0, size=64, batch_size=4, view=view)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    optimizer = torch.optim.SGD(module.parameters(), lr=0.02, momentum=0.9)
    losses = []
    module.train()
    for step in range(12):
        loss, _ = module.compute_loss(batches[step % len(batches)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:2]) / 2, losses


def test_registry_defaults_are_the_papers() -> None:
    assert set(METHODS) >= {"cmp", "motionmask", "flowcls"}
    assert METHODS["motionmask"].view == "motion_masks" and METHODS["flowcls"].view == "cpfs"
    flowcls = default_config("flowcls")
    assert flowcls["optim"]["lr"] == 0.01 and flowcls["optim"]["optimizer"] == "adam"
    assert flowcls["model"]["num_classes"] == 16 and flowcls["model"]["backbone"] == "alexnet"
    assert default_config("motionmask")["output_dir"] == "results/pretrain/motionmask"
    with pytest.raises(ValueError, match="unknown config key 'model.num_bins'"):
        load_run_config(None, ["method=motionmask", "model.num_bins=3"])


def test_schema_fills_method_sections_and_rejects_unknown_methods() -> None:
    import copy
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[1]
    schema = str(repo / "workflow/schemas/config.schema.yaml")
    config = yaml.safe_load((repo / "config.yaml").read_text())
    bad = copy.deepcopy(config)
    validate(config, schema)
    pretrain = config["pretrain"]
    # the embedded default trains CMP only; the other methods keep their sections and targets
    assert pretrain["methods"] == ["cmp"]
    assert pretrain["cmp"]["trainer"]["final_checkpoint"] == "weights"  # the schema's default
    assert pretrain["flowcls"]["data"]["flow_bound"] == 56.0
    assert pretrain["flowcls"]["optim"] == {**default_config("flowcls")["optim"]}
    assert pretrain["motionmask"]["trainer"]["checkpoint_every_n_steps"] == 30
    assert pretrain["motionmask"]["run"] == "demo" and pretrain["motionmask"]["sets"] == []
    bad["pretrain"]["methods"] = ["cmp", "nope"]
    with pytest.raises(Exception, match="nope"):
        validate(bad, schema)
    # replicate seeds: none by default; each a distinct non-negative seed (its folder's -seed<N>)
    assert all(pretrain[m]["replicate_seeds"] == [] for m in METHODS)
    for seeds in ([1, 1], [-1]):
        bad = copy.deepcopy(config)
        bad["pretrain"]["s3"]["replicate_seeds"] = seeds
        with pytest.raises(Exception, match="replicate_seeds"):
            validate(bad, schema)


def test_motionmask_paper_config_builds_the_stride32_alexnet() -> None:
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    paper = yaml.safe_load((repo / "configs/motionmask_alexnet_paper.yaml").read_text())
    section = paper["pretrain"]["motionmask"]
    config = load_run_config(None, ["method=motionmask"])
    config["model"].update(section["model"])
    config["optim"].update(section["optim"])
    config["trainer"]["channels_last"] = False
    module = build_module(config).eval()
    assert module.backbone.output_stride == 32
    with torch.no_grad():
        logits = module(torch.zeros(1, 3, 224, 224))
    assert logits.shape == (1, 224, 224)
    with pytest.raises(ValueError, match="multiples of the trunk's stride 32"):
        module(torch.zeros(1, 3, 232, 232))
