#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv.
# Re-installs only when pyproject.toml changed since the last install (stamp file).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MOTION_SSL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

"$python" - <<'PY' || { echo "motion-ssl needs Python >= 3.10 (found $("$python" --version 2>&1))" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [ ! -x "$venv/bin/python" ]; then
    echo "[motion-ssl] creating virtual environment in $venv" >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.motion-ssl-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[motion-ssl] installing dependencies into $venv (first run takes a few minutes)" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$root[dev]" >&2
    echo "$want" > "$stamp"
fi
