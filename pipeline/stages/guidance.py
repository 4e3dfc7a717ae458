"""Guidance stage: CMP watershed + grid guidance points for every stored flow of one video.

Follows Zhan et al. 2019, section 3.2 (pipeline.guidance holds the sampler). These offline points
are what the report and interactive tools show; training samples its own points online, after
augmentation, with the same function. Writes ``results/{set}/guidance-{method}-K{K}G{G}/{vid}.npz``
(layout in docs/CONTRACTS.md) and a picture of the points as arrows over a few frames and their
flow colour wheels. ``run_stats`` gathers a set's point counts (mean, median, per 384² image).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline import atomic
from pipeline.flowio import read_flow_png
from pipeline.guidance import guidance_stats, guidance_vectors, sample_guidance
from pipeline.sampling import rng_for
from pipeline.viz import draw_guidance_arrows, flow_to_color, save_png, text_card

log = logging.getLogger(__name__)


def sampler_params(guidance_cfg: dict) -> dict:
    """The keyword arguments of pipeline.guidance.sample_guidance from the config section."""
    keys = (
        "kernel_size",
        "grid_stride",
        "edge_threshold",
        "edge_floor",
        "max_points",
        "downsample",
    )
    return {k: guidance_cfg[k] for k in keys}


def video_guidance(pairs_tsv: Path, guidance_cfg: dict, *, progress: bool = True) -> dict:
    """Guidance points of every pair in a flow stage's pairs.tsv, packed as in CONTRACTS.md."""
    rows = atomic.read_tsv(pairs_tsv)
    params = sampler_params(guidance_cfg)
    ids, offsets, points, vectors, n_ws, n_grid, shapes = [], [0], [], [], [], [], []
    for row in tqdm(
        rows, desc=f"guidance {pairs_tsv.parent.name}", mininterval=2.0, disable=not progress
    ):
        flow, valid = read_flow_png(pairs_tsv.parent / row["flow"])
        flow = np.where(valid[..., None], flow, 0.0).astype(np.float32)
        rng = rng_for(guidance_cfg["seed"], row["sample_id"])
        found = sample_guidance(flow, rng=rng, valid=valid, **params)
        ids.append(row["sample_id"])
        points.append(found.points)
        vectors.append(guidance_vectors(flow, found.points))
        offsets.append(offsets[-1] + len(found.points))
        n_ws.append(found.n_watershed)
        n_grid.append(found.n_grid)
        shapes.append(flow.shape[:2])
    return {
        "sample_ids": np.array(ids, dtype=str),
        "offsets": np.array(offsets, dtype=np.int64),
        "points": np.concatenate(points).astype(np.int32) if points else np.zeros((0, 2), np.int32),
        "vectors": np.concatenate(vectors).astype(np.float32)
        if vectors
        else np.zeros((0, 2), np.float32),
        "n_watershed": np.array(n_ws, dtype=np.int32),
        "n_grid": np.array(n_grid, dtype=np.int32),
        "shapes": np.array(shapes, dtype=np.int32).reshape(-1, 2),
    }


def guidance_figure(pairs_tsv: Path, packed: dict, *, max_magnitude: float, n: int) -> np.ndarray:
    """Rows of (frame with arrows | flow colour wheel with arrows) for up to ``n`` pairs."""
    rows = atomic.read_tsv(pairs_tsv)
    if not rows:
        return text_card("no flow pairs for this video", width=480)
    picks = np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)
    panels = []
    for i in sorted(set(picks.tolist())):
        row = rows[i]
        frame = cv2.cvtColor(cv2.imread(str(pairs_tsv.parent / row["frame"])), cv2.COLOR_BGR2RGB)
        flow, _ = read_flow_png(pairs_tsv.parent / row["flow"])
        pts = packed["points"][packed["offsets"][i] : packed["offsets"][i + 1]]
        vec = packed["vectors"][packed["offsets"][i] : packed["offsets"][i + 1]]
        left = draw_guidance_arrows(frame, pts, vec, color=(255, 255, 0), thickness=2)
        right = draw_guidance_arrows(flow_to_color(flow, max_magnitude), pts, vec, thickness=2)
        panels.append(
            np.concatenate([left, np.full((left.shape[0], 4, 3), 255, np.uint8), right], 1)
        )
    width = max(p.shape[1] for p in panels)
    padded = [
        np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels
    ]
    return np.concatenate(padded, 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="the flow stage's pairs.tsv of the video")
    p.add_argument("--params", required=True, help="the config's guidance section as JSON")
    p.add_argument("--viz-max-magnitude", type=float, required=True)
    p.add_argument("--out", required=True, help=".npz to write")
    p.add_argument("--figure", required=True, help="PNG of guidance arrows")


def run(args: argparse.Namespace) -> int:
    cfg = json.loads(args.params)
    pairs = Path(args.pairs)
    packed = video_guidance(pairs, cfg)
    save_png(
        args.figure,
        guidance_figure(pairs, packed, max_magnitude=args.viz_max_magnitude, n=cfg["figure_pairs"]),
    )
    with atomic.atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **packed)
    log.info(
        "%s: %d pairs, %d points",
        pairs.parent.name,
        len(packed["sample_ids"]),
        len(packed["points"]),
    )
    return 0


def add_stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("npz", nargs="+", help="per-video guidance files")
    p.add_argument("--out", required=True, help="statistics JSON")


def run_stats(args: argparse.Namespace) -> int:
    counts, shapes = [], []
    for path in args.npz:
        with np.load(path) as data:
            counts.extend(zip(data["n_watershed"].tolist(), data["n_grid"].tolist(), strict=True))
            shapes.extend(data["shapes"].tolist())
    stats = guidance_stats(counts, shapes) if counts else {"images": 0}
    atomic.write_json(args.out, stats)
    log.info("guidance statistics: %s", stats)
    return 0
