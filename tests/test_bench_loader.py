"""benchmarks/bench_loader_workers.py: bad arguments fail with a reason, before any loader runs."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_sys_part_rejects_samples_the_warm_up_would_consume(monkeypatch):
    # 16 samples at 4 workers: the warm-up took every batch and the rate divided by zero
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_loader_workers as bench

    with pytest.raises(ValueError, match="--samples must be above 64"):
        bench.sys_figures(dataset=None, repeats=1, n_samples=16)
