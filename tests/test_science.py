"""The science run's pieces: shared probe features, the verdict words and the generated Markdown."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import finetune
from models.backbones import build_backbone, export_trunk_state_dict
from models.science import overall_verdict, render_verdict


def test_probe_with_shared_features_matches_its_own_extraction(tmp_path) -> None:
    trunk, _ = build_backbone("resnet18")
    torch.save(export_trunk_state_dict(trunk), tmp_path / "w.pth")
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), np.arange(12) % 3)
    val = (rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), np.arange(6) % 3)
    common = dict(arch="resnet18", weights=tmp_path / "w.pth", train=train, val=val,
                  num_classes=3, seed=1, train_size=8, epochs=2, accelerator="cpu")  # fmt: skip
    own = finetune.run_probe(**common)
    shared = finetune.probe_features("resnet18", tmp_path / "w.pth", train[0], val[0])
    again = finetune.run_probe(**common, features=shared)
    assert again["top1"] == own["top1"] and again["extract_seconds"] == 0.0
    with pytest.raises(ValueError, match="every training"):
        finetune.run_probe(**common, features=(shared[0][:3], shared[1]))


def test_overall_verdict_words() -> None:
    assert overall_verdict(["helps", "no difference"]) == "helps"
    assert overall_verdict(["hurts", "no difference"]) == "hurts"
    assert overall_verdict(["helps", "hurts"]) == "mixed"
    assert overall_verdict(["no difference"] * 2) == "no difference"


def test_rendered_verdict_names_the_test_the_data_and_the_epe_comparison() -> None:
    rows = [
        {"task": "seg", "init": "random", "metric": "miou", "mean": "0.5", "std": "0.01",
         "n_seeds": "5", "diff_vs_random": "", "p_ttest": "", "p_wilcoxon": "",
         "verdict": "control"},
        {"task": "seg", "init": "cmp-x", "metric": "miou", "mean": "0.45", "std": "0.01",
         "n_seeds": "5", "diff_vs_random": "-0.05", "p_ttest": "0.001", "p_wilcoxon": "0.0625",
         "verdict": "hurts"},
    ]  # fmt: skip
    data = [{"index": "i.json", "train_samples": 2300, "train_videos": 216,
             "val_samples": 250, "val_videos": 24}]  # fmt: skip
    epe = {"cmp-x": {"val/epe": 1.5, "val/baseline_nearest_guidance": 1.1}}
    text = render_verdict(rows, data, epe, alpha=0.05)
    assert "- **cmp-x**: hurts (per task: hurts)." in text
    assert "| seg | cmp-x | miou | 0.450 ± 0.010 (n=5) | -0.050 | 0.0010 | 0.0625 | hurts |" in text
    assert "2300 distinct training samples from 216 videos" in text
    assert "does NOT beat the nearest-guidance fill" in text
