#!/usr/bin/env bash
# Create .venv and install the project into it. Usage: scripts/setup_env.sh [extras], e.g. "dev".
# Torch goes in first so no dependency can pull a multi-GB CUDA build by accident:
#   CPU (default):  TORCH_SPEC="torch==2.13.0"
#   CUDA machine:   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
spec="."; [ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.installed-$(cat pyproject.toml scripts/setup_env.sh web/package-lock.json | sha256sum | cut -c1-16)-${extras:-base}"
if [ -f "$stamp" ]; then
  echo "[setup] .venv is up to date ($spec)"; exit 0
fi

pip_install() {  # quiet on success, the full log on failure
  local log; log=$(mktemp)
  if ! .venv/bin/python -m pip install "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2; rm -f "$log"; echo "[setup] pip install $* failed" >&2; exit 1
  fi
  rm -f "$log"
}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install -q --upgrade pip
echo "[setup] installing $TORCH_SPEC"
# shellcheck disable=SC2086
pip_install -q $TORCH_SPEC
scripts/build_web.sh
echo "[setup] installing the project ($spec)"
pip_install -q -e "$spec"
.venv/bin/python -c "import da3core, flows, tasks, torch; print('[setup] ok: torch', torch.__version__)"
rm -f .venv/.installed-*; touch "$stamp"
