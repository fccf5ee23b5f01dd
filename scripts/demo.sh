#!/usr/bin/env bash
# Install the project into .venv and reconstruct the bundled sample scene (samples/room, a COLMAP dataset)
# with embedded defaults: Prefect without a server, a local zarr store and exports under ./outputs/sample.
# No weights can be downloaded here, so the demo uses seeded RANDOM weights (model.weights=random): the
# pipeline runs for real, but the depth and poses are not meaningful. With real weights, pass e.g.
#   scripts/demo.sh model=da3-large model.weights=pretrained model.path=/path/to/DA3-LARGE
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
echo "[demo] reconstructing samples/room -> outputs/sample (UNTRAINED random weights unless you override model.*)"
exec .venv/bin/python -m flows.reconstruct scene=sample model=da3-small model.weights=random \
  export=glb+depth_vis+mini_npz "$@"
