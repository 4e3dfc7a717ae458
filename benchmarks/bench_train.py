"""Training step of CMP: samples/s, MFU and the loss's share of the step, reference loss vs fast.

One step = forward, ``cmp_loss``, backward, SGD update, on random synthetic data.
CPU path: ResNet-18 trunk at 128² crops, batch 8, fp32, one thread (``torch.set_num_threads``).
GPU path (only when CUDA is present): ResNet-50 at 320² crops, bf16 autocast, channels_last,
batch 10 — the paper's ResNet-50 setting (REFERENCE.md, "CMP").

Two losses, A/B alternating window by window in one process (a loaded machine slows both alike),
medians of ``--windows`` windows after warm-up:

* ``reference``: the loss as it was (``F.interpolate`` + ``F.cross_entropy``; the reference of
  tests/test_cmp_loss.py), ``fast``: ``models.cmp.cmp_loss``.
* loss share = the loss's forward + backward over the whole step, both timed within the same
  step (the step runs the model forward, then the loss's forward and backward on the detached
  logits, then the model's backward from their gradient: the same work as one backward), in
  process CPU time (steadier than wall time on a loaded machine; both are reported).
* MFU = model FLOPs per step / step time / peak. FLOPs are counted by
  ``torch.utils.flop_counter.FlopCounterMode`` over forward + backward of the model; the loss's are
  left out (the reference path has none the counter sees, the fast one's GEMMs are resampling).
  Peak: ``--peak-tflops``, else on CUDA 989 (H200 dense bf16) and on CPU the rate of a
  1024² float32 GEMM measured here on the same threads in process CPU time (an achievable peak,
  not a datasheet one; the CPU MFU printed uses the step's CPU time too).

``--compile`` adds a third variant: the fast loss with the model under ``torch.compile``
(``nn.Module.compile``, as ``trainer.compile`` does), its warm-up time including compilation.

Writes benchmarks/out/train.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--windows 5] [--steps 2] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.cmp import cmp_loss, cmp_model
from models.synthetic import synthetic_sample
from tests.test_cmp_loss import reference_loss

OUT = Path(__file__).resolve().parent / "out" / "train.json"
LOSSES: dict[str, Callable[..., torch.Tensor]] = {"reference": reference_loss, "fast": cmp_loss}
H200_BF16_DENSE_TFLOPS = 989.0


def _batch(batch_size: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    samples = [synthetic_sample(i, size=size, max_shift=8) for i in range(batch_size)]
    return {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_peak_flops(device: torch.device, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of an n² float32 GEMM (bf16 on CUDA), best of runs; on CPU per second of process
    CPU time (like the step's CPU time: both undisturbed by other processes' load)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = 0.0
    for _ in range(repeats):
        _sync(device)
        start = clock()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / max(clock() - start, 1e-9))
    return best


def model_flops(
    model: torch.nn.Module, image: torch.Tensor, sparse: torch.Tensor, bf16: bool
) -> int:
    """FLOPs of one forward + backward of the model (the loss replaced by a sum)."""
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(image, sparse)
        logits.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class _Clock:
    """Wall and CPU time of this process (CPU time: what the step cost us, much less disturbed
    by the other processes of a loaded machine than wall time)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[tuple[float, float]] = []

    def mark(self) -> None:
        _sync(self.device)
        self.marks.append((time.perf_counter(), time.process_time()))

    def spans(self) -> list[tuple[float, float]]:
        return [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(self.marks)]


