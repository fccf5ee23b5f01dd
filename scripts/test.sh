#!/usr/bin/env bash
# Install everything the suite needs (.venv with the dev extra, the reference oracle venv) and run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh dev
scripts/install_oracle.sh
export DA3_ORACLE_PYTHON="$PWD/.venv-oracle/bin/python" DA3_REQUIRE_ORACLE=1
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "[test] pytest collected no tests"; rc=0; fi
exit "$rc"
