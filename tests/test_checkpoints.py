"""Final checkpoints (models/checkpoints.py): weights only once a run is complete; a rerun of a
complete run only re-exports; a kill -9 during the rewrite leaves nothing a rerun trusts."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from models.backbones import export_trunk_state_dict
from models.checkpoints import FinishedRunError, changed_settings, completion, training_settings
from models.train import build_module, fit, load_run_config, resolve_config
from tests.test_train import REPO, tiny

# 3 steps, checkpoints every 2: the final step is saved only by RunCheckpoint.on_train_end
STEPS = ["trainer.max_steps=3", "trainer.checkpoint_every_n_steps=2", "figures.enabled=false"]
RESUME_ONLY = ("optimizer_states", "lr_schedulers", "callbacks")


def _config(out: Path, *extra: str) -> dict:
    run = out.parent / f"{out.name}.yaml"
    run.write_text(yaml.safe_dump({"output_dir": str(out)}))
    return load_run_config(run, [*tiny("cmp"), *STEPS, *extra])


def _trunk_from(checkpoint: Path, config: dict) -> dict[str, torch.Tensor]:
    module = build_module(resolve_config(config))
    module.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    return export_trunk_state_dict(module.backbone)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_completed_run_keeps_weights_and_a_rerun_only_exports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    config = _config(out)
    fit(config)
    last = out / "checkpoints" / "last.ckpt"
    slim = torch.load(last, weights_only=True)
    assert slim["global_step"] == 3  # the final step, though 3 is not a multiple of 2
    assert slim["final"] == {"reason": "max_steps", "global_step": 3, "max_steps": 3}
    assert not set(RESUME_ONLY) & slim.keys()
    # the slim checkpoint still gives the exported trunk
    exported = torch.load(out / "backbone.pth", weights_only=True)
    assert _same(_trunk_from(last, config), exported)

    # final_checkpoint: full keeps the resume state; same weights, about twice the bytes
    full_out = tmp_path / "full"
    fit(_config(full_out, "trainer.final_checkpoint=full"))
    full = torch.load(full_out / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(RESUME_ONLY) <= full.keys() and "final" not in full
    assert _same(full["state_dict"], slim["state_dict"])
    assert last.stat().st_size < 0.6 * (full_out / "checkpoints" / "last.ckpt").stat().st_size

    # A rerun of the complete run trains nothing (Lightning's resume would refuse the slim file)
    # and rewrites the outputs Snakemake deleted.
    (out / "backbone.pth").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        fit(config)
    assert "training is complete (max_steps)" in caplog.text and "resuming" not in caplog.text
    assert _same(torch.load(out / "backbone.pth", weights_only=True), exported)
    assert len(list((out / "logs").glob("version_*"))) == 1  # no second training run logged

    # Training on from weights only is refused with the two ways out.
    with pytest.raises(FinishedRunError, match=r"max_steps=5: delete .*final_checkpoint: full"):
        fit(_config(out, "trainer.max_steps=5"))


def test_kill_9_during_the_rewrite_leaves_a_checkpoint_the_rerun_finishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The training process is killed after the slim last.ckpt is written to its temporary
    file, before the rename: last.ckpt is still the full, complete one; the rerun sees the run
    complete, trains nothing, slims it and removes the temporary file."""
    out = tmp_path / "run"
    config = _config(out)
    overrides = [*tiny("cmp"), *STEPS]
    script = (
        "import contextlib, os, signal, sys\n"
        "import models.checkpoints as c\n"
        "real = c.atomic_path\n"
        "@contextlib.contextmanager\n"
        "def dying(path):\n"
        "    with real(path) as tmp:\n"
        "        yield tmp\n"
        "        if path.name == 'last.ckpt':\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "c.atomic_path = dying\n"
        "from models.train import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [sys.executable, "-c", script, "fit", "--config", str(out.parent / "run.yaml")]
    for item in overrides:
        command += ["--set", item]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    last = out / "checkpoints" / "last.ckpt"
    assert list(last.parent.glob(".last.ckpt.*.tmp")), "the kill came before the rename"
    left = torch.load(last, weights_only=True)
    assert left["global_step"] == 3 and "optimizer_states" in left and "final" not in left
    assert not (out / "backbone.pth").exists()

    with caplog.at_level(logging.INFO):
        fit(config)
    assert "training is complete (max_steps)" in caplog.text and "resuming" not in caplog.text
    slim = torch.load(last, weights_only=True)
    assert slim["final"]["global_step"] == 3 and "optimizer_states" not in slim
    assert _same(slim["state_dict"], left["state_dict"])
    assert not list(last.parent.glob("*.tmp"))
    assert _same(torch.load(out / "backbone.pth", weights_only=True), _trunk_from(last, config))


def test_a_rerun_with_other_settings_trains_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints carry the settings they were trained with (the slim final one too); a rerun
    with another seed does not re-export or resume them: one line says why, and the run trains
    from step 0 with its old checkpoints and logs gone."""
    out = tmp_path / "run"
    fit(_config(out))
    last = out / "checkpoints" / "last.ckpt"
    stamp = torch.load(last, weights_only=True)["settings"]
    assert stamp["values"]["seed"] == 0 and "max_steps" not in stamp["values"]["trainer"]
    with caplog.at_level(logging.INFO):
        fit(_config(out, "seed=7"))
    changed = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert len(changed) == 1 and "(seed: 0 -> 7)" in changed[0], changed
    assert "training starts at global step 0" in caplog.text and "resuming" not in caplog.text
    assert torch.load(last, weights_only=True)["settings"]["values"]["seed"] == 7
    assert len(list((out / "logs").glob("version_*"))) == 1  # the old run's metrics are gone


def test_changed_settings_ignores_run_only_keys_and_unstamped_checkpoints() -> None:
    config = resolve_config(load_run_config(None, tiny("cmp")))
    settings = training_settings(config)
    checkpoint = {"settings": {"sha256": "x", "values": settings}}
    assert changed_settings(checkpoint, settings) == []  # equal values, whatever the digest
    longer = training_settings({**config, "trainer": {**config["trainer"], "max_steps": 9}})
    assert longer == settings  # training on to a larger max_steps is a resume
    lr = {**settings, "optim": {**settings["optim"], "lr": 0.5}}
    assert changed_settings(checkpoint, lr) == [f"optim.lr: {settings['optim']['lr']!r} -> 0.5"]
    assert changed_settings({"global_step": 3}, lr) == []  # made before checkpoints had settings


def test_completion_reads_the_mark_the_step_and_early_stopping() -> None:
    path = Path("run/checkpoints/last.ckpt")
    full = {"global_step": 40, "optimizer_states": [{}], "callbacks": {}}
    assert completion(full, 60, path) is None  # training goes on
    assert completion(full, 40, path) == "max_steps"
    stopped = {
        **full,
        "callbacks": {"EarlyStopping{'monitor': 'val/loss'}": {"stopping_reason": 3}},
    }
    assert completion(stopped, 60, path) == "early_stopping"
    final = {
        "global_step": 40,
        "final": {"reason": "max_steps", "global_step": 40, "max_steps": 40},
    }
    assert completion(final, 40, path) == "max_steps"
    assert completion(final, 20, path) == "max_steps"  # as Lightning: a shorter horizon is done
    with pytest.raises(FinishedRunError, match="finished 40-step run"):
        completion(final, 60, path)
    early = {"global_step": 30, "final": {"reason": "early_stopping", "global_step": 30,
                                          "max_steps": 40}}  # fmt: skip
    assert completion(early, 60, path) == "early_stopping"  # it would have stopped there again
    with pytest.raises(FinishedRunError, match="no optimizer state"):
        completion({"global_step": 3, "state_dict": {}}, 60, path)


def _saved_bytes(obj: object) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def test_embedded_default_pretraining_fits_120_mb() -> None:
    """Issue 18: results/pretrain of the embedded default <= 120 MB. Per method of
    pretrain.methods: the final (weights-only) last.ckpt is the state_dict plus a few kB, and
    backbone.pth the trunk; 5 MB are left for figures, logs and configs."""
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))["pretrain"]
    total = 0
    for method in config["methods"]:
        section = config[method]
        assert section.get("trainer", {}).get("final_checkpoint", "weights") == "weights"
        run = load_run_config(None, [f"method={method}", f"model={json.dumps(section['model'])}"])
        module = build_module(resolve_config(run))
        total += _saved_bytes({"state_dict": module.state_dict()})
        total += _saved_bytes(export_trunk_state_dict(module.backbone))
    assert total < 115e6, total
