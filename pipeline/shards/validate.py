"""Validation: re-read every sample of a shard folder and report every problem found.

``python -m pipeline validate-shards DIR`` (:func:`main_validate`) prints the JSON report of
:func:`validate_shards` and exits 1 on any corrupt sample, checksum or shape mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.shards.codec import INDEX_NAME, ShapeMismatch
from pipeline.shards.reader import ShardReader, read_index
from pipeline.video import file_sha256


def validate_shards(shard_dir: str | os.PathLike) -> dict[str, Any]:
    """Re-read every sample of the shard set in ``shard_dir`` and report every problem found.

    Checks: ``index.json`` present with a known schema; each listed shard present, its sha256
    and sample ids as listed; every sample decodes (``fletcher32`` / CRC-32 / codec errors are
    reported as corrupt samples with the reason) with the shapes its metadata says. Returns
    ``{"ok", "n_shards", "n_samples", "corrupt", "sha256_mismatch", "shape_mismatch", "errors"}``.
    """
    root = Path(shard_dir)
    report: dict[str, Any] = {
        "dir": str(root),
        "ok": False,
        "n_shards": 0,
        "n_samples": 0,
        "corrupt": [],
        "sha256_mismatch": [],
        "shape_mismatch": [],
        "errors": [],
    }
    try:
        index = read_index(root / INDEX_NAME)
    except (OSError, ValueError) as err:
        report["errors"].append(f"index.json: {err}")
        return report
    for entry in index["shards"]:
        path = root / entry["file"]
        report["n_shards"] += 1
        if not path.is_file():
            report["errors"].append(f"{entry['file']}: missing")
            continue
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            report["sha256_mismatch"].append(
                {"file": entry["file"], "expected": entry["sha256"], "actual": actual}
            )
        _validate_shard(path, entry, report)
    report["ok"] = not any(report[k] for k in ("corrupt", "sha256_mismatch", "shape_mismatch"))
    report["ok"] = report["ok"] and not report["errors"]
    return report


def _validate_shard(path: Path, entry: dict[str, Any], report: dict[str, Any]) -> None:
    reader = ShardReader(path)
    try:
        n = len(reader)
        ids = [s.decode() for s in reader._open()["sample_id"][()]]
    except (OSError, ValueError, KeyError) as err:
        report["errors"].append(f"{entry['file']}: {str(err).splitlines()[0]}")
        reader.close()
        return
    if n != entry["n_samples"] or ids != entry["sample_ids"]:
        report["errors"].append(f"{entry['file']}: sample ids / count differ from index.json")
    for i in range(n):
        report["n_samples"] += 1
        where = {"file": entry["file"], "index": i, "sample_id": ids[i] if i < len(ids) else ""}
        try:
            sample = reader.read_sample(i)
        except (OSError, ValueError, KeyError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            bucket = "shape_mismatch" if isinstance(err, ShapeMismatch) else "corrupt"
            report[bucket].append({**where, "reason": reason})
            continue
        shape = (sample["height"], sample["width"])
        problems = []
        if sample["soft"] is not None and sample["soft"].shape != shape:
            problems.append(f"soft is {sample['soft'].shape}")
        points = sample["points"]
        if len(points) != len(sample["vectors"]):
            problems.append("points and vectors differ in length")
        elif len(points) and (
            points.min() < 0 or points[:, 0].max() >= shape[0] or points[:, 1].max() >= shape[1]
        ):
            problems.append("guidance point outside the frame")
        if problems:
            report["shape_mismatch"].append({**where, "reason": "; ".join(problems)})
    reader.close()


def main_validate(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline validate-shards DIR``: print a JSON report; exit 1 on any problem."""
    parser = argparse.ArgumentParser(prog="validate-shards", description=validate_shards.__doc__)
    parser.add_argument("shard_dir", help="folder holding index.json and shard-NNNNN.h5")
    args = parser.parse_args(argv)
    report = validate_shards(args.shard_dir)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    if not report["ok"]:
        problems = sum(
            len(report[k]) for k in ("corrupt", "sha256_mismatch", "shape_mismatch", "errors")
        )
        print(f"validate-shards: {problems} problem(s) in {args.shard_dir}", file=sys.stderr)
        return 1
    return 0
