"""Downstream benchmark: mIoU, depth freezing, weight loading, linear probe, the entry point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from models import benchmark, finetune
from models.backbones import build_backbone, export_trunk_state_dict
from pipeline.atomic import read_tsv


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on the shared 2-core machine two threads spin against other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- metric


def test_miou_is_one_for_a_perfect_prediction() -> None:
    target = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    target[0, :2] = finetune.IGNORE_INDEX
    pred = target.clone()
    pred[target == finetune.IGNORE_INDEX] = 0  # ignored pixels may hold anything
    assert finetune.mean_iou(finetune.confusion_matrix(pred, target, 4)) == 1.0


def test_miou_of_a_hand_made_confusion_matrix() -> None:
    confusion = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])  # class 2 never occurs
    iou = finetune.iou_per_class(confusion)
    assert iou[0] == pytest.approx(3 / 6) and iou[1] == pytest.approx(4 / 7)
    assert math.isnan(float(iou[2]))
    assert finetune.mean_iou(confusion) == pytest.approx((3 / 6 + 4 / 7) / 2)


def test_confusion_matrix_counts_rows_as_truth_and_skips_ignored() -> None:
    target = torch.tensor([0, 0, 1, 1, 255, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert torch.equal(finetune.confusion_matrix(pred, target, 3), expected)
    with pytest.raises(ValueError, match="outside"):
        finetune.confusion_matrix(pred, torch.tensor([0, 0, 1, 1, 7, 2]), 3)
    with pytest.raises(ValueError, match="shapes differ"):
        finetune.confusion_matrix(pred[:3], target, 3)
    with pytest.raises(ValueError, match="empty"):
        finetune.mean_iou(torch.zeros(3, 3, dtype=torch.long))


# ----------------------------------------------------------------------------- freezing


def _frozen_prefixes(trunk: torch.nn.Module) -> set[str]:
    return {n.split(".")[0] for n, p in trunk.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize(
    ("depth", "frozen"),
    [
        ("all", set()),
        ("above_conv1", {"conv1", "bn1"}),
        ("above_conv3", {"conv1", "bn1", "layer1", "layer2"}),
        ("above_conv5", {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}),
        ("frozen", {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}),
    ],
)
def test_depth_freezes_exactly_the_resnet_stages(depth: str, frozen: set[str]) -> None:
    trunk, _ = build_backbone("resnet18")
    finetune.freeze_trunk(trunk, depth, "resnet18")
    assert _frozen_prefixes(trunk) == frozen
    trainable = {n.split(".")[0] for n, p in trunk.named_parameters() if p.requires_grad}
    assert trainable.isdisjoint(frozen)


def test_alexnet_above_conv5_keeps_fc6_fc7_trainable_and_bad_depth_is_refused() -> None:
    trunk, _ = build_backbone("alexnet", fc_channels=8)
    finetune.freeze_trunk(trunk, "above_conv5", "alexnet")
    assert _frozen_prefixes(trunk) == {f"conv{k}" for k in range(1, 6)}
    with pytest.raises(ValueError, match="unknown depth"):
        finetune.freeze_trunk(trunk, "above_conv6", "alexnet")


def test_frozen_layers_keep_batchnorm_statistics_in_training_mode() -> None:
    trunk, channels = build_backbone("resnet18")
    module = finetune.SegmentationModule(trunk, channels, 3, "resnet18", depth="above_conv2")
    module.train()
    assert not trunk.bn1.training and not trunk.layer1[0].bn1.training
    assert trunk.layer2[0].bn1.training and module.head.bn.training
    before = trunk.layer1[0].bn1.running_mean.clone()
    module(torch.randn(2, 3, 32, 32))
    assert torch.equal(trunk.layer1[0].bn1.running_mean, before)


# ----------------------------------------------------------------------------- weights


def test_exported_backbone_is_restored_and_a_partial_file_is_refused(tmp_path) -> None:
    source, _ = build_backbone("resnet18")
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    path = tmp_path / "backbone.pth"
    state = export_trunk_state_dict(source)
    torch.save(state, path)
    trunk, _ = finetune.build_trunk("resnet18", path)
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key

    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing trunk keys: layer4\.0\.bn1"):
        finetune.build_trunk("resnet18", tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not found"):
        finetune.build_trunk("resnet18", tmp_path / "absent.pth")


def test_torchvision_style_weights_load_with_fc_ignored(tmp_path) -> None:
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "imagenet.pth")  # has fc.weight / fc.bias
    trunk, _ = finetune.build_trunk("resnet18", tmp_path / "imagenet.pth")
    assert torch.equal(trunk.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    torch.save(resnet.state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not fit"):
        finetune.build_trunk("resnet50", tmp_path / "wrong.pth")


# ----------------------------------------------------------------------------- probe, data


def test_probe_separates_a_trivial_colour_problem() -> None:
    rng = np.random.default_rng(0)

    def colour_set(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        images = rng.integers(0, 40, (n, 32, 32, 3)).astype(np.uint8)
        images[labels == 0, ..., 0] += 200  # red
        images[labels == 1, ..., 2] += 200  # blue
        return images, labels

    result = finetune.run_probe(
        arch="resnet18",
        weights=None,
        train=colour_set(32),
        val=colour_set(16),
        num_classes=2,
        seed=0,
        epochs=10,
        batch_size=16,
        accelerator="cpu",
    )
    assert result["top1"] >= 0.95
    assert result["seconds_per_epoch"] > 0 and result["train_images"] == 32


def test_fine_tuning_learns_a_colour_coded_segmentation() -> None:
    rng = np.random.default_rng(1)

    def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
        images = rng.integers(0, 40, (n, 32, 32, 3)).astype(np.uint8)
        labels = np.full((n, 32, 32), 2, np.uint8)
        for k, cut in enumerate(rng.integers(8, 24, n)):
            images[k, :, :cut, 0] += 200  # red left part is class 1, blue right part class 2
            images[k, :, cut:, 2] += 200
            labels[k, :, :cut] = 1
        labels[:, 0] = finetune.IGNORE_INDEX  # an ignored row must not count
        return images, labels

    result = finetune.run_segmentation(
        arch="resnet18",
        weights=None,
        train=halves(16),
        val=halves(8),
        num_classes=3,
        seed=0,
        epochs=10,
        batch_size=8,
        lr=0.05,
        head_channels=16,
        accelerator="cpu",
    )
    assert result["miou"] > 0.8
    assert len(result["epoch_seconds"]) == 10


def test_low_shot_subset_is_seeded_and_checked() -> None:
    a = finetune.low_shot_indices(100, 10, seed=0)
    assert len(a) == 10 and len(set(a)) == 10
    assert np.array_equal(a, finetune.low_shot_indices(100, 10, seed=0))
    assert not np.array_equal(a, finetune.low_shot_indices(100, 10, seed=1))
    assert len(finetune.low_shot_indices(7, None, seed=0)) == 7
    with pytest.raises(ValueError, match="train_size"):
        finetune.low_shot_indices(5, 6, seed=0)


def test_missing_voc_and_imagefolder_give_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="PASCAL VOC 2012 not found"):
        finetune.VOCSegmentationDataset(tmp_path / "voc", "train", train=True)
    with pytest.raises(ValueError, match="ImageFolder root not found"):
        finetune.imagefolder_arrays(tmp_path / "folder")


# ----------------------------------------------------------------------------- entry point


def test_benchmark_entry_point_writes_summary_and_plot(tmp_path) -> None:
    trunk, _ = build_backbone("resnet18")
    torch.save(export_trunk_state_dict(trunk), tmp_path / "backbone.pth")
    config = {
        "output_dir": str(tmp_path / "out"),
        "accelerator": "cpu",
        "num_threads": 1,
        "seeds": [0, 1],
        "initialisations": [
            {"name": "random", "backbone_path": None},
            {"name": "cmp", "backbone_path": str(tmp_path / "backbone.pth")},
        ],
        "tasks": [
            {
                "name": "seg",
                "kind": "segmentation",
                "size": 32,
                "train_images": 6,
                "val_images": 2,
                "train_size": 4,
                "depth": "above_conv3",
                "epochs": 1,
                "batch_size": 4,
                "head_channels": 8,
            },
            {"name": "probe", "kind": "probe", "dataset": "textures", "size": 32,
             "train_images": 12, "val_images": 6, "epochs": 1, "batch_size": 8},
        ],
    }  # fmt: skip
    import yaml

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert benchmark.main(["--config", str(tmp_path / "run.yaml")]) == 0
    rows = read_tsv(tmp_path / "out" / "summary.tsv")
    assert [(r["task"], r["init"]) for r in rows] == [
        ("seg", "random"),
        ("seg", "cmp"),
        ("probe", "random"),
        ("probe", "cmp"),
    ]
    assert list(rows[0]) == benchmark.SUMMARY_COLUMNS
    seg, probe = rows[0], rows[2]
    assert (seg["metric"], seg["depth"], seg["train_size"]) == ("miou", "above_conv3", "4")
    assert (probe["metric"], probe["depth"], probe["n_seeds"]) == ("top1", "frozen", "2")
    assert probe["dataset"] == "textures" and probe["train_size"] == "12"
    for row in rows:
        values = [float(v) for v in row["values"].split(",")]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
        assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-5)
        assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-5)
        assert float(row["seconds_per_epoch"]) > 0
    # the control row carries no test; the other is tested against it, seed by seed
    assert [r["verdict"] for r in rows[::2]] == ["control", "control"]
    for row in rows[1::2]:
        assert row["verdict"] in ("helps", "no difference", "hurts")
        assert 0.0 <= float(row["p_ttest"]) <= 1.0 or row["p_ttest"] == "nan"
    png = (tmp_path / "out" / "summary.png").read_bytes()
    assert png.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"colour": 1}, "unknown key"),
        ({"tasks": [{"kind": "segmentation", "depth": "above_conv9"}]}, "depth"),
        ({"tasks": [{"kind": "detection"}]}, "kind"),
        ({"tasks": [{"kind": "probe", "dataset": "imagefolder"}]}, "root"),
        ({"tasks": [{"kind": "probe", "epoch": 3}]}, "unknown key"),
        ({"seeds": []}, "seeds"),
        ({"num_threads": 0}, "num_threads"),
        ({"initialisations": [{"name": "a"}, {"name": "a"}]}, "unique"),
    ],
)
def test_bad_run_configs_are_refused(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        benchmark.resolve_config(config)
