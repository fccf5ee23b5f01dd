#!/usr/bin/env bash
# Install the project into .venv and reconstruct the bundled sample scene with embedded defaults:
# Prefect without a server, a local zarr store and exports under ./outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
if ! .venv/bin/python -c "import flows.reconstruct" 2>/dev/null; then
  echo "[demo] installed. The reconstruction flow (flows/reconstruct.py) is not in this checkout yet."
  exit 0
fi
exec .venv/bin/python -m flows.reconstruct "$@"
