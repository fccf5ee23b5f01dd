#!/usr/bin/env bash
# Install everything the suite needs (.venv with the dev, app and eval extras, the reference oracle venv), run ruff and
# mypy, then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh dev,app,eval
scripts/install_oracle.sh
# Debian packages some tests need (root or sudo needed once per machine); without them those tests are skipped.
install_debian() {  # install_debian PACKAGE "what is skipped without it"
  command -v "$1" >/dev/null 2>&1 && return 0
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "[test] installing Debian $1"
  { $sudo_cmd apt-get install -y -q "$1" || { $sudo_cmd apt-get update -q && $sudo_cmd apt-get install -y -q "$1"; }; } \
    >/dev/null 2>&1 || echo "[test] could not install $1; $2 will be skipped" >&2
}
install_debian chromium "the gallery browser test"
install_debian strace "the kill tests that inject SIGKILL at a syscall"
export DA3_ORACLE_PYTHON="$PWD/.venv-oracle/bin/python" DA3_REQUIRE_ORACLE=1
set +e
echo "[test] ruff (lint, format) and mypy"
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . && .venv/bin/mypy --no-error-summary
lint=$?
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "[test] pytest collected no tests"; rc=0; fi
if [ "$lint" -ne 0 ]; then echo "[test] ruff or mypy found problems (above)"; [ "$rc" -eq 0 ] && rc=1; fi
exit "$rc"
