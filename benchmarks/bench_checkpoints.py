"""Bytes a pretraining run leaves, per ``trainer.final_checkpoint`` mode (issue 18: <= 120 MB).

Two short CMP runs per mode on the in-memory synthetic data (the file sizes do not depend on the
data or the step count): the tests' tiny model (``tests/test_train.py``, decoder 32 channels) and
the embedded default's model (``config.yaml`` ``pretrain.cmp.model``, at its 128-px crop).
Reports the bytes of ``checkpoints/last.ckpt``, ``backbone.pth`` and the whole run folder.
Writes benchmarks/out/checkpoints.json.

    python benchmarks/bench_checkpoints.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.train import fit, load_run_config  # noqa: E402
from tests.test_train import tiny  # noqa: E402


def run_bytes(out: Path, overrides: list[str]) -> dict[str, int]:
    """Train with ``overrides`` into ``out``; bytes of the files a run keeps."""
    fit(load_run_config(None, [f"output_dir={out}", *overrides]))
    return {
        "last.ckpt": (out / "checkpoints" / "last.ckpt").stat().st_size,
        "backbone.pth": (out / "backbone.pth").stat().st_size,
        "run folder": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/checkpoints.json")
    args = parser.parse_args(argv)
    model = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))["pretrain"]["cmp"]
    embedded = [
        "method=cmp",
        "data.factory=models.synthetic.SyntheticDataModule",
        "data.kwargs={num_train: 4, num_val: 2, size: 128, batch_size: 2}",
        f"model={json.dumps(model['model'])}",
        "trainer.max_steps=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.val_check_interval=2",
        "figures.num_samples=1",
    ]
    cases = {
        "tiny test model": [*tiny("cmp"), "trainer.max_steps=3"],
        "embedded default model": embedded,
    }
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in cases.items():
            for mode in ("full", "weights"):
                out = Path(tmp) / f"{len(results)}"
                sizes = run_bytes(out, [*overrides, f"trainer.final_checkpoint={mode}"])
                results.append({"case": name, "final_checkpoint": mode, **sizes})
                print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
