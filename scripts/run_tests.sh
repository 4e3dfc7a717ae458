#!/usr/bin/env bash
# The README's test command: set up .venv, then run the test suite on CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/ensure_venv.sh"
cd "$root"
export CUDA_VISIBLE_DEVICES=""
exec "$root/.venv/bin/python" -m pytest "$@"
