"""benchmarks/machine_info.py and bench_run_budget.py: the machine is recorded with the timings."""

from __future__ import annotations

import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 0
flags\t\t: fpu sse2 avx fma avx2 bmi2 sha_ni
bogomips\t: 4890.81

processor\t: 1
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2 bmi2 sha_ni avx512f
"""


def test_cpu_model_reads_the_first_processor(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import machine_info

    model, flags = machine_info.cpu_model(CPUINFO)
    assert model == "AMD EPYC 7B13"
    # the first processor's flags, in VECTOR_FLAGS order; avx512f is only on the second
    assert flags == ["avx2", "fma"]
    assert machine_info.cpu_model("no such keys\n") == (None, [])
    # family/model/stepping of the first processor: "model" is not confused with "model name"
    assert machine_info.cpu_signature(CPUINFO) == "AuthenticAMD 25/1/0"
    assert machine_info.cpu_signature("cpu family\t: 6\nmodel\t: 143\n") == "? 6/143/?"
    assert machine_info.cpu_signature("model name\t: AMD EPYC\n") is None


def test_describe_without_cpuinfo_still_answers(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import machine_info

    info = machine_info.describe(tmp_path / "absent")
    assert info["vector_flags"] == []
    assert info["cpu_signature"] is None
    assert info["cores"] >= 1
    assert info["torch_cpu_capability"]  # torch is installed with the project
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    described = machine_info.describe(tmp_path / "cpuinfo")
    assert described["cpu_model"] == "AMD EPYC 7B13"
    assert described["cpu_signature"] == "AuthenticAMD 25/1/0"


def test_run_budget_json_records_the_machine(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_run_budget

    run = tmp_path / "results" / "pretrain" / "cmp" / "science"
    run.mkdir(parents=True)
    (run / "benchmark.tsv").write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t100\n")
    out = tmp_path / "budget.json"
    assert bench_run_budget.main([str(tmp_path / "results"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rules"]["pretrain_cmp"] == {"jobs": 1, "median_s": 12.5, "total_s": 12.5}
    assert result["estimate"]["serial_min"] == 12.5 / 60
    assert set(result["machine"]) >= {"cpu_model", "vector_flags", "cores", "torch_cpu_capability"}
