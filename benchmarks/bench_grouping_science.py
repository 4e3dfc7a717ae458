"""Science checks of S3 and CPFS on the layered synthetic set (exact flow), held-out frames.

* ``s3``: train ``S3Module`` with L = layers + 1 segments (affine loss by default) for at most
  ``--minutes``, then on held-out clips the mean over ground-truth layers of the IoU of the
  best-matching argmax segment (``models.methods.grouping_eval.best_match_iou``); issue 15 asks
  for >= 0.5 after <= 20 min on 2 CPU cores. A random-init network is scored alongside.
* ``cpfs``: train ``CPFSModule`` (CE loss) likewise, then the embedding margin (mean cosine within
  a layer minus across layers, ``embedding_margin``) on held-out frames, before and after.

Training is time-boxed (Lightning ``max_time``) and runs on this shared machine's CPU. JSON to
benchmarks/out/grouping_science.json (one key per method; a rerun of one method keeps the other).
Usage: python benchmarks/bench_grouping_science.py s3 --minutes 8 [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from models.methods.cpfs import CPFSModule
from models.methods.grouping_eval import best_match_iou, embedding_margin
from models.methods.s3 import S3Module
from models.methods.synthetic_layers import SyntheticLayersDataModule

OUT = Path(__file__).resolve().parent / "out" / "grouping_science.json"


@torch.no_grad()
def score(module: pl.LightningModule, method: str, dm: SyntheticLayersDataModule) -> dict:
    module.eval()
    values = []
    for sample in dm.val_set.samples:
        image = sample["image"][None]
        if method == "s3":
            labels = module(image)[0].argmax(0)
            values.append(float(best_match_iou(labels, sample["layers"])))
        else:
            emb = module.model.embed_dense(image)[0]
            values.append(float(embedding_margin(emb, sample["layers"])))
    module.train()
    finite = [v for v in values if math.isfinite(v)]
    name = "mean_best_match_iou" if method == "s3" else "mean_margin"
    return {
        name: sum(finite) / max(len(finite), 1),
        "frames": len(finite),
        "positive_fraction": sum(v > 0 for v in finite) / max(len(finite), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("method", choices=("s3", "cpfs"))
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--train-clips", type=int, default=24)
    parser.add_argument("--val-clips", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--losses", default="affine")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    pl.seed_everything(0)
    dm = SyntheticLayersDataModule(
        view=args.method,
        train_clips=args.train_clips,
        val_clips=args.val_clips,
        frames_per_clip=12,
        size=(args.size, args.size),
        objects=args.objects,
        batch_size=8,
        seed=100,
    )
    dm.setup()
    if args.method == "s3":
        module = S3Module(
            backbone=args.backbone,
            num_segments=args.objects + 2,  # layers = background + objects; L = layers + 1
            losses=args.losses.split(","),
            lr=args.lr,
        )
    else:
        module = CPFSModule(backbone=args.backbone, num_pixels=256, lr=args.lr)
    before = score(module, args.method, dm)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_time={"minutes": args.minutes},
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    after = score(module, args.method, dm)
    result = {
        "settings": {
            **vars(args),
            "out": str(args.out),
            "steps": trainer.global_step,
            "train_seconds": time.perf_counter() - start,
            "threads": torch.get_num_threads(),
        },
        "random_init": before,
        "trained": after,
    }
    if args.method == "cpfs":
        result["sigma2"] = float(module.log_sigma2.exp())
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[args.method] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(previous, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
