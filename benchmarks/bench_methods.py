"""Seconds per training step of every registered pretraining method at the demo's CPU setting.

ResNet-18 trunk, 128² crops, batch 8, fp32 (the embedded default's ``pretrain.<method>``
sections): forward, the method's loss, backward, SGD update, on synthetic batches of each
method's view (``models.synthetic``). The methods are timed in alternation, window after window,
so a machine whose load changes during the run affects them alike; the median window is
reported, with its ratio to CMP. Writes benchmarks/out/methods.json.

    OMP_NUM_THREADS=2 python benchmarks/bench_methods.py [--windows 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from models.methods import METHODS
from models.synthetic import synthetic_sample
from models.train import build_module, load_run_config

OUT = Path(__file__).resolve().parent / "out" / "methods.json"


def _step_fn(method: str, size: int, batch_size: int):
    torch.manual_seed(0)
    module = build_module(load_run_config(None, [f"method={method}", "model.backbone=resnet18"]))
    module.train()
    view = METHODS[method].view
    samples = [synthetic_sample(i, size=size, view=view) for i in range(batch_size)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        loss, _ = module.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    steps = {m: _step_fn(m, args.size, args.batch_size) for m in METHODS}
    for step in steps.values():  # warm-up
        step()
    windows: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(args.windows):
        for method, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            windows[method].append((time.perf_counter() - start) / args.steps)
    median = {m: statistics.median(w) for m, w in windows.items()}
    result = {
        "setting": {
            "backbone": "resnet18",
            "crop": args.size,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "windows": args.windows,
            "steps_per_window": args.steps,
        },
        "seconds_per_step": median,
        "ratio_to_cmp": {m: median[m] / median["cmp"] for m in median},
        "windows": windows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"seconds_per_step": median, "ratio_to_cmp": result["ratio_to_cmp"]}))


if __name__ == "__main__":
    main()
