"""Synthesize stage: render one synthetic video and its ground truth (see pipeline.synthetic)."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from pipeline.synthetic_io import write_synthetic_video

log = logging.getLogger(__name__)


def video_seed(set_seed: int, index: int) -> int:
    """Seed of one video: independent streams per (set seed, index), stable across runs."""
    return int(np.random.SeedSequence([int(set_seed), int(index)]).generate_state(1)[0])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=int, required=True, help="video number within the set")
    p.add_argument("--seed", type=int, required=True, help="the set's seed")
    p.add_argument("--params", required=True, help="the config's synthetic section as JSON")
    p.add_argument("--out-video", required=True)
    p.add_argument("--out-gt", required=True)


def run(args: argparse.Namespace) -> int:
    params = json.loads(args.params)
    summary = write_synthetic_video(
        args.out_video, args.out_gt, seed=video_seed(args.seed, args.index), **params
    )
    log.info("wrote %s: %s", args.out_video, summary)
    return 0
