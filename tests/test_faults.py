"""Faults lose nothing: kill -9 mid-stage, rerun, same bytes; same seed, same shards; full disk.

Each kill case starts Snakemake on a tiny one-video set in its own process group, waits until
the chosen stage's job has started (its log file appears), kills the whole group with SIGKILL
at a seeded random moment (a crashed node), unlocks, reruns, and compares every output file with an
uninterrupted run's (sha256; logs, benchmark timings and chunk manifests, which hold seconds,
are left out; ingest records hold the absolute video path, so the run folder is masked).
"""

import hashlib
import os
import random
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_snakemake
from tests.test_workflow_pipeline import TINY

ONE = {**TINY, "video_sets": {"tiny": {"source": "synthetic", "videos": 1, "seed": 3}}}
ONE["shards"] = {"val_fraction": 0.0}
SET = "results/tiny"
# stage -> the log file its job writes first (the job has started once it exists)
STAGE_LOGS = {
    "ingest": f"{SET}/logs/ingest/*.log",
    "shots": f"{SET}/logs/shots/*.log",
    "flow": f"{SET}/flow-dis_fast/logs/*.log",
    "masks": f"{SET}/masks-dis_fast/logs/*.log",
    "guidance": f"{SET}/guidance-dis_fast-K15G30/logs/*.log",
    "shards": f"{SET}/logs/shards.log",
}
SKIP_PARTS = {"logs", "benchmarks", "chunks", ".snakemake"}


def digests(work: Path) -> dict[str, str]:
    """sha256 of every output file, the run's own folder name (in ingest records) masked."""
    out = {}
    for p in sorted((work / "results").rglob("*")):
        rel = p.relative_to(work)
        if p.is_file() and not SKIP_PARTS & set(rel.parts):
            data = p.read_bytes().replace(str(work).encode(), b"<WORK>")
            out[str(rel)] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("reference")
    proc = run_snakemake(work, ONE, "shards")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return digests(work)


def _snakemake_cmd(work: Path) -> list[str]:
    cfg = work / "test-config.yaml"
    cfg.write_text(yaml.safe_dump(ONE))
    return [
        str(Path(sys.executable).with_name("snakemake")),
        "-s", str(REPO / "Snakefile"), "-d", str(work), "--configfile", str(cfg),
        "--cores", "2", "shards",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGE_LOGS))
def test_kill_9_mid_stage_then_rerun_gives_the_same_bytes(stage, reference, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(
        _snakemake_cmd(work),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 600
    while not list(work.glob(STAGE_LOGS[stage])):
        assert proc.poll() is None, f"the run ended before {stage} started"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(random.Random(stage).uniform(0.0, 1.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # a killed Snakemake leaves its lock: the documented recovery is --unlock, then rerun
    assert run_snakemake(work, ONE, "--unlock").returncode == 0
    rerun = run_snakemake(work, ONE, "shards")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert digests(work) == reference


@pytest.mark.slow
def test_two_runs_with_one_seed_give_identical_shards(reference, tmp_path):
    proc = run_snakemake(tmp_path, ONE, "shards")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = {k: v for k, v in digests(tmp_path).items() if "/shards-" in k}
    assert shards and any(k.endswith(".h5") for k in shards)
    assert shards == {k: v for k, v in reference.items() if "/shards-" in k}


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_full_disk_mid_stage_fails_clearly_and_leaves_nothing_to_trust(tmp_path):
    """The flow chunk job, its writes capped by RLIMIT_FSIZE (a full disk), fails with an error
    naming the cause, and leaves no pairs.tsv (the output later stages trust), no chunk manifest
    (so Snakemake reruns the chunk) and no temporary file."""
    work = tmp_path / "work"
    proc = run_snakemake(work, ONE, "shots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dry = run_snakemake(work, ONE, "flow", "-n", "-p")
    line = next(x for x in dry.stdout.splitlines() if "pipeline chunk --stage=flow" in x)
    command = line[line.index("python -m pipeline") :].split(" > ")[0]  # without the log
    argv = [sys.executable, *shlex.split(command)[1:]]
    res = subprocess.run(
        argv, capture_output=True, text=True, preexec_fn=_limit_file_size(3000), cwd=work
    )
    assert res.returncode != 0
    assert "File too large" in res.stderr or "No space" in res.stderr, res.stderr[-2000:]
    flow = work / SET / "flow-dis_fast"
    assert not list(flow.rglob("pairs.tsv")) and not list(flow.rglob("*.chunk.tsv"))
    assert not list(flow.rglob("*.tmp")), "a temporary file was left behind"
