#!/usr/bin/env bash
# The GPU suite in one command: the CUDA-only tests (gsplat against the CPU rasterizer, bf16 autocast parity, ray
# pose) and the GPU benchmarks beside the reference (da3-large 16 views @504 images/s and peak memory, the largest
# da3-large view count per forward, Video Depth Anything vits ms/frame, flow overhead). About 8 minutes at most on
# one large GPU: every step has a time limit and the whole run a budget (GPU_CHECK_SECONDS, default 450).
#   scripts/gpu_check.sh              # figures are appended to benchmarks/RESULTS.md
#   scripts/gpu_check.sh --no-write   # print them only
# Without CUDA it runs its CPU-side self-check instead (scripts parse, code compiles, tests collect, every benchmark
# code path runs at toy size) and says that no GPU was measured. It uses .venv and .venv-oracle as scripts/test.sh
# builds them; on a GPU machine build both with TORCH_SPEC set to a CUDA wheel index (see README).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export DA3_ORACLE_PYTHON="${DA3_ORACLE_PYTHON:-$PWD/.venv-oracle/bin/python}"
export HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
write=""
[ "${1:-}" = "--no-write" ] && write="--no-write"
budget="${GPU_CHECK_SECONDS:-450}"
failed=()

step() {  # step NAME SECONDS CMD...: run CMD within min(SECONDS, budget left); record a failure and go on
  local name=$1 limit=$2 left=$((budget - SECONDS)) rc
  shift 2
  if [ "$left" -le 10 ]; then echo "== $name: SKIPPED (time budget spent)"; failed+=("$name (skipped)"); return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout -k 10 --signal=INT "$limit" "$@"
  rc=$?
  if [ "$rc" -eq 0 ]; then echo "== $name: ok in $((SECONDS - start))s"
  else echo "== $name: FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ", time limit")) after $((SECONDS - start))s"
    failed+=("$name"); fi
}

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB')"
  if ! "$DA3_ORACLE_PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "warning: the oracle venv ($DA3_ORACLE_PYTHON) has no CUDA torch, so the reference columns will fail;"
    echo "         rebuild it with TORCH_SPEC=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128\" scripts/install_oracle.sh"
  fi
  # gsplat compiles its CUDA kernels on first use (minutes on a fresh machine; cached afterwards).
  step "CUDA tests (pytest -m gpu)" 210 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
  step "da3-large 16 views @504: images/s, peak memory" 90 \
    "$PY" benchmarks/model_forward.py --device cuda --presets da3-large --views 16 --rounds 1 --reps 3 $write
  step "da3-large views per forward" 120 \
    "$PY" benchmarks/scaling.py --device cuda --preset da3-large --res 504 --find-max --time-cap 30 $write
  step "Video Depth Anything vits ms/frame" 45 "$PY" benchmarks/model_forward.py --vda --device cuda $write
  step "flow overhead (da3-small, 16 views @504)" 90 "$PY" benchmarks/flow_overhead.py --views 16 --res 504 --runs 2 $write
else
  echo "No CUDA device here: CPU-side self-check only. NO GPU WAS MEASURED."
  step "shell scripts parse" 30 bash -c 'for f in scripts/*.sh; do bash -n "$f" || exit 1; done'
  step "python compiles" 60 "$PY" -m compileall -q benchmarks da3core flows tasks tests
  step "GPU tests collect (skipped without CUDA)" 120 \
    bash -c "\"$PY\" -m pytest --collect-only -q -m gpu tests | tail -3 | tee /dev/stderr | grep -qE '^[1-9][0-9]*/[0-9]+ tests collected'"
  step "forward benchmark path, toy size" 120 \
    "$PY" benchmarks/model_forward.py --presets da3-small --views 1 --res 56 --rounds 1 --reps 1 --no-write
  step "views-per-forward path, toy size" 120 \
    "$PY" benchmarks/scaling.py --find-max --start 1 --max-views 2 --res 56 --no-write
  step "VDA ms/frame path, toy size" 60 \
    "$PY" benchmarks/model_forward.py --vda --vda-frames 4 --vda-input-size 56 --no-write
  step "flow overhead path, toy size" 120 "$PY" benchmarks/flow_overhead.py --views 2 --res 56 --runs 1 --no-write
  echo "Self-check finished in ${SECONDS}s. NO GPU WAS MEASURED: run scripts/gpu_check.sh on a CUDA machine for the figures."
fi

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'gpu_check: %d step(s) failed: %s\n' "${#failed[@]}" "$(IFS=';'; echo "${failed[*]}")" >&2
  exit 1
fi
echo "gpu_check: all steps passed in ${SECONDS}s"
