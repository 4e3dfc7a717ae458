"""The distributed engine: a tiny set through Snakemake's cluster-generic executor.

The executor gets the SLURM profile's resources (profiles/slurm/config.yaml: default-resources
and the cluster.gpu_resources it hands every GPU rule) and submit / status scripts that run the
jobs on this machine (tests/cluster/). The test asserts what each submitted job asked for: every
training rule (pretrain_<method>_run, benchmark_run; found by pattern) a GPU on the GPU
partition, every other job the CPU defaults.
"""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_snakemake
from tests.test_workflow_pipeline import TINY

TRAINING_RULE = re.compile(r"^(pretrain_\w+_run|benchmark_run)$")


def _profile(folder: Path, submit_log: Path) -> Path:
    slurm = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    py = sys.executable
    profile = {
        "executor": "cluster-generic",
        "cluster-generic-submit-cmd": f"{py} {REPO / 'tests/cluster/submit.py'}",
        "cluster-generic-status-cmd": f"{py} {REPO / 'tests/cluster/status.py'}",
        "jobs": 4,
        "latency-wait": 10,
        "default-resources": slurm["default-resources"],
        "config": slurm["config"],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


@pytest.mark.slow
def test_every_training_job_asks_the_cluster_for_a_gpu(tmp_path, monkeypatch):
    submit_log = tmp_path / "cluster/submitted.jsonl"
    submit_log.parent.mkdir()
    monkeypatch.setenv("SUBMIT_LOG", str(submit_log))
    profile = _profile(tmp_path / "profile", submit_log)
    slurm = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    gpu = json.loads(slurm["config"][0].split("=", 1)[1])["gpu_resources"]
    cpu = slurm["default-resources"]
    work = tmp_path / "work"
    proc = run_snakemake(work, TINY, "--workflow-profile", str(profile), "benchmark")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (work / "results/benchmark/summary.tsv").is_file()

    jobs = [json.loads(line) for line in submit_log.read_text().splitlines()]
    rules = {j["rule"] for j in jobs}
    assert {
        "pretrain_cmp_run",
        "benchmark_run",
        "flow_chunk",
        "shards_chunk",
        "shards_index",
    } <= rules
    assert "pretrain_cmp" not in rules  # the target rule runs no job
    for job in jobs:
        res = job["resources"]
        if TRAINING_RULE.match(job["rule"]):
            assert res["gpu"] == 1, job
            assert {k: res[k] for k in gpu} == gpu, job
        else:
            assert res.get("gpu", 0) == 0, job
            assert {k: res[k] for k in cpu} == cpu, job
