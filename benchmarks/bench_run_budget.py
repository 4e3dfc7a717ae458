"""Wall-time budget of a workflow run from Snakemake's per-job benchmark TSVs.

    python benchmarks/bench_run_budget.py RESULTS_DIR [--cores 2] [--scale rule=factor ...]
        [--out benchmarks/out/budget.json]

Every ``benchmark:`` file under ``RESULTS_DIR`` is one job; the rule is named from its path
(``<set>/benchmarks/<rule>/<video>.tsv`` → ``<rule>``, ``flow-*/benchmarks/*.tsv`` → ``flow``,
``pretrain/<method>/<run>/benchmark.tsv`` → ``pretrain_<method>``, …). Per rule: job count,
median and total wall seconds. The estimate splits the rules into per-video ones (they run
``cores`` at a time: total / cores) and whole-set ones (pretraining, benchmark, science: they use
every core and run one after the other: their total). ``--scale rule=factor`` multiplies a rule's
total (e.g. 240 videos measured on 6: ``--scale per_video=40``) to extrapolate a larger run from
a small measured one. Writes the table as JSON, with the machine it ran on
(``machine_info.describe()``: wall times of two runs compare only on the same machine), and
prints it.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from machine_info import describe

# rules that occupy the whole machine (threads: workflow.cores) and run one after the other
SERIAL = ("pretrain", "benchmark", "science", "shards", "masks_evaluate", "mask_quality")


def rule_of(path: Path, root: Path) -> str:
    """The rule a benchmark TSV belongs to, from its place under ``root``."""
    parts = path.relative_to(root).parts
    if parts[0] == "pretrain":
        return f"pretrain_{parts[1]}"
    if parts[0] in ("benchmark", "science"):
        return "mask_quality" if "mask_quality" in path.name else parts[0]
    if "benchmarks" in parts:
        where = parts.index("benchmarks")
        if where + 2 < len(parts):  # <set>/benchmarks/<rule>/<video>.tsv
            return parts[where + 1]
        stage = parts[where - 1].split("-")[0]
        if path.stem == "evaluation":
            return f"{stage}_evaluate"
        return stage if where > 1 else path.stem  # <set>/benchmarks/shards.tsv → shards
    return path.parent.name


def measure(root: Path) -> dict[str, dict[str, float]]:
    """rule → {jobs, median_s, total_s} over the benchmark TSVs under ``root``."""
    seconds: dict[str, list[float]] = {}
    for path in sorted(root.rglob("*.tsv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows or "s" not in rows[-1] or "max_rss" not in rows[-1]:
            continue  # not a Snakemake benchmark file
        seconds.setdefault(rule_of(path, root), []).append(float(rows[-1]["s"]))
    return {
        rule: {"jobs": len(v), "median_s": statistics.median(v), "total_s": sum(v)}
        for rule, v in sorted(seconds.items())
    }


def estimate(
    rules: dict[str, dict[str, float]], cores: int, scale: dict[str, float]
) -> dict[str, float]:
    """Parallel (per-video) and serial minutes, with ``scale`` factors applied per rule
    (``per_video`` scales every per-video rule)."""
    parallel = serial = 0.0
    for rule, stats in rules.items():
        is_serial = rule.startswith(SERIAL)
        factor = scale.get(rule, 1.0 if is_serial else scale.get("per_video", 1.0))
        total = stats["total_s"] * factor
        if is_serial:
            serial += total
        else:
            parallel += total / cores
    return {
        "per_video_min": parallel / 60,
        "serial_min": serial / 60,
        "total_min": (parallel + serial) / 60,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--scale", action="append", default=[], metavar="RULE=FACTOR")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    scale = {k: float(v) for k, _, v in (s.partition("=") for s in args.scale)}
    rules = measure(args.results)
    result = {
        "results": str(args.results),
        "cores": args.cores,
        "scale": scale,
        "machine": describe(),
        "rules": rules,
        "estimate": estimate(rules, args.cores, scale),
    }
    for rule, stats in rules.items():
        print(f"{rule:24s} {stats['jobs']:4d} jobs  median {stats['median_s']:7.1f} s  "
              f"total {stats['total_s']:8.1f} s")  # fmt: skip
    print({k: round(v, 1) for k, v in result["estimate"].items()})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
