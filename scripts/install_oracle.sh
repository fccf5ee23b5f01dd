#!/usr/bin/env bash
# Build .venv-oracle: the reference depth-anything-3==0.1.1, used only as a test oracle.
# It needs numpy<2 and a torchvision patched to import beside CPU torch, so it lives in its own venv;
# tests drive it through subprocesses (see tests/oracle/). Minimal recipe: only what import, inference and
# the benchmark code (bench/: open3d, scikit-learn) need, without xformers, gradio and the service stack.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
venv=.venv-oracle
stamp="$venv/.installed-$(sha256sum scripts/install_oracle.sh | cut -c1-16)"
[ -f "$stamp" ] && { echo "[oracle] $venv is up to date"; exit 0; }

pip_install() {
  local log; log=$(mktemp)
  if ! "$venv/bin/python" -m pip install "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2; rm -f "$log"; echo "[oracle] pip install $* failed" >&2; exit 1
  fi
  rm -f "$log"
}

[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
echo "[oracle] installing depth-anything-3==0.1.1 into $venv"
pip_install -q --upgrade pip
# shellcheck disable=SC2086
pip_install -q $TORCH_SPEC
pip_install -q --no-deps depth-anything-3==0.1.1 torchvision==0.28.0 evo==1.38.1
pip_install -q "numpy<2" einops omegaconf addict safetensors huggingface_hub pillow opencv-python-headless==4.11.0.86 \
  scipy matplotlib moviepy==1.0.3 trimesh plyfile pycolmap e3nn imageio
# The benchmark (depth_anything_3.bench) imports open3d and scikit-learn. open3d 0.19.0 runs with numpy<2 (and is the
# version the main venv pins: 0.20.0's TSDF volumes extract empty meshes); its declared deps come along.
pip_install -q "numpy<2" open3d==0.19.0 scikit-learn==1.9.1
# PyPI's torchvision is a CUDA build; guard its two unguarded fake-op registrations so it imports with CPU torch.
tv=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/torchvision/_meta_registrations.py
sed -i 's/^@torch.library.register_fake("torchvision::\(q\{0,1\}nms\)")/@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda f: f))/' "$tv"
"$venv/bin/python" -c "from depth_anything_3.api import DepthAnything3; import depth_anything_3.bench.datasets.dtu; print('[oracle] ok')"
rm -f "$venv"/.installed-*; touch "$stamp"
