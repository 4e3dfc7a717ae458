"""CMP Lightning training: config, loss falls, 2-process DDP, kill -9 resume, exports, figures."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from models.cmp import cmp_loss
from models.figures import plot_loss_curves, read_metrics
from models.methods.cmp import CMPModule, endpoint_error
from models.synthetic import SyntheticDataModule, synthetic_sample
from models.train import build_datamodule, default_config, fit, load_run_config, parse_override
from tests.conftest import resume_points

REPO = Path(__file__).resolve().parents[1]
_TINY_MODEL = {
    "cmp": "model.decoder_channels=32",
    "motionmask": "model.head_channels=32",
    "flowcls": "model.head_channels=32",
}


def tiny(method: str = "cmp") -> list[str]:
    """Overrides of a seconds-long run of ``method`` on the synthetic scene (its own view)."""
    return [
        f"method={method}",
        "data.factory=models.synthetic.SyntheticDataModule",
        "data.kwargs={num_train: 16, num_val: 4, size: 64, batch_size: 4}",
        "model.backbone=resnet18",
        _TINY_MODEL[method],
        "trainer.log_every_n_steps=1",
        "trainer.num_sanity_val_steps=0",
        "figures.num_samples=2",
    ]


TINY = tiny("cmp")


def test_config_defaults_overrides_and_errors(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text("seed: 3\nmodel: {backbone: resnet18}\ndata: {kwargs: {root: /x}}\n")
    config = load_run_config(run, ["trainer.max_steps=7", "optim.lr=0.01", "data.kwargs.k=[1, 2]"])
    assert config["seed"] == 3 and config["model"]["backbone"] == "resnet18"
    assert config["trainer"]["max_steps"] == 7 and config["optim"]["lr"] == 0.01
    assert config["data"]["kwargs"] == {"root": "/x", "k": [1, 2]}
    assert config["model"]["num_bins"] == default_config("cmp")["model"]["num_bins"] == 99
    assert config["optim"]["lr_milestones"] == pytest.approx([2 / 3.5, 3 / 3.5])
    # JSON first (what the rules pass): YAML 1.1 alone would read 1e-08 as the string "1e-08"
    assert parse_override("optim.eps=1e-08") == {"optim": {"eps": 1e-08}}
    assert parse_override('run="1e-08"') == {"run": "1e-08"}
    assert parse_override("run=demo") == {"run": "demo"}
    assert parse_override("data.kwargs={a: 1}") == {"data": {"kwargs": {"a": 1}}}
    assert parse_override("x=") == {"x": None}
    with pytest.raises(ValueError, match="unknown config key 'trainer.max_step'"):
        load_run_config(None, ["trainer.max_step=7"])
    with pytest.raises(ValueError, match="key=value"):
        load_run_config(None, ["trainer.max_steps"])
    with pytest.raises(ValueError, match="must be a mapping"):
        load_run_config(None, ["trainer=3"])
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        load_run_config(None, ["method=nope"])
    with pytest.raises(ValueError, match="dotted path"):
        build_datamodule("CMPDataModule")
    with pytest.raises(ValueError, match="not a DataModule"):
        build_datamodule("builtins.dict")


def test_synthetic_batch_follows_the_contract() -> None:
    sample = synthetic_sample(5, size=32, max_shift=4, seed=1)
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["flow"].shape == (2, 32, 32) and sample["sparse"].shape == (4, 32, 32)
    mask = sample["sparse"][2] > 0
    assert torch.equal(mask, sample["sparse"][3] > 0) and mask.sum() >= 2
    # Guidance vectors are the target flow at the guidance points, zero elsewhere.
    assert torch.equal(sample["sparse"][:2][:, mask], sample["flow"][:, mask])
    assert torch.count_nonzero(sample["sparse"][:2][:, ~mask]) == 0
    assert torch.equal(synthetic_sample(5, 32, 4, seed=1)["image"], sample["image"])


def test_endpoint_error_known_answer() -> None:
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0, 0], target[0, 1, 0, 0] = 3.0, 4.0
    assert endpoint_error(pred, target).item() == pytest.approx(5.0 / 4)
    valid = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    valid[..., 0, 0] = True
    assert endpoint_error(pred, target, valid).item() == pytest.approx(5.0)


def test_loss_falls_on_a_fixed_seed() -> None:
    torch.manual_seed(0)
    module = CMPModule(backbone="resnet18", decoder_channels=32)
    datamodule = SyntheticDataModule(num_train=8, num_val=0, size=64, batch_size=4)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    losses = []
    for step in range(16):
        batch = batches[step % len(batches)]
        loss = cmp_loss(module(batch["image"], batch["sparse"]), batch["flow"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.6 * sum(losses[:2]) / 2, losses


def test_two_process_ddp_spawn_on_cpu(tmp_path: Path) -> None:
    config = load_run_config(
        None,
        [
            *TINY,
            f"output_dir={tmp_path / 'ddp'}",
            "trainer.max_steps=3",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp_spawn",
            "trainer.val_check_interval=3",
            "trainer.checkpoint_every_n_steps=3",
        ],
    )
    out = fit(config)
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["trainer"]["precision"] == "32-true"
    assert resolved["trainer"]["channels_last"] is False
    assert (out / "backbone.pth").is_file()
    assert "val/epe" in read_metrics(out / "logs")


def _checkpoint_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["global_step"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cmp", "motionmask", "flowcls"])
def test_kill_9_then_rerun_resumes_from_last_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    out = tmp_path / "run"
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"output_dir": str(out)}))
    last = out / "checkpoints" / "last.ckpt"
    command = [sys.executable, "-m", "models.train", "fit", "--config", str(run)]
    for item in [*tiny(method), "trainer.max_steps=100000", "trainer.checkpoint_every_n_steps=2"]:
        command += ["--set", item]
    # stderr to a file: a pipe nobody reads fills up (progress bar, warnings) and stalls training
    errors = tmp_path / "stderr.log"
    with errors.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        # seconds on an idle machine, minutes on a loaded one: the kill waits for the checkpoint
        deadline = time.monotonic() + 900
        while not last.exists():
            if process.poll() is not None:
                pytest.fail(f"training exited early:\n{errors.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 900 s")
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = _checkpoint_step(last)
    assert killed_at >= 2 and killed_at % 2 == 0

    # Rerun the same run (in-process, to save an interpreter start) with a nearby horizon.
    # checkpoint_every_n_steps differs on purpose: last.ckpt must still be the one refreshed.
    config = load_run_config(run, [*tiny(method), f"trainer.max_steps={killed_at + 2}"])
    with caplog.at_level(logging.INFO):
        fit(config)
    assert resume_points(caplog.text) == ([str(last)], [killed_at])
    assert _checkpoint_step(last) == killed_at + 2
    # retention: by default last.ckpt (resume state, final checkpoint) is the only checkpoint
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.ckpt"]

    # The exported trunk is a torchvision ResNet-18 minus its classifier.
    state = torch.load(out / "backbone.pth", weights_only=True)
    result = torchvision.models.resnet18().load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    for name in ("loss_curves.png", "val_predictions.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    # Both runs' CSV logs are read; the resumed run's steps continue the killed one's.
    steps = [step for step, _ in read_metrics(out / "logs")["train/loss"]]
    assert len(list((out / "logs").glob("version_*"))) == 2
    assert steps[-1] == killed_at + 1


def test_loss_curves_from_csv(tmp_path: Path) -> None:
    version = tmp_path / "logs" / "version_0"
    version.mkdir(parents=True)
    (version / "metrics.csv").write_text(
        "epoch,step,train/loss,val/epe\n0,0,5.0,\n0,1,4.0,\n0,1,,2.5\n"
    )
    assert read_metrics(tmp_path / "logs") == {
        "train/loss": [(0, 5.0), (1, 4.0)],
        "val/epe": [(1, 2.5)],
    }
    path = plot_loss_curves(tmp_path / "logs", tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_torch_load_in_models_is_weights_only() -> None:
    sources = sorted((REPO / "models").rglob("*.py"))
    assert sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth:  # find the closing parenthesis of the call
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[match.start() : end]
            assert re.search(r"weights_only\s*=\s*True", call), f"{path.name}: {call}"
