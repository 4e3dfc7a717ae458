"""Training throughput of CMP (samples/s): one full step = forward, loss, backward, SGD update.

CPU path: ResNet-18 trunk at 128² crops, fp32 (what a laptop-sized run uses).
GPU path (only when CUDA is present): ResNet-50 at 320² crops, bf16 autocast, channels_last,
batch 10 per GPU — the paper's ResNet-50 VOC setting (REFERENCE.md, "CMP").
Timed without Lightning (its per-step overhead is small next to these steps); the median of
several timed windows after warm-up is reported. Writes benchmarks/out/train.json.

    python benchmarks/bench_train.py [--windows 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from models.cmp import cmp_loss, cmp_model
from models.synthetic import synthetic_sample

OUT = Path(__file__).resolve().parent / "out" / "train.json"


def _batch(batch_size: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    samples = [synthetic_sample(i, size=size, max_shift=8) for i in range(batch_size)]
    return {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}


def measure(
    backbone: str,
    size: int,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    windows: int,
    steps: int,
    warmup: int = 2,
) -> dict[str, object]:
    torch.manual_seed(0)
    model = cmp_model(backbone).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batch = _batch(batch_size, size, device)
    image, sparse = batch["image"], batch["sparse"]
    if device.type == "cuda":
        image = image.contiguous(memory_format=torch.channels_last)
        sparse = sparse.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(image, sparse)
        loss = cmp_loss(logits, batch["flow"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return {
        "backbone": backbone,
        "crop": size,
        "batch_size": batch_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": "bf16-mixed" if bf16 else "fp32",
        "samples_per_s_median": statistics.median(rates),
        "samples_per_s_windows": rates,
        "steps_per_window": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cpu-batch", type=int, default=8)
    args = parser.parse_args()
    results = [
        measure(
            "resnet18", 128, args.cpu_batch, torch.device("cpu"), False, args.windows, args.steps
        )
    ]
    if torch.cuda.is_available():
        results.append(
            measure("resnet50", 320, 10, torch.device("cuda"), True, args.windows, args.steps * 4)
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"train": results}, indent=2) + "\n")
    print(
        f"{'backbone':<10}{'crop':>6}{'batch':>7}{'device':>24}{'precision':>12}{'samples/s':>11}"
    )
    for r in results:
        print(
            f"{r['backbone']:<10}{r['crop']:>6}{r['batch_size']:>7}{r['device']:>24}"
            f"{r['precision']:>12}{r['samples_per_s_median']:>11.2f}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
