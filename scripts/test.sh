#!/usr/bin/env bash
# Install everything the suite needs (.venv with the dev and app extras, the reference oracle venv) and run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh dev,app,eval
scripts/install_oracle.sh
# Debian's chromium for the gallery's browser test (root or sudo needed once per machine).
if ! command -v chromium >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "[test] installing Debian chromium"
  { $sudo_cmd apt-get install -y -q chromium || { $sudo_cmd apt-get update -q && $sudo_cmd apt-get install -y -q chromium; }; } >/dev/null 2>&1 \
    || echo "[test] could not install chromium; the gallery browser test will be skipped" >&2
fi
export DA3_ORACLE_PYTHON="$PWD/.venv-oracle/bin/python" DA3_REQUIRE_ORACLE=1
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "[test] pytest collected no tests"; rc=0; fi
exit "$rc"
