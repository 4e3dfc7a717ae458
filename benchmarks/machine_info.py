"""Which machine a benchmark ran on: the record that makes its wall times comparable.

Two "2-core, 24 GB" machines of the same pool ran the same science-run training rules 2.1–2.2×
apart (docs/BENCHMARKS.md, "Science run"): the CPU model and the vector kernels torch picks for
it (``torch.backends.cpu.get_cpu_capability()``: AVX2, AVX512, …) decide a convolution's speed,
and the earlier run recorded neither. Benchmarks whose seconds are compared across runs store
``describe()`` beside their figures.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path
from typing import Any

# the instruction-set flags that change which kernels torch and OpenCV run
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def first_processor(cpuinfo: str) -> dict[str, str]:
    """``key → value`` of ``/proc/cpuinfo`` text, each key's first non-empty value (the first
    processor's, where every processor lists the same keys)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if sep and value and key not in fields:
            fields[key] = value
    return fields


def cpu_model(cpuinfo: str) -> tuple[str | None, list[str]]:
    """(model name, the ``VECTOR_FLAGS`` it has) from the text of ``/proc/cpuinfo``."""
    fields = first_processor(cpuinfo)
    flags = set(fields.get("flags", "").split())
    return fields.get("model name"), [flag for flag in VECTOR_FLAGS if flag in flags]


def cpu_signature(cpuinfo: str) -> str | None:
    """Vendor, family, model and stepping of the first processor, e.g. ``AuthenticAMD 25/1/1``.

    A virtual machine may name its CPU only by brand ("AMD EPYC"); these numbers still tell one
    generation from another (AMD family 25 model 1 is Zen 3 "Milan")."""
    fields = first_processor(cpuinfo)
    if "cpu family" not in fields or "model" not in fields:
        return None
    numbers = "/".join(fields.get(key, "?") for key in ("cpu family", "model", "stepping"))
    return f"{fields.get('vendor_id', '?')} {numbers}"


def describe(cpuinfo_path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model and vector flags, usable cores, platform, Python, and torch's build and CPU
    capability (``None`` where torch is not installed or the file is absent)."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    model, flags = cpu_model(text)
    info: dict[str, Any] = {
        "cpu_model": model or platform.processor() or None,
        "cpu_signature": cpu_signature(text),
        "vector_flags": flags,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": None,
        "torch_cpu_capability": None,
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info
