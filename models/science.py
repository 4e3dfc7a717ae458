"""The science run: does the pretraining help? One table, one plot, one generated verdict.

    python -m models.science --set output_dir=results/science --set benchmark={...} \
        --set pretraining=[{name, run_dir, method}] --set shard_indexes=[...]

Runs ``models.benchmark`` on the transfer tasks (``models.transfer``; ≥ 5 seeds) for every
pretrained trunk against random, then writes ``verdict.md``: per (task, initialisation) the
mean ± std over seeds, the mean paired difference to random and its paired t-test / Wilcoxon
p-values (``models.downstream_metrics.paired_test``) with the verdict "helps / no difference /
hurts" at ``alpha``; per initialisation an overall verdict over the tasks; for every method with
several pretraining runs (``pretrain.<method>.replicate_seeds``) the test that counts the run as the
unit (``replicate_tests``: the runs × seeds table of paired differences to random, tested with
both runs and seeds as random samples, ``crossed_test``), also in ``replicates.tsv`` and drawn in
``replicates.png``; the pretraining data (distinct training / validation samples and videos from
every shard ``index.json``); and, for each pretraining run that logged them, the last validation
EPE against the guidance-only baselines (``models.baselines``): CMP counts as propagating motion
only when it beats the nearest-guidance fill.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.baselines import BASELINES
from models.downstream_metrics import wilcoxon_smallest_p
from pipeline.atomic import atomic_path, read_tsv, write_text, write_tsv
from pipeline.stages.shards import sample_counts

__all__ = [
    "DEFAULT_CONFIG",
    "main",
    "REPLICATE_COLUMNS",
    "crossed_test",
    "overall_verdict",
    "plot_replicates",
    "pretraining_epe",
    "render_verdict",
    "replicate_tests",
    "run_science",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "output_dir": "results/science",
    "alpha": 0.05,
    "benchmark": {},  # a models.benchmark run config (output_dir is set here)
    # [{name, run_dir, method}]: where each run's logs/ live; runs sharing `method` (default: the
    # name) are pretraining runs of one config with different seeds
    "pretraining": [],
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


def _floats(cell: Any) -> list[float]:
    """The numbers of a comma-joined TSV cell (summary.tsv ``values``, replicates.tsv ``run_diffs``)."""
    return [float(v) for v in str(cell).split(",")]


REPLICATE_COLUMNS = (
    "task", "method", "metric", "n_runs", "n_seeds", "run_diffs", "mean_diff", "std_diff",
    "se", "df", "t", "p_ttest", "verdict",
)  # fmt: skip


def crossed_test(diffs: Sequence[Sequence[float]]) -> dict[str, float]:
    """Test of the mean of a runs × seeds table of paired differences against 0, with both the
    runs and the seeds as random samples.

    Row r, column s: run r's metric at fine-tuning seed s minus the control's at seed s. The
    grand mean's variance has a run part (pretraining runs differ), a seed part (the control's
    value at a seed, and whatever the seed does to every run alike) and a residual; the estimate
    var(run means) / R + var(seed means) / S covers all three (it counts the residual twice, so
    it errs towards "no difference"), with Welch–Satterthwaite degrees of freedom. Returns
    ``mean``, ``se``, ``df``, ``t`` and the two-sided ``p`` (NaN where there is no spread).
    """
    from scipy import stats

    table = np.asarray(diffs, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 2:
        raise ValueError(f"need >= 2 runs x >= 2 seeds of differences, got shape {table.shape}")
    runs, seeds = table.shape
    mean = float(table.mean())
    parts = (table.mean(axis=1).var(ddof=1) / runs, table.mean(axis=0).var(ddof=1) / seeds)
    variance = sum(parts)
    result = {"mean": mean, "se": math.sqrt(variance), "df": math.nan, "t": math.nan}
    if variance <= (1e-12 * max(1.0, abs(mean))) ** 2:
        return {**result, "p": math.nan}
    df = variance**2 / (parts[0] ** 2 / (runs - 1) + parts[1] ** 2 / (seeds - 1))
    t = mean / math.sqrt(variance)
    return {**result, "df": df, "t": t, "p": float(2.0 * stats.t.sf(abs(t), df))}


def replicate_tests(
    rows: Sequence[Mapping[str, Any]],
    groups: Mapping[str, Sequence[str]],
    alpha: float,
) -> list[dict[str, Any]]:
    """The test over pretraining runs, per task and method with >= 2 runs.

    ``rows``: ``summary.tsv`` rows (``values`` holds the per-seed metric, same seed order in every
    row); ``groups``: method -> its runs' initialisation names. Every run was fine-tuned with every
    seed and is compared with the control at the same seed: ``crossed_test`` on that runs × seeds
    table of differences gives the verdict at ``alpha``. The paired test of ``summary.tsv`` holds
    one pretraining run fixed and tests over fine-tuning seeds only; here another pretraining run
    of the method is part of the variation the effect must stand out of. ``run_diffs``: each
    run's mean difference over the seeds; ``std_diff``: their sample std.
    """
    from models.downstream_metrics import verdict

    control = {r["task"]: r for r in rows if r["verdict"] == "control"}
    by_key = {(r["task"], r["init"]): r for r in rows}
    tests = []
    for task, base in control.items():
        reference = _floats(base["values"])
        for method, names in groups.items():
            if len(names) < 2 or any((task, n) not in by_key for n in names):
                continue
            table = []
            for name in names:
                values = _floats(by_key[(task, name)]["values"])
                if len(values) != len(reference):
                    raise ValueError(f"{task}: {name} has {len(values)} seeds, the control has "
                                     f"{len(reference)}")  # fmt: skip
                table.append([a - b for a, b in zip(values, reference, strict=True)])
            test = crossed_test(table)
            per_run = [sum(row) / len(row) for row in table]
            tests.append({
                "task": task, "method": method, "metric": base["metric"], "n_runs": len(table),
                "n_seeds": len(reference), "run_diffs": ",".join(f"{d:.6g}" for d in per_run),
                "mean_diff": test["mean"], "std_diff": statistics.stdev(per_run),
                "se": test["se"], "df": test["df"], "t": test["t"], "p_ttest": test["p"],
                "verdict": verdict({"p_t": test["p"], "mean_diff": test["mean"]}, alpha),
            })  # fmt: skip
    return tests


def pretraining_epe(run_dir: str | Path) -> dict[str, float]:
    """The last logged value of each of ``EPE_KEYS`` in a run's CSV logs (those present)."""
    from models.figures import read_metrics

    metrics = read_metrics(Path(run_dir) / "logs")
    return {key: metrics[key][-1][1] for key in EPE_KEYS if metrics.get(key)}


