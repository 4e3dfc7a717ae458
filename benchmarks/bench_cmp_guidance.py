"""Is the guidance used? CMP trained with watershed guidance vs the same model with none.

Trains the same model twice for the same steps on the same shards and seed: once with CMP's
guidance points (Zhan et al. 2019, 3.2), once with the sparse input zeroed — Walker et al.'s
setting, predicting flow from the image alone. If the decoder propagates the guidance, the
guided model's end-point error on the validation split is clearly lower. Writes
benchmarks/out/cmp_guidance.json.

    python benchmarks/bench_cmp_guidance.py --index results/synthetic/shards-dis_fast/index.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from models.data import CMPDataModule
from models.train import fit, load_run_config


class ZeroGuidanceCMPDataModule(CMPDataModule):
    """CMPDataModule whose sparse guidance input is all zeros (no points)."""

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        batch["sparse"] = torch.zeros_like(batch["sparse"])
        return batch


def final_val_epe(run_dir: Path) -> float:
    rows = []
    for metrics in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(metrics, newline="") as f:
            rows += [r for r in csv.DictReader(f) if r.get("val/epe")]
    return float(rows[-1]["val/epe"])


def train(index: str, out: Path, *, guided: bool, steps: int, crop: int, seed: int) -> dict:
    factory = "models.data.CMPDataModule" if guided else "__main__.ZeroGuidanceCMPDataModule"
    config = load_run_config(
        None,
        [
            f"output_dir={out}",
            f"seed={seed}",
            "model.backbone=resnet18",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}",
            f"trainer.checkpoint_every_n_steps={steps}",
            "trainer.log_every_n_steps=10",
            "trainer.num_sanity_val_steps=0",
            "figures.enabled=false",
            f"data.factory={factory}",
            "data.kwargs="
            + json.dumps(
                {
                    "index_paths": [index],
                    "crop_size": crop,
                    "batch_size": 8,
                    "num_workers": 0,
                    "seed": seed,
                    "guidance": {"kernel_size": 31, "grid_stride": 75},
                }
            ),  # fmt: skip
        ],
    )
    start = time.perf_counter()
    fit(config)
    return {"val_epe": final_val_epe(out), "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", required=True, help="index.json of a shard set")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/cmp_guidance.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            name: train(
                args.index,
                Path(tmp) / name,
                guided=guided,
                steps=args.steps,
                crop=args.crop,
                seed=args.seed,
            )  # fmt: skip
            for name, guided in (("guided", True), ("zero_guidance", False))
        }
    result["setup"] = vars(args) | {"backbone": "resnet18", "batch_size": 8, "threads": 1}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"val EPE guided {result['guided']['val_epe']:.3f} px, "
          f"zero guidance {result['zero_guidance']['val_epe']:.3f} px")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
