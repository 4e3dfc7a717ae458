"""Cost of the CPFS loss (Mahendran et al. 2018, eqs. (2)-(5)): O(B·P²) time and memory.

Times forward + backward of ``models.methods.cpfs.cpfs_loss`` (float32, D = 16 unit embeddings,
log-normalised flow in [-1, 1], σ learned) for each loss (ce, ce_rev, kta) at the paper's setting
P = 512 pixels per image, B = 96 images, and the CE loss at P = 128, 256, 512 to show the P²
scaling. Medians of ``--repeats`` runs after one warm-up; the variants alternate inside each
repeat so a load change on a shared machine hits them alike; the process CPU time is recorded
beside the wall time (on a loaded machine it is the steadier of the two). The peak extra memory of one step is
estimated from the (B, P, P) tensors the loss keeps for backward (measured on CUDA with
``torch.cuda.max_memory_allocated``). A ``cuda`` section is added when CUDA is present.

JSON to benchmarks/out/cpfs_loss.json.
Usage: OMP_NUM_THREADS=1 python benchmarks/bench_cpfs_loss.py [--repeats 5] [--batch 96]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from models.methods.cpfs import CPFS_LOSSES, cpfs_loss

OUT = Path(__file__).resolve().parent / "out" / "cpfs_loss.json"
EMBED_DIM = 16


def _inputs(batch: int, pixels: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(batch, pixels, EMBED_DIM, generator=gen).to(device).requires_grad_()
    flow = (torch.rand(batch, pixels, 2, generator=gen) * 2 - 1).to(device)
    return emb, flow


def _step(emb: torch.Tensor, flow: torch.Tensor, log_sigma: torch.Tensor, loss: str) -> None:
    value = cpfs_loss(emb, flow, log_sigma.exp(), loss=loss)
    value.backward()
    emb.grad = None
    log_sigma.grad = None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_variants(
    variants: list[tuple[str, int]], batch: int, repeats: int, device: str
) -> dict[str, dict[str, float]]:
    """Median seconds per forward+backward for each (loss, P), alternating the variants."""
    prepared = {(loss, p): _inputs(batch, p, device) for loss, p in variants}
    log_sigma = torch.tensor(math.log(0.0067) / 2, device=device, requires_grad=True)
    times: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    cpu: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    peaks: dict[tuple[str, int], float] = {}
    for v in variants:  # warm-up
        _step(*prepared[v], log_sigma, v[0])
    for _ in range(repeats):
        for v in variants:
            _sync(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start, start_cpu = time.perf_counter(), time.process_time()
            _step(*prepared[v], log_sigma, v[0])
            _sync(device)
            times[v].append(time.perf_counter() - start)
            cpu[v].append(time.process_time() - start_cpu)
            if device == "cuda":
                peaks[v] = torch.cuda.max_memory_allocated() / 2**20
    out = {}
    for (loss, p), values in times.items():
        row = {
            "loss": loss,
            "pixels": p,
            "batch": batch,
            "median_s": statistics.median(values),
            "min_s": min(values),
            "median_cpu_s": statistics.median(cpu[(loss, p)]),
            "kernel_mib": batch * p * p * 4 / 2**20,  # one (B, P, P) float32 tensor
        }
        if (loss, p) in peaks:
            row["peak_mib"] = peaks[(loss, p)]
        out[f"{loss}@P={p}"] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    variants = [(loss, 512) for loss in CPFS_LOSSES] + [("ce", 128), ("ce", 256)]
    result = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "note": "CPU shared with other jobs while measured; ratios are more stable than times",
        },
        "cpu": time_variants(variants, args.batch, args.repeats, "cpu"),
    }
    if torch.cuda.is_available():
        result["cuda"] = time_variants(variants, args.batch, max(args.repeats, 10), "cuda")
        result["machine"]["cuda_device"] = torch.cuda.get_device_name()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for section in ("cpu", "cuda"):
        for name, row in result.get(section, {}).items():
            wall, cpu_ms = row["median_s"] * 1e3, row["median_cpu_s"] * 1e3
            print(f"{section:4s} {name:12s} {wall:9.1f} ms wall {cpu_ms:9.1f} ms CPU")


if __name__ == "__main__":
    main()
