"""``python -m pipeline <stage> ...`` — the one entry point the Snakemake rules call.

Each stage module provides ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only when their stage is run, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# stage name -> (module, add_arguments, run, one-line help)
STAGES: dict[str, tuple[str, str, str, str]] = {
    "synthesize": ("pipeline.stages.synthesize", "add_arguments", "run", "generate one synthetic video with ground truth"),
    "ingest": ("pipeline.stages.ingest", "add_arguments", "run", "probe one video by decoding it"),
    "manifest": ("pipeline.stages.ingest", "add_manifest_arguments", "run_manifest", "gather ingest records into videos.tsv / rejected.tsv"),
    "shots": ("pipeline.stages.shots", "add_arguments", "run", "split one video into shots"),
    "shots-summary": ("pipeline.stages.shots", "add_summary_arguments", "run_summary", "per-set shot table (+ cut F1 on synthetic ground truth)"),
    "flow": ("pipeline.stages.flow", "add_arguments", "run", "sample pairs of one video, compute and store optical flow"),
    "flow-summary": ("pipeline.stages.flow", "add_summary_arguments", "run_summary", "per-set count of kept and dropped pairs (validity floor, other reasons)"),
    "masks": ("pipeline.stages.masks", "add_arguments", "run", "uNLC motion masks and trimaps for one video"),
    "evaluate-masks": ("pipeline.stages.masks", "add_evaluate_arguments", "run_evaluate", "mask IoU / precision / recall against ground truth"),
    "mask-quality": ("pipeline.stages.masks", "add_collect_arguments", "run_collect", "gather every set's mask evaluation into one table"),
    "guidance": ("pipeline.stages.guidance", "add_arguments", "run", "CMP watershed guidance points for one video"),
    "guidance-stats": ("pipeline.stages.guidance", "add_stats_arguments", "run_stats", "per-set guidance statistics"),
    "shards": ("pipeline.stages.shards", "add_arguments", "run", "pack a video set into HDF5 shards"),
    "shards-chunk": ("pipeline.stages.shards", "add_chunk_arguments", "run_chunk", "pack one chunk of a set's videos into HDF5 shards"),
    "shards-index": ("pipeline.stages.shards", "add_index_arguments", "run_index", "write a set's index.json (train / val split by video) from its chunks"),
    "validate-shards": ("pipeline.stages.shards", "add_validate_arguments", "run_validate", "re-read and check every sample of a shard folder"),
    "chunk": ("pipeline.stages.chunk", "add_arguments", "run", "run a per-video stage over every video of a chunk"),
    "figures": ("pipeline.stages.figures", "add_arguments", "run", "gather some videos' figures of a stage into one folder for the report"),
    "disk-usage": ("pipeline.stages.chunk", "add_usage_arguments", "run_usage", "bytes and seconds per stage of a set, from its chunk manifests"),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", description="motion-ssl pipeline stages"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--expand-chunks",
        metavar="COLUMN",
        default=None,
        help="replace each *.chunk.tsv argument by that column of its rows (per-set stages)",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, (_, _, _, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # first pass: find the stage; its own parser handles the rest
    known, rest = parser.parse_known_args(argv)
    if known.stage is None:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if known.expand_chunks:
        from pipeline.stages.chunk import expand_manifests

        rest = expand_manifests(rest, known.expand_chunks)
    return run_stage(known.stage, rest)


def run_stage(stage: str, argv: list[str]) -> int:
    """Parse ``argv`` with the stage's own parser and run it (also called once per video by
    ``pipeline.stages.chunk``)."""
    module_name, add_name, run_name, help_text = STAGES[stage]
    module = importlib.import_module(module_name)
    stage_parser = argparse.ArgumentParser(
        prog=f"python -m pipeline {stage}", description=help_text
    )
    getattr(module, add_name)(stage_parser)
    args = stage_parser.parse_args(argv)
    return int(getattr(module, run_name)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
