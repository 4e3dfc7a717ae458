"""`snakemake science` end to end on tiny settings: data → pretraining → transfer benchmark with
paired tests → summary.tsv, summary.png and the generated verdict."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import run_snakemake
from tests.test_workflow_pipeline import TINY

SCIENCE = {
    **TINY,
    "science": {
        "seeds": [0, 1],
        "tasks": [
            {"name": "seg_tex", "kind": "segmentation", "dataset": "textures", "size": 32,
             "train_images": 8, "val_images": 4, "epochs": 1, "batch_size": 4},
            {"name": "probe_tex", "kind": "probe", "dataset": "textures", "size": 32,
             "train_images": 12, "val_images": 6, "epochs": 2},
        ],
    },
}  # fmt: skip


@pytest.mark.slow
def test_science_target_writes_summary_plot_and_verdict(tmp_path) -> None:
    proc = run_snakemake(tmp_path, SCIENCE, "science")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "results" / "science"
    with open(out / "summary.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [(r["task"], r["init"]) for r in rows] == [
        ("seg_tex", "random"),
        ("seg_tex", "cmp-tiny"),
        ("probe_tex", "random"),
        ("probe_tex", "cmp-tiny"),
    ]
    assert {r["dataset"] for r in rows} == {"textures"}
    assert [r["verdict"] for r in rows[::2]] == ["control", "control"]
    assert all(r["verdict"] in ("helps", "no difference", "hurts") for r in rows[1::2])
    assert (out / "summary.png").read_bytes().startswith(b"\x89PNG")
    verdict = (out / "verdict.md").read_text(encoding="utf-8")
    assert verdict.startswith("# Does the pretraining help?")
    assert "**cmp-tiny**" in verdict and "paired t-test" in verdict.lower()
    # the shard stage printed and recorded the distinct training samples; the verdict repeats them
    index = json.loads((tmp_path / "results/tiny/shards-dis_fast/index.json").read_text())
    n_train = index["splits"]["train"]["n_samples"]
    log = (tmp_path / "results/tiny/logs/shards.log").read_text(encoding="utf-8")
    assert f"distinct training samples: {n_train} " in log
    assert f"{n_train} distinct training samples" in verdict
    # ... and so did the training run; its validation EPE sits beside the guidance-only baselines
    run = json.loads((tmp_path / "results/pretrain/cmp/tiny/data.json").read_text())
    assert run["train_samples"] == n_train
    assert "nearest_guidance" in verdict and "val/baseline_nearest_guidance" in (
        tmp_path / "results/pretrain/cmp/tiny/logs/version_0/metrics.csv"
    ).read_text(encoding="utf-8")
