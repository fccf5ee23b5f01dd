#!/usr/bin/env bash
# Bundle the gallery's browser assets from the npm registry (pinned in web/package-lock.json) into
# flows/web/vendor/, so the gallery serves them itself and never loads a CDN at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
out=flows/web/vendor
if [ -f "$out/model-viewer.min.js" ] && [ "$out/.lock" -nt web/package-lock.json ]; then
  echo "[web] assets are up to date"; exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "[web] npm not found: the gallery will serve scenes without its 3D viewer (install Node.js, rerun scripts/build_web.sh)" >&2
  exit 0
fi
(cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
mkdir -p "$out"
cp web/node_modules/@google/model-viewer/dist/model-viewer.min.js "$out/"
cp web/node_modules/@google/model-viewer/LICENSE "$out/model-viewer.LICENSE" 2>/dev/null || true
touch "$out/.lock"
echo "[web] bundled model-viewer into $out"
