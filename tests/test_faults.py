"""Faults lose nothing: kill -9 mid-stage, rerun, same bytes; same seed, same shards; full disk.

Each kill case starts Snakemake on a tiny one-video set in its own process group, waits until
the chosen stage's job has started (its log file appears), kills the whole group with SIGKILL
at a seeded random moment (a crashed node), unlocks, reruns, and compares every output file with an
uninterrupted run's (sha256; logs, benchmark timings and chunk manifests, which hold seconds,
are left out; ingest records hold the absolute video path, so the run folder is masked).
The benchmark (fine-tuning) job is killed the same way at a seeded point of its runs and rerun
directly (its inputs are trunk weights files). Pretraining is killed a seeded time after a seeded
checkpoint step and rerun: the final weights and logged metrics equal an uninterrupted run's
(models/resumable.py); test_train.py checks the resume bookkeeping per method, test_checkpoints.py
the kill during the final-checkpoint rewrite.
"""

import csv
import hashlib
import json
import logging
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

from tests.conftest import REPO, resume_points, run_snakemake
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
    "shards": f"{SET}/shards-dis_fast-masks-guidance/logs/*.log",  # a chunk's packing job
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


# --------------------------------------------------------------------------- benchmark job
# The benchmark job (rule benchmark_run: python -m models.benchmark) on a tiny config: random
# init + one weights file, a segmentation and a probe task, two seeds (8 fine-tuning runs).
BENCH_TASKS = [
    {"name": "seg", "kind": "segmentation", "size": 32, "train_images": 8, "val_images": 4,
     "epochs": 1, "batch_size": 4},
    {"name": "probe", "kind": "probe", "size": 32, "train_images": 16, "val_images": 8,
     "epochs": 2},
]  # fmt: skip
BENCH_RUNS = len(BENCH_TASKS) * 2 * 2  # tasks x initialisations x seeds
# summary.tsv columns that hold measured seconds: the only ones two runs may differ in
TIMING_COLUMNS = ("seconds_per_epoch", "extract_seconds")


def _benchmark_cmd(out: Path, weights: Path) -> list[str]:
    sets = {
        "output_dir": str(out),
        "backbone": "resnet18",
        "accelerator": "cpu",
        "num_threads": 1,
        "seeds": [0, 1],
        "initialisations": [
            {"name": "random", "backbone_path": None},
            {"name": "trunk", "backbone_path": str(weights)},
        ],
        "tasks": BENCH_TASKS,
    }
    command = [sys.executable, "-m", "models.benchmark"]
    for key, value in sets.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    return command


def _benchmark_outputs(out: Path) -> dict[str, bytes]:
    """Every file the job leaves (temporary ones too), summary.tsv without its timing columns."""
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    if "summary.tsv" in files:
        lines = files["summary.tsv"].decode().splitlines()
        header = lines[0].split("\t")
        keep = [i for i, name in enumerate(header) if name not in TIMING_COLUMNS]
        assert len(keep) == len(header) - len(TIMING_COLUMNS)
        masked = ["\t".join(line.split("\t")[i] for i in keep) for line in lines]
        files["summary.tsv"] = "\n".join(masked).encode()
    return files


@pytest.fixture(scope="module")
def bench_weights(tmp_path_factory) -> Path:
    """A trunk weights file as models.train exports it (torchvision names, no classifier)."""
    import torch

    from models.backbones import build_backbone, export_trunk_state_dict

    torch.manual_seed(7)
    trunk, _ = build_backbone("resnet18")
    path = tmp_path_factory.mktemp("weights") / "backbone.pth"
    torch.save(export_trunk_state_dict(trunk), path)
    return path


