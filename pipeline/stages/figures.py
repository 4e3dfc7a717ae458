"""Per-set report figures: a folder of hard links to some videos' figures, per stage.

Since the per-video stages run a job per chunk of videos (``pipeline.stages.chunk``), each video's
figure (flow contact sheet, mask overlay, guidance arrows) is a file the chunk job writes but no
rule declares, so ``snakemake --report`` cannot show it. This stage gathers, for one set, the
figures of the first ``limit`` videos (sorted by video id, from the chunk manifests) into one
folder as ``<video_id>.png``, which the rule declares as ``report(directory(...), patterns=...)``.

Hard links cost no disk; where the folder is on another file system the figure is copied. The
folder is built under a temporary name and renamed into place (``pipeline.atomic.atomic_dir``), so
a killed job never leaves a half-filled one. Videos whose figure does not exist (a video the stage dropped) are
skipped, and counted in the log line.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from pipeline import atomic
from pipeline.stages.chunk import manifest_rows

log = logging.getLogger(__name__)


def figure_paths(manifests: Sequence[str | Path], column: str) -> list[tuple[str, Path]]:
    """``(video_id, figure path)`` of every row of the manifests, sorted by video id."""
    return [(row["video_id"], Path(row[column])) for row in manifest_rows(manifests, column)]


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def collect_figures(
    manifests: Sequence[str | Path], column: str, out_dir: str | Path, limit: int
) -> tuple[int, int]:
    """Fill ``out_dir`` with ``<video_id>.png`` for the first ``limit`` videos that have a figure.

    Returns ``(gathered, missing)``: figures put in the folder, and videos (among those looked at)
    whose figure file does not exist.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    gathered = missing = 0
    with atomic.atomic_dir(out_dir) as tmp:
        for video_id, path in figure_paths(manifests, column):
            if gathered == limit:
                break
            if not path.is_file():
                missing += 1
                continue
            _link_or_copy(path, tmp / f"{video_id}{path.suffix}")
            gathered += 1
    return gathered, missing


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--column", required=True, help="manifest column naming each video's figure")
    p.add_argument("--limit", type=int, required=True, help="videos shown per set (first by id)")
    p.add_argument("--out", required=True, help="folder to fill with <video_id>.png")
    p.add_argument("manifests", nargs="+", help="the stage's chunk manifests (*.chunk.tsv)")


def run(args: argparse.Namespace) -> int:
    gathered, missing = collect_figures(args.manifests, args.column, args.out, args.limit)
    log.info(
        "%d figures gathered into %s (limit %d; %d videos without a figure skipped)",
        gathered,
        args.out,
        args.limit,
        missing,
    )
    return 0
