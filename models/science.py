"""The science run: does the pretraining help? One table, one plot, one generated verdict.

    python -m models.science --set output_dir=results/science --set benchmark={...} \
        --set pretraining=[{name, run_dir}] --set shard_indexes=[...]

Runs ``models.benchmark`` on the transfer tasks (``models.transfer``; ≥ 5 seeds) for every
pretrained trunk against random, then writes ``verdict.md``: per (task, initialisation) the
mean ± std over seeds, the mean paired difference to random and its paired t-test / Wilcoxon
p-values (``models.downstream_metrics.paired_test``) with the verdict "helps / no difference /
hurts" at ``alpha``; per initialisation an overall verdict over the tasks; the pretraining data
(distinct training / validation samples and videos from every shard ``index.json``); and, for each
pretraining run that logged them, the last validation EPE against the guidance-only baselines
(``models.baselines``): CMP counts as propagating motion only when it beats the nearest-guidance
fill.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.baselines import BASELINES
from pipeline.atomic import read_tsv, write_text
from pipeline.stages.shards import sample_counts

__all__ = [
    "DEFAULT_CONFIG",
    "main",
    "overall_verdict",
    "pretraining_epe",
    "render_verdict",
    "run_science",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "output_dir": "results/science",
    "alpha": 0.05,
    "benchmark": {},  # a models.benchmark run config (output_dir is set here)
    "pretraining": [],  # [{name, run_dir}]: where each method's logs/ live
    "shard_indexes": [],  # index.json of every shard set the pretraining read
}
BASELINE_KEYS = tuple(f"val/baseline_{name}" for name in BASELINES)
EPE_KEYS = ("val/epe", *BASELINE_KEYS)


def overall_verdict(verdicts: Sequence[str]) -> str:
    """One word per initialisation from its per-task verdicts: ``helps`` (some task helped, none
    hurt), ``hurts`` (the reverse), ``mixed`` (both), else ``no difference``."""
    helps, hurts = "helps" in verdicts, "hurts" in verdicts
    if helps and hurts:
        return "mixed"
    return "helps" if helps else "hurts" if hurts else "no difference"


def pretraining_epe(run_dir: str | Path) -> dict[str, float]:
    """The last logged value of each of ``EPE_KEYS`` in a run's CSV logs (those present)."""
    from models.figures import read_metrics

    metrics = read_metrics(Path(run_dir) / "logs")
    return {key: metrics[key][-1][1] for key in EPE_KEYS if metrics.get(key)}


def _fmt(value: Any, digits: int = 3) -> str:
    number = math.nan if value is None or value == "" else float(value)
    return "–" if math.isnan(number) else f"{number:.{digits}f}"


def render_verdict(
    rows: Sequence[Mapping[str, Any]],
    data: Sequence[Mapping[str, Any]],
    epe: Mapping[str, Mapping[str, float]],
    alpha: float,
) -> str:
    """The Markdown verdict from the summary rows, the data statistics and the EPE figures."""
    inits = [r["init"] for r in rows if r["verdict"] != "control"]
    per_init: dict[str, list[str]] = {}
    for row in rows:
        if row["verdict"] != "control":
            per_init.setdefault(row["init"], []).append(row["verdict"])
    lines = ["# Does the pretraining help?", ""]
    for init in dict.fromkeys(inits):
        lines.append(f"- **{init}**: {overall_verdict(per_init[init])} (per task: "
                     f"{', '.join(per_init[init])}).")  # fmt: skip
    lines += [
        "",
        f"Paired t-test over seeds against random, two-sided, α = {alpha:g} (Wilcoxon "
        "signed-rank p beside it; with 5 seeds its smallest p is 0.0625).",
        "",
        "| task | init | metric | mean ± std | Δ vs random | p (t) | p (Wilcoxon) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['init']} | {r['metric']} | {_fmt(r['mean'])} ± {_fmt(r['std'])}"
            f" (n={r['n_seeds']}) | {_fmt(r['diff_vs_random'])} | {_fmt(r['p_ttest'], 4)} | "
            f"{_fmt(r['p_wilcoxon'], 4)} | {r['verdict']} |"
        )
    lines += ["", "## Pretraining data", ""]
    for d in data:
        lines.append(
            f"- {d['index']}: {d['train_samples']} distinct training samples from "
            f"{d['train_videos']} videos; {d['val_samples']} validation samples from "
            f"{d['val_videos']} videos."
        )
    lines += ["", "## Validation EPE against guidance-only baselines (px)", ""]
    for name, figures in epe.items():
        if "val/epe" not in figures:
            lines.append(f"- {name}: no validation EPE logged.")
            continue
        parts = [f"{k.split('/')[-1]} {v:.3f}" for k, v in figures.items()]
        nearest = figures.get("val/baseline_nearest_guidance")
        beats = (
            ""
            if nearest is None
            else " — beats the nearest-guidance fill"
            if figures["val/epe"] < nearest
            else " — does NOT beat the nearest-guidance fill"
        )
        lines.append(f"- {name}: {', '.join(parts)}{beats}.")
    return "\n".join(lines) + "\n"


def run_science(config: Mapping[str, Any]) -> Path:
    """Benchmark + verdict as configured (``DEFAULT_CONFIG`` keys); returns the output dir."""
    from models import benchmark

    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown science config keys: {sorted(unknown)}")
    config = {**DEFAULT_CONFIG, **config}
    out = Path(config["output_dir"])
    bench = {**config["benchmark"], "output_dir": str(out)}
    resolved = benchmark.resolve_config(bench)
    if len(resolved["seeds"]) < 2:
        raise ValueError("the science run needs at least 2 seeds for a paired test (use >= 5)")
    benchmark.run_benchmark(resolved)
    rows = read_tsv(out / "summary.tsv")
    data = sample_counts(config["shard_indexes"])
    epe = {p["name"]: pretraining_epe(p["run_dir"]) for p in config["pretraining"]}
    write_text(out / "verdict.md", render_verdict(rows, data, epe, float(config["alpha"])))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from models.train import parse_override

    parser = argparse.ArgumentParser(
        prog="python -m models.science", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config: dict[str, Any] = {}
    try:
        for text in args.overrides:
            config = {**config, **parse_override(text)}
        run_science(config)
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