@pytest.mark.slow
def test_kill_9_mid_benchmark_then_rerun_gives_the_same_outputs(bench_weights, tmp_path):
    """kill -9 of the benchmark job after a seeded number of its fine-tuning runs started (+ a
    seeded fraction of a second), rerun: the outputs equal an uninterrupted run's byte for byte,
    except summary.tsv's measured seconds."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    reference = tmp_path / "reference"
    done = subprocess.run(
        _benchmark_cmd(reference, bench_weights), cwd=REPO, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _benchmark_outputs(reference)
    assert set(expected) == {"config.yaml", "summary.tsv", "summary.png"}

    out = tmp_path / "killed"
    log = tmp_path / "killed.log"
    chance = random.Random("benchmark")
    started_runs, delay = chance.randint(1, BENCH_RUNS), chance.uniform(0.0, 0.5)
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            _benchmark_cmd(out, bench_weights), cwd=REPO, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while log.read_text().count(" / seed ") < started_runs:
            assert proc.poll() is None, f"the job ended before run {started_runs} started"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.tsv").exists(), "killed too late: the job had finished"

    rerun = subprocess.run(
        _benchmark_cmd(out, bench_weights), cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got = _benchmark_outputs(out)
    # the run folder's path is part of config.yaml (output_dir): compare it masked
    got["config.yaml"] = got["config.yaml"].replace(str(out).encode(), b"<OUT>")
    expected["config.yaml"] = expected["config.yaml"].replace(str(reference).encode(), b"<OUT>")
    assert got == expected


# --------------------------------------------------------------------------- pretraining
# A tiny CMP run on the synthetic scene: 16 samples in batches of 4 (4 steps an epoch), a
# checkpoint every 2 steps (mid-epoch and on epoch boundaries), validation every 5.
PRETRAIN_STEPS = 12


def _pretrain_overrides(out: Path) -> list[str]:
    from tests.test_train import tiny

    return [
        *tiny("cmp"),
        f"output_dir={out}",
        f"trainer.max_steps={PRETRAIN_STEPS}",
        "trainer.checkpoint_every_n_steps=2",
        "trainer.val_check_interval=5",
        "trainer.enable_progress_bar=false",
        "figures.enabled=false",
    ]


def _metric_rows(out: Path) -> list[dict[str, str]]:
    """Every row of every CSV-logger version, its empty cells left out (a version's columns are
    the metrics it logged); the metrics have no wall-time columns."""
    rows = []
    for path in sorted((out / "logs").glob("version_*/metrics.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows += [{k: v for k, v in row.items() if v} for row in csv.DictReader(handle)]
    return rows


def _wait_for_checkpoint(last: Path, step: int, proc: subprocess.Popen) -> None:
    """Until ``last`` holds a step >= ``step`` (Lightning replaces it by a rename)."""
    from models.checkpoints import load_checkpoint

    deadline, seen = time.monotonic() + 900, None  # seconds idle, minutes on a loaded machine
    while True:
        assert proc.poll() is None, "training ended before the kill"
        assert time.monotonic() < deadline, f"no checkpoint of step {step} within 900 s"
        if last.exists() and (stat := last.stat()).st_ino != seen:
            seen = stat.st_ino
            if int(load_checkpoint(last)["global_step"]) >= step:
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_mid_pretraining_then_rerun_gives_the_same_weights_and_metrics(tmp_path, caplog):
    """kill -9 of training a seeded random time after a seeded checkpoint step, rerun: the rerun
    loads the killed run's last.ckpt and starts at its step; the final checkpoint's weights and
    the exported trunk are equal to an uninterrupted run's, and so is every logged metric row
    (step, epoch, losses, learning rate, validation metrics)."""
    import torch

    from models.train import fit, load_run_config

    whole = fit(load_run_config(None, _pretrain_overrides(tmp_path / "whole")))

    out = tmp_path / "killed"
    chance = random.Random("pretraining")
    step, delay = chance.choice([2, 4, 6, 8]), chance.uniform(0.0, 0.5)
    command = [sys.executable, "-m", "models.train", "fit"]
    for item in _pretrain_overrides(out):
        command += ["--set", item]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_checkpoint(out / "checkpoints" / "last.ckpt", step, proc)
        time.sleep(delay)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    last = out / "checkpoints" / "last.ckpt"
    killed_at = int(torch.load(last, weights_only=True)["global_step"])
    assert step <= killed_at < PRETRAIN_STEPS, "killed too late: training had finished"

    caplog.clear()
    with caplog.at_level(logging.INFO):
        fit(load_run_config(None, _pretrain_overrides(out)))  # the rerun resumes from last.ckpt
    assert resume_points(caplog.text) == ([str(last)], [killed_at])
    got = torch.load(last, weights_only=True)
    expected = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == expected["global_step"] == PRETRAIN_STEPS
    assert got["state_dict"].keys() == expected["state_dict"].keys()
    for name, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][name], value), name
    trunk = torch.load(out / "backbone.pth", weights_only=True)
    for name, value in torch.load(whole / "backbone.pth", weights_only=True).items():
        assert torch.equal(trunk[name], value), name
    # Rows the killed run flushed and the resumed run's rows are the uninterrupted run's; the
    # resumed run logged every row from the checkpoint's step on (logged steps count from 0).
    rows, reference = _metric_rows(out), _metric_rows(whole)
    assert all(row in reference for row in rows)
    after = [row for row in reference if int(row["step"]) >= killed_at]
    assert after and all(row in rows for row in after)
    if killed_at < 9:  # a validation (after step 10, logged as step 9) came after the kill
        assert any("val/loss" in row for row in after if int(row["step"]) > killed_at)
