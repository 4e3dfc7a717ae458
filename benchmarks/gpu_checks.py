"""Every GPU check of the project in one run, for a lent GPU machine (issues 12, 15, 17).

A lent machine has torch, Lightning, h5py and OpenCV but no Snakemake and no hdf5plugin, and a
few minutes of device time: so the checks call Python entry points directly, read shards written
here with ``lzf`` (no plugin needed), and write their figures as JSON into ``--out``.

    # here (CPU): build small lzf shards from the sample clips, then smoke-test the checks
    python benchmarks/gpu_checks.py make-shards build/gpu/shards
    python benchmarks/gpu_checks.py run --shards build/gpu/shards/index.json --out /tmp/g --smoke
    # on the GPU machine
    python benchmarks/gpu_checks.py run --shards build/gpu/shards/index.json --out "$OUT"

Checks (each in its own try block, so one failure does not hide the others):

1. ``cmp_step``: the CMP step (forward, loss, backward, SGD; random data) of ResNet-50 at 320²,
   bf16, channels_last, batch 64, reference loss vs the fast ``cmp_loss`` alternating
   (benchmarks/bench_train.py ``measure``); issue 17's target is ≥ 600 samples/s.
2. ``model_only_r18``: the same step for ResNet-18 at 128², batch 32 (the Lightning comparison).
3. ``lightning_r18``: ``models.train`` building blocks training CMP ResNet-18 at 128², batch 32,
   14 loader workers, on the shards; samples/s between step ``--skip`` and the last step, and
   its ratio to (2); issue 17's target is ≥ 80 %.
4. ``cpfs_loss``: benchmarks/bench_cpfs_loss.py (its CUDA section) when that script exists.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def _allow_missing_hdf5plugin() -> None:
    """Lent machines lack hdf5plugin; lzf shards need none of it, but pipeline.shards imports it."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        sys.modules["hdf5plugin"] = types.ModuleType("hdf5plugin")


def make_shards(out: Path, pairs_per_clip: int, short_side: int) -> None:
    import tempfile

    from bench_loader_data import write_loose

    from pipeline.shards.writer import write_shards

    with tempfile.TemporaryDirectory() as tmp:
        videos = write_loose(Path(tmp), pairs_per_clip, short_side)
        index = write_shards(
            videos, out, layout="raw", array_compression="lzf", val_fraction=0.0, target_mb=256
        )
    print(f"wrote {index['totals']} to {out}")


class _StepTimer:
    """Wall time of training steps after ``skip`` warm-up steps (CUDA synchronised)."""

    def __init__(self, skip: int) -> None:
        import pytorch_lightning as pl
        import torch

        timer = self

        class Callback(pl.Callback):
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                step = trainer.global_step
                if step == timer.skip:
                    timer.start = (step, time.perf_counter())
                timer.end = (step, time.perf_counter())

        self.skip = skip
        self.start: tuple[int, float] | None = None
        self.end: tuple[int, float] | None = None
        self.callback = Callback()

    def rate(self, batch_size: int) -> float:
        if self.start is None or self.end is None or self.end[0] <= self.start[0]:
            raise RuntimeError("too few steps to time")
        return batch_size * (self.end[0] - self.start[0]) / (self.end[1] - self.start[1])