def measure(
    backbone: str,
    size: int,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    windows: int,
    steps: int,
    peak_flops: float,
    compile_model: bool = False,
    warmup: int = 1,
) -> dict[str, object]:
    torch.manual_seed(0)
    model = cmp_model(backbone).to(device).train()
    batch = _batch(batch_size, size, device)
    image, sparse, flow = batch["image"], batch["sparse"], batch["flow"]
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
        sparse = sparse.contiguous(memory_format=torch.channels_last)
    flops = model_flops(model, image, sparse, bf16)
    # name -> (model, optimizer, loss); "fast+compile": a copy of the model, torch.compile'd.
    variants = {name: (model, loss_fn) for name, loss_fn in LOSSES.items()}
    if compile_model:
        compiled = copy.deepcopy(model)
        compiled.compile()
        variants["fast+compile"] = (compiled, cmp_loss)
    optimizers = {
        name: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        for name, (net, _) in variants.items()
    }

    def step(name: str) -> list[tuple[float, float]]:
        """One step, the loss's forward + backward timed apart: (wall, cpu) of model forward,
        loss, model backward + update. The same work as ``loss_fn(model(...)).backward()``."""
        (net, loss_fn), optimizer = variants[name], optimizers[name]
        clock = _Clock(device)
        clock.mark()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(image, sparse)
        clock.mark()
        detached = logits.detach().requires_grad_()
        loss_fn(detached, flow).backward()
        clock.mark()
        optimizer.zero_grad(set_to_none=True)
        logits.backward(detached.grad)
        optimizer.step()
        clock.mark()
        return clock.spans()

    first_step_s = {}
    for name in variants:
        start = time.perf_counter()
        for _ in range(warmup):
            step(name)
        first_step_s[name] = time.perf_counter() - start  # includes compiling, if any
    spans: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in variants}
    for _ in range(windows):  # A/B alternating: load spikes hit every variant alike
        for name in variants:
            spans[name] += [step(name) for _ in range(steps)]
    per_loss = {}
    for name in variants:
        wall = [sum(s[0] for s in parts) for parts in spans[name]]
        cpu = [sum(s[1] for s in parts) for parts in spans[name]]
        loss_wall = [parts[1][0] for parts in spans[name]]
        loss_cpu = [parts[1][1] for parts in spans[name]]
        median = statistics.median
        per_loss[name] = {
            "step_ms_median": 1e3 * median(wall),
            "step_cpu_ms_median": 1e3 * median(cpu),
            "loss_ms_median": 1e3 * median(loss_wall),
            "loss_cpu_ms_median": 1e3 * median(loss_cpu),
            "loss_share_cpu_median": median(lo / st for lo, st in zip(loss_cpu, cpu, strict=True)),
            "loss_share_wall_median": median(
                lo / st for lo, st in zip(loss_wall, wall, strict=True)
            ),
            "samples_per_s_median": batch_size / median(wall),
            "samples_per_cpu_s_median": batch_size / median(cpu),
            "mfu": flops / median(wall) / peak_flops,
            "mfu_cpu_time": flops / median(cpu) / peak_flops,
            "warmup_s": first_step_s[name],
            "steps": [
                [[round(1e3 * x, 2) for x in span] for span in parts] for parts in spans[name]
            ],
        }
    return {
        "backbone": backbone,
        "crop": size,
        "batch_size": batch_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": "bf16-mixed" if bf16 else "fp32",
        "model_gflop_per_sample_fwd_bwd": flops / batch_size / 1e9,
        "peak_tflops": peak_flops / 1e12,
        "steps_per_window": steps,
        "windows": windows,
        "step_spans": "per step: [wall ms, cpu ms] of model forward, loss fwd+bwd, model bwd+SGD",
        "losses": per_loss,
        "fast_over_reference_step_cpu": per_loss["reference"]["step_cpu_ms_median"]
        / per_loss["fast"]["step_cpu_ms_median"],
        "fast_over_reference_loss_cpu": per_loss["reference"]["loss_cpu_ms_median"]
        / per_loss["fast"]["loss_cpu_ms_median"],
    }


def _print(results: list[dict]) -> None:
    print(
        f"{'backbone':<9}{'crop':>5}{'batch':>6}{'device':>8}{'loss':>14}{'samples/s':>10}"
        f"{'step ms':>9}{'cpu ms':>8}{'loss cpu':>9}{'share cpu':>10}{'share wall':>11}{'MFU':>7}"
    )
    for r in results:
        device = "cpu" if r["device"] == "cpu" else "cuda"
        for name, fig in r["losses"].items():
            print(
                f"{r['backbone']:<9}{r['crop']:>5}{r['batch_size']:>6}{device:>8}{name:>14}"
                f"{fig['samples_per_s_median']:>10.2f}{fig['step_ms_median']:>9.0f}"
                f"{fig['step_cpu_ms_median']:>8.0f}{fig['loss_cpu_ms_median']:>9.0f}"
                f"{fig['loss_share_cpu_median']:>10.1%}{fig['loss_share_wall_median']:>11.1%}"
                f"{fig['mfu' if device == 'cuda' else 'mfu_cpu_time']:>7.1%}"
            )
    print("(medians over steps; share = loss fwd+bwd over the whole step, within each step;")
    print(" MFU: wall time on CUDA, process CPU time against a CPU-time GEMM peak on CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cpu-batch", type=int, default=8)
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument(
        "--compile", action="store_true", help="also time the model under torch.compile"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.cpu_threads)
    cpu = torch.device("cpu")
    peak = 1e12 * args.peak_tflops if args.peak_tflops else gemm_peak_flops(cpu)
    results = [
        measure(
            "resnet18",
            128,
            args.cpu_batch,
            cpu,
            False,
            args.windows,
            args.steps,
            peak,
            args.compile,
        )
    ]
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        peak = 1e12 * (args.peak_tflops or H200_BF16_DENSE_TFLOPS)
        results.append(
            measure(
                "resnet50", 320, 64, gpu, True, args.windows, args.steps * 5, peak, args.compile
            )
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"train": results}, indent=2) + "\n")
    _print(results)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
