"""Shots stage: split one video into shots with the configured detector (pipeline.shots).

Decodes the video once, streaming frames into the detector, and writes
``results/{set}/shots/{video_id}.json`` with [start, end) shots, the cuts, per-shot stats and the
shots dropped as too short, each with its reason. A video rejected upstream, or one the detector
cannot handle, still gets a JSON (``status: rejected`` + reason) so the DAG completes.
``run_summary`` gathers a set's shots into ``shots.tsv`` and, where a clip has ground-truth cuts
(the synthetic set), scores the cuts (F1 within ±2 frames).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import atomic
from pipeline.shots import cut_f1, detect_boundaries, scores_from_counts, shots_from_cuts
from pipeline.video import VideoError, iter_frames

log = logging.getLogger(__name__)


def ground_truth_path(video_path: str | Path) -> Path:
    """Where a clip's ground truth lives when it has any (the synthetic generator's convention)."""
    return Path(video_path).with_suffix(".gt.npz")


def split_video(record: dict, params: dict, *, progress: bool = True) -> dict:
    """Shots of the video described by an ingest ``record`` under the ``shots`` config section."""
    out = {"video_id": record["video_id"], "set": record.get("set"), "method": params["method"]}
    if record.get("status") != "ok":
        return {**out, "status": "rejected", "reason": f"ingest: {record.get('reason', '')}"}
    method = params["method"]
    frames = (
        frame
        for _, frame in tqdm(
            iter_frames(record["path"]),
            total=record["frames"],
            desc=f"shots {record['video_id']}",
            unit="frame",
            mininterval=2.0,
            disable=not progress,
        )
    )
    try:
        found = detect_boundaries(frames, method=method, **params.get(method, {}))
        n_frames = int(found["n_frames"])
        shots, dropped = shots_from_cuts(
            found["cuts"], n_frames, min_len=params["min_len"], scores=found.get("scores")
        )
    except (ValueError, VideoError) as err:  # a missing optional package is not the video's fault
        return {**out, "status": "rejected", "reason": f"shots: {err}"}
    status = "ok" if shots else "rejected"
    reason = "" if shots else f"no shot of at least {params['min_len']} frames"
    return {
        **out,
        "status": status,
        "reason": reason,
        "frames": n_frames,
        "cuts": [int(c) for c in found["cuts"]],
        "shots": shots,
        "dropped": dropped,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record", required=True, help="the video's ingest JSON")
    p.add_argument("--params", required=True, help="the config's shots section as JSON")
    p.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> int:
    record = json.loads(Path(args.record).read_text(encoding="utf-8"))
    result = split_video(record, json.loads(args.params))
    if result["status"] == "ok":
        log.info(
            "%s: %d shots, %d dropped",
            record["video_id"],
            len(result["shots"]),
            len(result["dropped"]),
        )
    else:
        log.warning("%s rejected: %s", record["video_id"], result["reason"])
    atomic.write_json(args.out, result)
    return 0


SUMMARY_COLUMNS = ["video_id", "status", "reason", "frames", "n_shots", "n_dropped", "cuts"]


def summarise(results: list[dict], records: list[dict], *, tolerance: int = 2) -> tuple[list, dict]:
    """Rows of shots.tsv and, over clips with ground truth, the cut scores."""
    rows, totals, per_video = [], {"tp": 0, "fp": 0, "fn": 0}, {}
    for res, rec in zip(results, records, strict=True):
        rows.append(
            [
                res["video_id"],
                res["status"],
                res.get("reason", ""),
                res.get("frames", ""),
                len(res.get("shots", [])),
                len(res.get("dropped", [])),
                " ".join(str(c) for c in res.get("cuts", [])),
            ]
        )
        gt = ground_truth_path(rec["path"])
        if res["status"] == "ok" and gt.exists():
            with np.load(gt) as data:
                true_cuts = data["cuts"].tolist()
            score = cut_f1(res["cuts"], true_cuts, tolerance=tolerance)
            per_video[res["video_id"]] = score
            for k in totals:
                totals[k] += score[k]
    evaluation: dict = {}
    if per_video:
        evaluation = {
            "tolerance": tolerance,
            **scores_from_counts(totals["tp"], totals["fp"], totals["fn"]),
            "per_video": per_video,
        }
    return rows, evaluation


def add_summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shots", nargs="+", help="per-video shots JSON files")
    p.add_argument("--records-dir", required=True, help="folder of the set's ingest JSONs")
    p.add_argument("--out-tsv", required=True)
    p.add_argument("--out-eval", required=True, help="cut F1 against ground truth (JSON)")


def run_summary(args: argparse.Namespace) -> int:
    results = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.shots]
    records = [
        json.loads((Path(args.records_dir) / f"{r['video_id']}.json").read_text(encoding="utf-8"))
        for r in results
    ]
    rows, evaluation = summarise(results, records)
    atomic.write_tsv(args.out_tsv, SUMMARY_COLUMNS, rows)
    atomic.write_json(args.out_eval, evaluation)
    if evaluation:
        log.info(
            "cut F1 %.3f (P %.3f R %.3f)",
            evaluation["f1"],
            evaluation["precision"],
            evaluation["recall"],
        )
    return 0