def lightning_rate(
    index: Path, out: Path, steps: int, skip: int, batch: int, workers: int
) -> dict[str, Any]:
    from models import train as T

    config = T.load_run_config(
        None,
        [
            "method=cmp",
            f"output_dir={out / 'lightning_r18'}",
            "model.backbone=resnet18",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={10 * steps}",
            "trainer.num_sanity_val_steps=0",
            "trainer.limit_val_batches=0",
            f"trainer.checkpoint_every_n_steps={10 * steps}",
            "trainer.log_every_n_steps=50",
            "figures.enabled=false",
            "data.kwargs="
            + json.dumps(
                {
                    "index_paths": [str(index)],
                    "crop_size": 128,
                    "batch_size": batch,
                    "num_workers": workers,
                    "samples_per_epoch": batch * steps * 2,
                    "guidance": {"kernel_size": 31, "grid_stride": 75},
                }
            ),
        ],
    )
    config = T.resolve_config(config)
    datamodule = T.build_datamodule(config["data"]["factory"], config["data"]["kwargs"], "cmp")
    module = T.build_module(config)
    trainer = T.build_trainer(config, Path(config["output_dir"]))
    timer = _StepTimer(skip)
    trainer.callbacks.append(timer.callback)
    wall = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return {
        "samples_per_s": timer.rate(batch),
        "timed_steps": timer.end[0] - timer.start[0],
        "fit_wall_s": time.perf_counter() - wall,
        "batch_size": batch,
        "workers": workers,
        "precision": config["trainer"]["precision"],
    }


def run(args: argparse.Namespace) -> None:
    _allow_missing_hdf5plugin()
    import torch
    from bench_train import H200_BF16_DENSE_TFLOPS, measure

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    peak = 1e12 * H200_BF16_DENSE_TFLOPS
    smoke = args.smoke
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "smoke": smoke,
    }

    def save() -> None:
        (out / "gpu_checks.json").write_text(json.dumps(results, indent=2) + "\n")

    def section(name: str, fn) -> None:
        start = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as error:  # noqa: BLE001 - every check reports, none hides another
            results[name] = {"error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        results[name]["section_s"] = time.perf_counter() - start
        save()
        print(name, json.dumps(results[name])[:600], flush=True)

    def strip(r: dict[str, Any]) -> dict[str, Any]:
        for fig in r["losses"].values():
            fig.pop("steps", None)
        return r

    r50 = ("resnet50", 64, 320) if not smoke else ("resnet18", 2, 64)
    section(
        "cmp_step",
        lambda: strip(
            measure(
                r50[0], r50[2], r50[1], device, cuda, 3 if smoke else 5, 2 if smoke else 10, peak
            )
        ),
    )
    r18 = (32, 128) if not smoke else (2, 64)
    section(
        "model_only_r18",
        lambda: strip(
            measure(
                "resnet18",
                r18[1],
                r18[0],
                device,
                cuda,
                3 if smoke else 5,
                2 if smoke else 20,
                peak,
            )
        ),
    )
    if args.shards:
        steps, skip, batch, workers = (6, 2, 2, 2) if smoke else (args.steps, 50, 32, 14)
        section(
            "lightning_r18",
            lambda: lightning_rate(Path(args.shards), out, steps, skip, batch, workers),
        )
        try:
            model_only = results["model_only_r18"]["losses"]["fast"]["samples_per_s_median"]
            results["lightning_r18"]["over_model_only"] = (
                results["lightning_r18"]["samples_per_s"] / model_only
            )
            save()
        except (KeyError, TypeError):
            pass
    cpfs = ROOT / "benchmarks" / "bench_cpfs_loss.py"
    if cpfs.exists():

        def cpfs_loss() -> dict[str, Any]:
            cmd = [sys.executable, str(cpfs), "--out", str(out / "cpfs_loss.json")]
            cmd += ["--batch", "4", "--repeats", "1"] if smoke else []
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
            return {
                "rc": done.returncode,
                "stdout": done.stdout[-4000:],
                "stderr": done.stderr[-2000:],
            }

        section("cpfs_loss", cpfs_loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-shards")
    make.add_argument("out", type=Path)
    make.add_argument("--pairs-per-clip", type=int, default=64)
    make.add_argument("--short-side", type=int, default=160)
    go = sub.add_parser("run")
    go.add_argument("--shards", default=None, help="index.json of lzf shards")
    go.add_argument("--out", required=True)
    go.add_argument("--steps", type=int, default=400)
    go.add_argument("--smoke", action="store_true", help="tiny sizes: check the script on CPU")
    args = parser.parse_args()
    if args.command == "make-shards":
        make_shards(args.out, args.pairs_per_clip, args.short_side)
    else:
        run(args)


if __name__ == "__main__":
    main()
