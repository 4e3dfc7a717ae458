"""Science checks of S3 and CPFS on the layered synthetic set (exact flow), held-out frames.

* ``s3``: train ``S3Module`` with L = layers + 1 segments (layers = background + ``--objects``;
  affine + low-entropy losses, histogram to 8 px: the settings chosen on the selection split, see
  docs/CPFS_S3.md) for at most ``--minutes``, then score the mean over ground-truth layers of the IoU of the
  best-matching argmax segment (``models.methods.grouping_eval.best_match_iou``); issue 15 asks
  for >= 0.5 after <= 20 min on 2 CPU cores. Beside it: the same network at random init, a
  constant segmentation (one label everywhere: each layer's IoU is its share of the frame), the
  argmax segments' pixel shares (collapse check), and the S3 loss of the trained segments against
  the ground-truth layers (0 for the affine loss: the synthetic flow is exactly affine per layer)
  and one segment.
* ``cpfs``: train ``CPFSModule`` (CE loss) likewise, then the embedding margin (mean cosine within
  a layer minus across layers, ``embedding_margin``) before and after.

Three disjoint sets of clips (different seeds): ``train`` (seeds 100..), ``select`` (the next
``--select-clips`` seeds: a validation split of the training clips, never trained on, used to
choose settings and to draw the learning curve of ``--score-every``) and ``test`` (seeds from
10000, never trained on and not looked at while choosing settings: the reported figure). Pass
``--test-clips 0`` for exploratory runs.

Training is time-boxed (Lightning ``max_time``, optionally ``--max-steps``) on the CPU with
``--threads`` threads; Adam at a constant lr, or with ``--lr-schedule cosine`` decayed to 0 by the
end of the box (whichever of the time box and ``--max-steps`` ends first). JSON to ``--out``
(default benchmarks/out/grouping_science.json, one key per method; a rerun of one method keeps the
other).
Usage: python benchmarks/bench_grouping_science.py s3 --minutes 18 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from models.methods.cpfs import CPFSModule
from models.methods.grouping_eval import best_match_iou, embedding_margin
from models.methods.s3 import S3Module, s3_loss
from models.methods.synthetic_layers import SyntheticLayersDataModule, layer_samples

OUT = Path(__file__).resolve().parent / "out" / "grouping_science.json"
TRAIN_SEED = 100
TEST_SEED = 10_000


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / max(len(finite), 1)


@torch.no_grad()
def score(module: pl.LightningModule, method: str, samples: list[dict]) -> dict:
    """S3: mean best-match IoU and argmax shares; CPFS: mean embedding margin; over ``samples``."""
    module.eval()
    values, shares = [], []
    for sample in samples:
        image = sample["image"][None]
        if method == "s3":
            labels = module(image)[0].argmax(0)
            values.append(float(best_match_iou(labels, sample["layers"])))
            counts = torch.bincount(labels.flatten(), minlength=module.hparams.num_segments)
            shares.append(counts.float() / labels.numel())
        else:
            emb = module.model.embed_dense(image)[0]
            values.append(float(embedding_margin(emb, sample["layers"])))
    module.train()
    finite = [v for v in values if math.isfinite(v)]
    name = "mean_best_match_iou" if method == "s3" else "mean_margin"
    out = {
        name: _mean(values),
        "frames": len(finite),
        "positive_fraction": sum(v > 0 for v in finite) / max(len(finite), 1),
    }
    if shares:  # sorted largest first: one share near 1 means the segments collapsed
        out["argmax_shares"] = sorted(torch.stack(shares).mean(0).tolist(), reverse=True)
    return out


@torch.no_grad()
def s3_references(module: S3Module, samples: list[dict]) -> dict:
    """The constant segmentation's IoU, and the mean S3 loss of the trained segments, of the
    ground-truth layers (one-hot) and of one segment covering the frame."""
    hp = module.hparams
    kwargs = {"losses": tuple(hp.losses), "weights": hp.loss_weights}
    module.eval()
    rows: dict[str, list[float]] = {"trained": [], "ground_truth": [], "one_segment": []}
    iou = []
    for sample in samples:
        flow, layers = sample["flow"][None], sample["layers"]
        segments = module(sample["image"][None])
        truth = torch.nn.functional.one_hot(layers.clamp(max=hp.num_segments - 1), hp.num_segments)
        truth = truth.permute(2, 0, 1)[None].float()
        one = torch.zeros_like(truth)
        one[:, 0] = 1.0
        for key, seg in (("trained", segments), ("ground_truth", truth), ("one_segment", one)):
            rows[key].append(float(s3_loss(seg, flow, **kwargs)["total"]))
        iou.append(float(best_match_iou(torch.zeros_like(layers), layers)))
    module.train()
    return {
        "constant_segment": {"mean_best_match_iou": _mean(iou), "frames": len(iou)},
        "loss": {key: _mean(values) for key, values in rows.items()},
    }


class SelectCurve(pl.Callback):
    """Every ``every`` steps, the score on the selection split (never the test split)."""

    def __init__(self, method: str, samples: list[dict], every: int) -> None:
        self.method, self.samples, self.every = method, samples, every
        self.points: list[dict] = []
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
            point = {"step": trainer.global_step, "seconds": time.perf_counter() - self.start}
            point |= score(module, self.method, self.samples)
            self.points.append(point)
            print(json.dumps(point), flush=True)


class CosineBox(pl.Callback):
    """``--lr-schedule cosine``: lr = base · ½(1 + cos(π p)) before each step, p the larger of the
    fractions of the time box and of ``max_steps`` used, so the lr reaches 0 as the box ends."""

    def __init__(self, minutes: float, max_steps: int) -> None:
        self.seconds, self.max_steps = 60.0 * minutes, max_steps
        self.start = time.perf_counter()

    def on_train_start(self, trainer, module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        progress = (time.perf_counter() - self.start) / self.seconds
        if self.max_steps > 0:
            progress = max(progress, trainer.global_step / self.max_steps)
        factor = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        for optimiser in trainer.optimizers:
            for group in optimiser.param_groups:
                group["lr"] = float(module.hparams.lr) * factor


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("method", choices=("s3", "cpfs"))
    parser.add_argument("--minutes", type=float, default=18.0, help="training wall-time box")
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--objects", type=int, default=2, help="moving objects per clip")
    parser.add_argument("--train-clips", type=int, default=48)
    parser.add_argument("--select-clips", type=int, default=4)
    parser.add_argument("--test-clips", type=int, default=4)
    parser.add_argument("--frames-per-clip", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--losses", default="affine,entropy", help="comma-separated S3 losses")
    parser.add_argument("--loss-weights", default="", help="e.g. entropy=0.1")
    parser.add_argument("--max-magnitude", type=float, default=8.0, help="S3 histogram range px")
    parser.add_argument("--num-pixels", type=int, default=256, help="CPFS P")
    parser.add_argument("--score-every", type=int, default=0, help="selection-split curve")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args()


def build_module(args: argparse.Namespace) -> pl.LightningModule:
    if args.method == "s3":
        weights = dict(kv.split("=") for kv in args.loss_weights.split(",") if kv)
        return S3Module(
            backbone=args.backbone,
            num_segments=args.objects + 2,  # layers = background + objects; L = layers + 1
            losses=args.losses.split(","),
            loss_weights={k: float(v) for k, v in weights.items()},
            max_magnitude=args.max_magnitude,
            lr=args.lr,
        )
    return CPFSModule(backbone=args.backbone, num_pixels=args.num_pixels, lr=args.lr)


def evaluate(module: pl.LightningModule, method: str, samples: list[dict]) -> dict:
    out = {"trained": score(module, method, samples)}
    if method == "s3":
        out |= s3_references(module, samples)
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    wall, load_start = time.perf_counter(), os.getloadavg()
    pl.seed_everything(0)
    dm = SyntheticLayersDataModule(
        view=args.method,
        train_clips=args.train_clips,
        val_clips=args.select_clips,
        frames_per_clip=args.frames_per_clip,
        size=(args.size, args.size),
        objects=args.objects,
        batch_size=args.batch_size,
        seed=TRAIN_SEED,
    )
    dm.setup()
    splits = {"select": list(dm.val_set.samples)}
    test: list[dict] = []
    for seed in range(TEST_SEED, TEST_SEED + args.test_clips):
        frames, size = args.frames_per_clip, (args.size, args.size)
        test += layer_samples(seed, args.method, frames=frames, size=size, objects=args.objects)
    if test:
        splits["test"] = test
    module = build_module(args)
    random_init = {name: score(module, args.method, s) for name, s in splits.items()}
    curve = SelectCurve(args.method, splits["select"], args.score_every)
    cosine = args.lr_schedule == "cosine"
    trainer = pl.Trainer(
        accelerator="cpu",
        max_time={"minutes": args.minutes},
        max_steps=args.max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[curve] + ([CosineBox(args.minutes, args.max_steps)] if cosine else []),
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_seconds = time.perf_counter() - start
    result: dict = {
        "settings": {**vars(args), "out": str(args.out), "train_seed": TRAIN_SEED},
        "steps": trainer.global_step,
        "train_seconds": train_seconds,
        "cpu_seconds": time.process_time(),
        "threads": torch.get_num_threads(),
        "load_average_start_end": [load_start, os.getloadavg()],
    }
    for name, samples in splits.items():
        result[name] = {"random_init": random_init[name], **evaluate(module, args.method, samples)}
    if args.method == "cpfs":
        result["sigma2"] = float(module.log_sigma2.exp())
    result["select_curve"] = curve.points
    result["wall_seconds"] = time.perf_counter() - wall
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[args.method] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(previous, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "select_curve"}, indent=2))


if __name__ == "__main__":
    main()
