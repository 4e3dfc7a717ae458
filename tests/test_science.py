"""The science run's pieces: shared probe features, the verdict words and the generated Markdown."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from models import finetune
from models.backbones import build_backbone, export_trunk_state_dict
from models.science import (
    crossed_test,
    overall_verdict,
    plot_replicates,
    render_verdict,
    replicate_tests,
)


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
    assert "with 5 seeds its smallest attainable p is 0.0625, so alone it cannot reject" in text
    assert "2300 distinct training samples from 216 videos" in text
    # the Wilcoxon floor follows the seed count: 2 seeds (the schema's minimum) reach 0.5 at
    # best; 6 seeds reach 0.03125 < α, so the "cannot reject" remark goes
    two = [{**r, "n_seeds": "2"} for r in rows]
    assert (
        "with 2 seeds its smallest attainable p is 0.5, so alone it cannot reject at α = 0.05"
        in (render_verdict(two, data, epe, alpha=0.05))
    )
    six = render_verdict([{**r, "n_seeds": "6"} for r in rows], data, epe, alpha=0.05)
    assert "with 6 seeds its smallest attainable p is 0.03125)." in six
    assert "does NOT beat the nearest-guidance fill" in text


def _row(task: str, init: str, values: str, verdict: str = "no difference") -> dict[str, str]:
    return {"task": task, "init": init, "metric": "top1", "values": values, "verdict": verdict}


def test_replicate_test_makes_the_pretraining_run_the_unit() -> None:
    rows = [
        _row("probe", "random", "0.5,0.6,0.7", "control"),
        _row("probe", "m", "0.5,0.6,1.0"),  # per-seed Δ 0, 0, 0.3: the run's Δ is their mean 0.1
        _row("probe", "m-seed1", "0.7,0.8,0.9"),  # Δ 0.2 at every seed
        _row("probe", "m-seed2", "0.8,0.9,1.0"),  # Δ 0.3
        _row("probe", "single", "0.9,0.9,0.9"),  # one run: no test over runs
        _row("probe", "flat", "0.6,0.7,0.8"),
        _row("probe", "flat-seed1", "0.6,0.7,0.8"),  # Δ 0.1 everywhere: no spread, no t
    ]
    groups = {
        "m": ["m", "m-seed1", "m-seed2"],
        "single": ["single"],
        "flat": ["flat", "flat-seed1"],
    }
    tests = {t["method"]: t for t in replicate_tests(rows, groups, alpha=0.05)}
    assert set(tests) == {"m", "flat"}
    m = tests["m"]
    assert (m["n_runs"], m["n_seeds"]) == (3, 3)
    assert [float(d) for d in m["run_diffs"].split(",")] == pytest.approx([0.1, 0.2, 0.3])
    assert m["mean_diff"] == pytest.approx(0.2) and m["std_diff"] == pytest.approx(0.1)
    # run means 0.1, 0.2, 0.3 (var 1/100), seed means 1/6, 1/6, 4/15 (var 1/300):
    # se² = 1/300 + 1/900, t = 0.2 / (1/15) = 3, df = (4/900)² / ((1/300)²/2 + (1/900)²/2) = 3.2
    assert m["se"] == pytest.approx(1 / 15) and m["t"] == pytest.approx(3.0)
    assert m["df"] == pytest.approx(3.2)
    assert m["p_ttest"] == pytest.approx(2 * scipy_stats.t.sf(3.0, 3.2)) and m["p_ttest"] > 0.05
    assert m["verdict"] == "no difference"  # every run gained, but 3 runs at α 0.05 cannot tell
    assert replicate_tests(rows, groups, alpha=0.1)[0]["verdict"] == "helps"
    assert math.isnan(tests["flat"]["p_ttest"]) and tests["flat"]["verdict"] == "no difference"
    with pytest.raises(ValueError, match="m-seed2 has 2 seeds, the control has 3"):
        replicate_tests([*rows[:3], _row("probe", "m-seed2", "0.8,0.9")], groups, alpha=0.05)


def test_crossed_test_counts_the_controls_noise_not_only_the_runs_spread() -> None:
    # three runs that agree to 0.007 on their mean gain, all of it from one seed where the
    # control happened to score low: a test over run means alone would be near-certain
    table = [[0.30, 0.00, 0.00], [0.31, 0.01, 0.00], [0.30, 0.00, 0.02]]
    run_means = [sum(row) / 3 for row in table]
    assert scipy_stats.ttest_1samp(run_means, 0.0).pvalue < 0.001
    test = crossed_test(table)
    assert test["p"] > 0.2 and test["mean"] == pytest.approx(0.1044444)
    # a gain at every seed in every run stands out of the same run spread
    assert crossed_test([[0.10, 0.11, 0.10], [0.11, 0.10, 0.12], [0.10, 0.12, 0.11]])["p"] < 0.001
    with pytest.raises(ValueError, match="2 runs x >= 2 seeds"):
        crossed_test([[0.1, 0.2, 0.3]])


def test_rendered_verdict_puts_the_test_over_pretraining_runs_first() -> None:
    rows = [
        {"task": "seg", "init": "random", "metric": "miou", "mean": "0.5", "std": "0.01",
         "n_seeds": "2", "diff_vs_random": "", "p_ttest": "", "p_wilcoxon": "",
         "verdict": "control"},
        {"task": "seg", "init": "m-x", "metric": "miou", "mean": "0.6", "std": "0.01",
         "n_seeds": "2", "diff_vs_random": "0.1", "p_ttest": "0.01", "p_wilcoxon": "0.5",
         "verdict": "helps"},
    ]  # fmt: skip
    test = {"task": "seg", "method": "m-x", "metric": "miou", "n_runs": 3, "n_seeds": 2,
            "run_diffs": "0.1,-0.02,0.01", "mean_diff": 0.03, "std_diff": 0.06, "se": 0.04,
            "df": 3.5, "t": 0.75, "p_ttest": 0.48, "verdict": "no difference"}  # fmt: skip
    text = render_verdict(rows, [], {}, alpha=0.05, replicates=[test])
    first, rest = text.split("## Each pretraining run on its own")
    assert (
        "- **m-x** over its 3 pretraining runs: no difference (per task: no difference)." in first
    )
    row = (
        "| seg | m-x | miou | 0.100, -0.020, 0.010 | 0.030 ± 0.040 (runs=3, seeds=2) | 3.5 | 0.4800"
    )
    assert row in first
    assert "- **m-x**: helps (per task: helps)." in rest
    assert "## Each pretraining run" not in render_verdict(rows, [], {}, alpha=0.05)


def test_replicate_figure_is_a_png_with_one_panel_per_task(tmp_path) -> None:
    from PIL import Image

    test = {"method": "m-x", "metric": "miou", "run_diffs": "0.1,-0.02,0.01", "mean_diff": 0.03,
            "std_diff": 0.06, "se": 0.04, "verdict": "no difference"}  # fmt: skip
    one = plot_replicates([{**test, "task": "seg"}], tmp_path / "one.png", dpi=50)
    two = plot_replicates(
        [{**test, "task": "seg"}, {**test, "task": "probe"}], tmp_path / "two.png", dpi=50
    )
    with Image.open(one) as a, Image.open(two) as b:
        assert b.width > 1.8 * a.width and a.height == b.height  # a panel per task
