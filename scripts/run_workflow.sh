#!/usr/bin/env bash
# The README's main command: set up .venv, then run the whole DAG on the embedded default.
# Extra arguments go to snakemake (e.g. a target rule, --configfile, --dry-run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/ensure_venv.sh"
cd "$root"
if [ "$#" -eq 0 ]; then set -- --cores all; fi
exec "$root/.venv/bin/snakemake" "$@"
