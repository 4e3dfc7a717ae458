"""Shards stage: pack a video set's loose stage outputs into HDF5 shards (pipeline.shards).

Gathers, per video, the flow stage's folder (frames + flow PNGs + pairs.tsv), the masks stage's
folder (soft masks, trimaps, kept frames) and the guidance file, and writes ``shard-NNNNN.h5``
files plus ``index.json`` with the train / validation split by video. ``shards-chunk`` packs one
chunk of a set's videos and ``shards-index`` writes the set's ``index.json`` from its chunks
(``pipeline.shards.chunked``; what the workflow runs: an added video repacks its chunk only).
``validate-shards`` re-reads every sample and exits non-zero on any corrupt one.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.fields import FIELD_STAGE
from pipeline.shards.chunked import write_chunk_shards, write_set_index
from pipeline.shards.loose import VideoInput
from pipeline.shards.reader import read_index
from pipeline.shards.validate import main_validate
from pipeline.shards.writer import write_shards

log = logging.getLogger(__name__)


def video_inputs(
    video_ids: list[str], flow_root: Path, masks_root: Path | None, guidance_root: Path | None
) -> list[VideoInput]:
    """Where each video's loose outputs live; a part that does not exist is left out.

    Videos without a single stored pair (rejected upstream, with their reasons in rejected.tsv and
    dropped.tsv) are left out, so they cannot take a place in the validation split.
    """
    inputs = []
    for vid in video_ids:
        pairs = flow_root / vid / "pairs.tsv"
        if len(pairs.read_text(encoding="utf-8").splitlines()) < 2:
            log.info("%s: no stored pair, not packed", vid)
            continue
        masks = (
            masks_root / vid if masks_root and (masks_root / vid / "frames.tsv").exists() else None
        )
        guidance = guidance_root / f"{vid}.npz" if guidance_root else None
        inputs.append(
            VideoInput(
                vid, flow_root / vid, masks, guidance if guidance and guidance.exists() else None
            )
        )
    return inputs


def sample_counts(index_paths: list[str | Path]) -> list[dict[str, Any]]:
    """Per shard set: distinct training / validation samples and videos, from its index.json
    (the shard stage prints them; every training run records them)."""
    counts = []
    for path in index_paths:
        splits = read_index(path)["splits"]
        counts.append(
            {
                "index": str(path),
                "train_samples": int(splits["train"]["n_samples"]),
                "train_videos": len(splits["train"]["videos"]),
                "val_samples": int(splits["val"]["n_samples"]),
                "val_videos": len(splits["val"]["videos"]),
            }
        )
    return counts


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The loose-file roots and settings both packing commands read."""
    p.add_argument("--flow-root", required=True, help="the set's flow-{method} folder")
    p.add_argument("--masks-root", default=None, help="the set's masks folder (masks packed)")
    p.add_argument("--guidance-root", default=None, help="the set's guidance folder (packed)")
    p.add_argument("--params", required=True, help="the config's shards section as JSON")
    p.add_argument("--flow-method", required=True)


def _videos(args: argparse.Namespace) -> list:
    """The videos named on the command line, with their loose files under the given roots."""
    masks = Path(args.masks_root) if args.masks_root else None
    guidance = Path(args.guidance_root) if args.guidance_root else None
    return video_inputs(args.video_ids, Path(args.flow_root), masks, guidance)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_ids", nargs="+", help="ids of the set's videos")
    _add_input_arguments(p)
    p.add_argument(
        "--config-json",
        required=True,
        help="the resolved config that shapes the data, kept in index.json",
    )
    p.add_argument("--out-dir", required=True)


def run(args: argparse.Namespace) -> int:
    cfg = json.loads(args.params)
    videos = _videos(args)
    index = write_shards(
        videos,
        args.out_dir,
        target_mb=cfg["target_mb"],
        val_fraction=cfg["val_fraction"],
        seed=cfg["seed"],
        layout=cfg["layout"],
        array_compression=cfg["array_compression"],
        tile_size=cfg["tile_size"],
        config=json.loads(args.config_json),
        flow_method=args.flow_method,
    )
    log.info(
        "packed %s", {k: v for k, v in index.items() if k not in ("shards", "config", "rejected")}
    )
    # the figure that says whether pretraining can overfit: index.json records it too
    (counts,) = sample_counts([Path(args.out_dir) / "index.json"])
    print(
        f"distinct training samples: {counts['train_samples']} from {counts['train_videos']} "
        f"videos; validation samples: {counts['val_samples']} from {counts['val_videos']} videos",
        flush=True,
    )
    return 0


def add_chunk_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_ids", nargs="*", help="ids of the chunk's videos")
    _add_input_arguments(p)
    p.add_argument("--out-dir", required=True, help="the chunk's folder of shards")


def run_chunk(args: argparse.Namespace) -> int:
    cfg = json.loads(args.params)
    videos = _videos(args)
    roots = (("masks", args.masks_root), ("guidance", args.guidance_root))
    stages = {"flow"} | {name for name, root in roots if root}
    chunk = write_chunk_shards(
        videos,
        args.out_dir,
        fields=[f for f, stage in FIELD_STAGE.items() if stage in stages],
        target_mb=cfg["target_mb"],
        layout=cfg["layout"],
        array_compression=cfg["array_compression"],
        tile_size=cfg["tile_size"],
        flow_method=args.flow_method,
    )
    n = sum(s["n_samples"] for s in chunk["shards"])
    print(f"packed {n} samples of {len(videos)} videos into {len(chunk['shards'])} shards")
    return 0


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("chunk_dirs", nargs="+", help="the set's chunk folders (chunk.json inside)")
    p.add_argument("--params", required=True, help="the config's shards section as JSON")
    p.add_argument(
        "--config-json",
        required=True,
        help="the resolved config that shapes the data, kept in index.json",
    )
    p.add_argument("--out-dir", required=True, help="the set's shard folder (index.json)")


def run_index(args: argparse.Namespace) -> int:
    cfg = json.loads(args.params)
    write_set_index(
        args.chunk_dirs,
        args.out_dir,
        val_fraction=cfg["val_fraction"],
        seed=cfg["seed"],
        config=json.loads(args.config_json),
    )
    (counts,) = sample_counts([Path(args.out_dir) / "index.json"])
    print(
        f"distinct training samples: {counts['train_samples']} from {counts['train_videos']} "
        f"videos; validation samples: {counts['val_samples']} from {counts['val_videos']} videos",
        flush=True,
    )
    return 0


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shard_dir", help="folder holding index.json and shard-NNNNN.h5")


def run_validate(args: argparse.Namespace) -> int:
    return main_validate([args.shard_dir])