def _fmt(value: Any, digits: int = 3) -> str:
    number = math.nan if value is None or value == "" else float(value)
    return "–" if math.isnan(number) else f"{number:.{digits}f}"


def _wilcoxon_floor(rows: Sequence[Mapping[str, Any]], alpha: float) -> str:
    """The smallest p the exact Wilcoxon test can reach at the rows' seed counts, and whether
    that is below ``alpha``."""
    counts = sorted({int(r["n_seeds"]) for r in rows})
    if not counts:
        return "no seeds"
    smallest = [wilcoxon_smallest_p(n) for n in counts]
    text = (f"with {' / '.join(map(str, counts))} seeds its smallest attainable p is "
            f"{' / '.join(f'{p:g}' for p in smallest)}")  # fmt: skip
    return text + (
        f", so alone it cannot reject at α = {alpha:g}" if min(smallest) >= alpha else ""
    )


def render_verdict(
    rows: Sequence[Mapping[str, Any]],
    data: Sequence[Mapping[str, Any]],
    epe: Mapping[str, Mapping[str, float]],
    alpha: float,
    replicates: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The Markdown verdict from the summary rows, the data statistics, the EPE figures and the
    tests over pretraining runs (``replicate_tests``; first, when there are any)."""
    inits = [r["init"] for r in rows if r["verdict"] != "control"]
    per_init: dict[str, list[str]] = {}
    for row in rows:
        if row["verdict"] != "control":
            per_init.setdefault(row["init"], []).append(row["verdict"])
    lines = ["# Does the pretraining help?", ""]
    if replicates:
        lines += _replicate_section(replicates, alpha)
        lines += ["## Each pretraining run on its own", ""]
    for init in dict.fromkeys(inits):
        lines.append(f"- **{init}**: {overall_verdict(per_init[init])} (per task: "
                     f"{', '.join(per_init[init])}).")  # fmt: skip
    lines += [
        "",
        f"Paired t-test over seeds against random, two-sided, α = {alpha:g} (Wilcoxon "
        f"signed-rank p beside it; {_wilcoxon_floor(rows, alpha)}). It holds each pretraining "
        "run fixed and tests over fine-tuning seeds only: it says whether that run's trunk helps, "
        "not whether another run of the same method would (that needs "
        "`pretrain.<method>.replicate_seeds`).",
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


def _replicate_section(tests: Sequence[Mapping[str, Any]], alpha: float) -> list[str]:
    per_method: dict[str, list[Mapping[str, Any]]] = {}
    for test in tests:
        per_method.setdefault(test["method"], []).append(test)
    lines = []
    for method, own in per_method.items():
        words = [t["verdict"] for t in own]
        lines.append(f"- **{method}** over its {own[0]['n_runs']} pretraining runs: "
                     f"{overall_verdict(words)} (per task: {', '.join(words)}).")  # fmt: skip
    lines += [
        "",
        "Tested over pretraining runs and fine-tuning seeds: every run is fine-tuned with every "
        "seed and compared with random at the same seed; the mean difference's standard error "
        "adds the spread of the run means and of the seed means (`models.science.crossed_test`), "
        f"two-sided t-test, Welch–Satterthwaite df, α = {alpha:g}.",
        "",
        "![Δ vs random per pretraining run](replicates.png)",
        "",
        "| task | method | metric | Δ vs random per run | mean Δ ± s.e. | df | p (t) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in tests:
        per_run = ", ".join(_fmt(d) for d in _floats(t["run_diffs"]))
        lines.append(
            f"| {t['task']} | {t['method']} | {t['metric']} | {per_run} | {_fmt(t['mean_diff'])}"
            f" ± {_fmt(t['se'])} (runs={t['n_runs']}, seeds={t['n_seeds']}) | {_fmt(t['df'], 1)} | "
            f"{_fmt(t['p_ttest'], 4)} | {t['verdict']} |"
        )
    return [*lines, ""]


def plot_replicates(tests: Sequence[Mapping[str, Any]], path: str | Path, dpi: int = 120) -> Path:
    """One panel per task: each method's per-run difference to random (dots), their mean (bar)
    ± the test's standard error (whisker), zero (dashed) and the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(t["task"] for t in tests))
    width = max(3.6, 1.2 * max(sum(t["task"] == task for t in tests) for task in tasks))
    figure, axes = plt.subplots(1, len(tasks), figsize=(width * len(tasks), 3.8), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        own = [t for t in tests if t["task"] == task]
        for x, test in enumerate(own):
            diffs = _floats(test["run_diffs"])
            axis.bar(x, test["mean_diff"], 0.6, color="0.85", yerr=test["se"], capsize=4)
            axis.plot([x] * len(diffs), diffs, "o", color="tab:blue", markersize=4)
        axis.axhline(0.0, color="k", linestyle="--", linewidth=0.8)
        labels = [f"{t['method']}\n{t['verdict']}" for t in own]
        axis.set_xticks(range(len(own)), labels, rotation=25, ha="right", fontsize="small")
        axis.set_title(f"{task} ({own[0]['metric']})", fontsize="medium")
        axis.set_ylabel("Δ vs random, per pretraining run")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    plt.close(figure)
    return Path(path)


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
    groups: dict[str, list[str]] = {}
    for run in config["pretraining"]:
        groups.setdefault(run.get("method", run["name"]), []).append(run["name"])
    alpha = float(config["alpha"])
    replicates = replicate_tests(rows, groups, alpha)
    write_tsv(out / "replicates.tsv", list(REPLICATE_COLUMNS),
              [[t[c] for c in REPLICATE_COLUMNS] for t in replicates])  # fmt: skip
    if replicates:
        plot_replicates(replicates, out / "replicates.png", dpi=int(resolved["plot"]["dpi"]))
    write_text(out / "verdict.md", render_verdict(rows, data, epe, alpha, replicates))
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
