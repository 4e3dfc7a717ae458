"""Why does CMP not beat the nearest-guidance fill? Measured diagnostics on one shard set.

CMP (Zhan et al. 2019, Sec. 3.1) classifies each flow component into ``num_bins`` equal bins over
±``max_flow`` and decodes the softmax expectation. Parts (each a number in the JSON):

* ``stats`` — flow statistics of the TRAINING split (per-axis |dx|, |dy| and magnitude
  percentiles, full frames, no augmentation): what a data-scale ``max_flow`` is chosen from;
* ``floor`` — on the validation split, the EPE of decoding the one-hot true bins
  (``models.cmp.quantised_flow``: the limit of a perfect CE classifier) for each (bins, range)
  pair asked for, the EPE of the best stride-8 field upsampled bilinearly (the resolution the
  logits have; least squares, ``stride_floor``), beside the zero / guidance-mean /
  nearest-guidance baselines;
* ``checkpoint`` — a trained CMP checkpoint (loaded with ``weights_only=True``) on the validation
  split with its real guidance, guidance zeroed, and guidance shuffled between the images of a
  batch; EPE by region (motion boundaries, moving interiors, static pixels) for the model and
  the nearest fill, and at the guidance points themselves.

    python benchmarks/bench_cmp_diagnose.py \\
        --index /tmp/sci/results/science_clips/shards-dis_fast-masks/index.json \\
        --checkpoint /tmp/sci/results/pretrain/cmp/science/checkpoints/last.ckpt \\
        --bins 99:50 99:10 --out benchmarks/out/cmp_diagnose.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine_info import describe

from models.baselines import baseline_fills, nearest_guidance_fill
from models.cmp import _interp_matrix, bin_centres, predict_flow, quantised_flow
from models.data import ShardDataset, to_model_batch
from models.methods.cmp import CMPModule

PERCENTILES = (50, 90, 95, 99, 99.5, 99.9, 100)


def val_batches(index: str, crop: int, guidance: dict, batch_size: int) -> Iterator[dict]:
    """The validation batches the science run's CMP sees (centre crops, seed 0 guidance)."""
    dataset = ShardDataset(
        [index], split="val", view="cmp", crop_size=crop, flip=False, guidance=guidance, seed=0
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in loader:
        yield to_model_batch(batch)


def train_flow_stats(index: str) -> dict:
    """Percentiles of per-axis |flow| and magnitude over the valid pixels of the training split."""
    dataset = ShardDataset([index], split="train", view="s3", crop_size=(96, 128), augment=False)
    axes, mags = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        valid = item["valid"][0]
        flow = item["flow"][:, valid]  # (2, N)
        axes.append(flow.abs().reshape(-1))
        mags.append(flow.norm(dim=0))
    axis, mag = torch.cat(axes).numpy(), torch.cat(mags).numpy()
    pct = lambda a: {str(p): float(np.percentile(a, p)) for p in PERCENTILES}  # noqa: E731
    return {
        "samples": len(dataset),
        "pixels": int(mag.size),
        "axis_abs_px": pct(axis),
        "magnitude_px": pct(mag),
        "magnitude_mean_px": float(mag.mean()),
        "share_axis_abs_below_0.5px": float((axis < 0.5).mean()),
    }


def _epe_map(pred: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    return (pred.float() - flow.float()).square().sum(dim=1).sqrt()  # (B, H, W)


class Mean:
    """Pixel-weighted means of several named EPE maps over several named masks."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, name: str, epe: torch.Tensor, mask: torch.Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(epe[mask].sum())
        self.counts[name] = self.counts.get(name, 0.0) + float(mask.sum())

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / max(self.counts[k], 1.0) for k in self.sums}


def regions(flow: torch.Tensor, valid: torch.Tensor, edge_px: float = 0.5) -> dict:
    """Masks (B, H, W): ``boundary`` (within 2 px of a neighbour-to-neighbour flow jump above
    ``edge_px``), ``moving`` (|flow| > ``edge_px`` elsewhere), ``static`` (the rest)."""
    pad = F.pad(flow.float(), (1, 1, 1, 1), mode="replicate")
    jumps = torch.zeros_like(flow[:, 0], dtype=torch.float32)
    height, width = flow.shape[-2:]
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        shifted = pad[:, :, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        jumps = torch.maximum(jumps, (shifted - flow.float()).norm(dim=1))
    edge = (jumps > edge_px).float()[:, None]
    boundary = F.max_pool2d(edge, 5, stride=1, padding=2)[:, 0] > 0
    moving = (flow.float().norm(dim=1) > edge_px) & ~boundary
    static = ~boundary & ~moving
    return {
        k: m & valid for k, m in (("boundary", boundary), ("moving", moving), ("static", static))
    }


def stride_floor(flow: torch.Tensor, stride: int = 8) -> torch.Tensor:
    """The flow closest (least squares) to ``flow`` among stride-``stride`` fields upsampled
    bilinearly (align_corners=False), as CMP's logits are: R · (R⁺ F Cᵀ⁺) · Cᵀ per channel."""
    height, width = flow.shape[-2:]
    rows = _interp_matrix(height, height // stride, flow.float())
    cols = _interp_matrix(width, width // stride, flow.float())
    project_r = rows @ torch.linalg.pinv(rows)
    project_c = cols @ torch.linalg.pinv(cols)
    return project_r @ flow.float() @ project_c.T


def floor_part(index: str, crop: int, guidance: dict, bins: list[tuple[int, float]]) -> dict:
    mean = Mean()
    for batch in val_batches(index, crop, guidance, 8):
        flow, valid = batch["flow"], batch["valid"][:, 0]
        for num_bins, max_flow in bins:
            floor = quantised_flow(flow, num_bins, max_flow)
            mean.add(f"floor_{num_bins}bins_{max_flow:g}px", _epe_map(floor, flow), valid)
        mean.add("floor_stride8_least_squares", _epe_map(stride_floor(flow), flow), valid)
        for name, fill in baseline_fills(batch["sparse"]).items():
            mean.add(f"baseline_{name}", _epe_map(fill, flow), valid)
    return mean.result()


@torch.no_grad()
def checkpoint_part(
    checkpoint: str, index: str, crop: int, guidance: dict, tail_px: float = 8.8
) -> dict:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    module = CMPModule(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    model = module.model
    mean, guided = Mean(), Mean()
    for batch in val_batches(index, crop, guidance, 8):
        image, flow, sparse = batch["image"], batch["flow"], batch["sparse"]
        valid = batch["valid"][:, 0]
        variants = {
            "real": sparse,
            "zeroed": torch.zeros_like(sparse),
            "shuffled": sparse.roll(1, dims=0),
        }
        preds, logits = {}, {}
        for name, s in variants.items():
            logits[name] = model(image, s)
            preds[name] = predict_flow(
                logits[name], flow.shape[-2:], model.num_bins, model.max_flow
            )
            mean.add(f"model_{name}_guidance", _epe_map(preds[name], flow), valid)
        for name, decoded in decodings(logits["real"], model, tail_px).items():
            if name.startswith("tail_mass"):  # a probability per axis, not a flow
                mean.add(name, decoded.mean(dim=1), torch.ones_like(decoded[:, 0], dtype=bool))
            else:
                mean.add(f"decode_{name}", _epe_map(_up(decoded, flow), flow), valid)
        epe = {
            "model": _epe_map(preds["real"], flow),
            "nearest_fill": _epe_map(nearest_guidance_fill(sparse), flow),
            "zero": flow.float().norm(dim=1),
        }
        masks = regions(flow, valid)
        masks["all"] = valid
        for region, mask in masks.items():
            for name, epe_map in epe.items():
                mean.add(f"region_{region}/{name}", epe_map, mask)
            guided.add(f"share_{region}", mask.float(), valid)
        points = (sparse[:, 2] > 0) & valid
        mean.add("at_guidance_points/model", epe["model"], points)
        mean.add("at_guidance_points/zero", epe["zero"], points)
        diff = (preds["real"] - preds["zeroed"]).norm(dim=1)
        mean.add("real_vs_zeroed_prediction_change_px", diff, valid)
        guided.add(
            "guidance_points_per_image",
            points.sum(dim=(1, 2)).float(),
            torch.ones(points.shape[0], dtype=torch.bool),
        )
    out = mean.result()
    share = guided.result()
    out["region_share"] = {k.removeprefix("share_"): v for k, v in share.items() if "share" in k}
    out["guidance_points_per_image"] = share["guidance_points_per_image"]
    out["hyper_parameters"] = {k: ckpt["hyper_parameters"][k] for k in ("num_bins", "max_flow")}
    out["global_step"] = int(ckpt.get("global_step", -1))
    return out


def _up(flow: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(flow, size=like.shape[-2:], mode="bilinear", align_corners=False)


def decodings(logits: torch.Tensor, model: torch.nn.Module, tail_px: float) -> dict:
    """The stride-8 flow (B, 2, h, w) decoded three ways: the expectation (CMP's), the arg-max
    bin centre, and the expectation over only the bins within ±``tail_px`` (renormalised); and
    ``tail_mass``, the probability (B, 2, h, w) the model puts on bins beyond ±``tail_px``."""
    c = model.num_bins
    centres = bin_centres(c, model.max_flow).view(1, 1, c, 1, 1)
    probs = logits.float().view(logits.shape[0], 2, c, *logits.shape[-2:]).softmax(dim=2)
    near = (centres.abs() <= tail_px).float()
    truncated = probs * near
    return {
        "expectation": (probs * centres).sum(dim=2),
        "argmax": centres.view(-1)[probs.argmax(dim=2)],
        f"expectation_within_{tail_px:g}px": (truncated * centres).sum(dim=2)
        / truncated.sum(dim=2).clamp(min=1e-12),
        f"tail_mass_beyond_{tail_px:g}px": (probs * (1 - near)).sum(dim=2),
    }


def _bins(text: str) -> tuple[int, float]:
    num, rng = text.split(":")
    return int(num), float(rng)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", required=True, help="index.json of the shard set")
    p.add_argument("--checkpoint", action="append", default=[], help="CMP checkpoint(s)")
    p.add_argument("--bins", nargs="*", type=_bins, default=[(99, 50.0)], help="C:max_flow")
    p.add_argument("--parts", nargs="*", default=["stats", "floor", "checkpoint"])
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--kernel-size", type=int, default=21)
    p.add_argument("--grid-stride", type=int, default=50)
    p.add_argument("--out", default="benchmarks/out/cmp_diagnose.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    guidance = {"kernel_size": args.kernel_size, "grid_stride": args.grid_stride}
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    result["index"], result["guidance"] = args.index, guidance
    result["machine"] = describe()
    if "stats" in args.parts:
        result["train_flow_stats"] = train_flow_stats(args.index)
        print(json.dumps(result["train_flow_stats"], indent=1), flush=True)
    if "floor" in args.parts:
        result["val_floor_and_baselines"] = floor_part(args.index, args.crop, guidance, args.bins)
        print(json.dumps(result["val_floor_and_baselines"], indent=1), flush=True)
    if "checkpoint" in args.parts:
        result.setdefault("checkpoints", {})
        for path in args.checkpoint:
            result["checkpoints"][path] = checkpoint_part(path, args.index, args.crop, guidance)
            print(json.dumps(result["checkpoints"][path], indent=1), flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
