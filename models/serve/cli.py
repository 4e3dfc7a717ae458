"""``motion-ssl``: the project's console command; ``motion-ssl serve --run <run folder>``.

Also ``python -m models.serve serve --run ...`` (the same code, without the installed script).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from models.serve.engine import CMPEngine
from models.serve.gallery import export_gallery
from models.serve.run import RunError, load_cmp_run
from models.serve.server import ServeState, make_server

__all__ = ["main", "build_state"]


def build_state(run_dir: Path, device: str | None = None, gallery: int = 12) -> ServeState:
    """Load the run (``RunError`` when it cannot be served) and export its gallery once."""
    run = load_cmp_run(run_dir, device)
    names = export_gallery(run.run_dir, run.config, gallery)
    info = {
        "run": run.run_dir.name,
        "checkpoint": run.checkpoint.name,
        "step": run.global_step,
        "device": str(run.device),
        "backbone": str((run.config.get("model") or {}).get("backbone", "?")),
    }
    logging.getLogger(__name__).info("gallery: %d frames", len(names))
    return ServeState(CMPEngine.from_run(run), run.run_dir, info)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="motion-ssl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="a web page to poke a trained CMP model")
    serve.add_argument("--run", required=True, type=Path, help="results/pretrain/cmp/<run>")
    serve.add_argument("--port", type=int, default=8000, help="0: any free port")
    serve.add_argument("--host", default="127.0.0.1", help="default loopback only")
    serve.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    serve.add_argument("--gallery", type=int, default=12, help="validation frames to offer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        state = build_state(args.run, args.device, args.gallery)
    except RunError as error:
        print(f"motion-ssl serve: {error}", file=sys.stderr)
        return 2
    server = make_server(state, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.run} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
