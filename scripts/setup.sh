#!/usr/bin/env bash
# Set up everything the pipeline needs on a fresh machine; safe to run again (it skips what is done).
#  - Debian packages for headless rendering (Mesa EGL), installed only when missing;
#  - a virtualenv in .venv with torch 2.13.0 (CPU build) installed FIRST, so that no dependency
#    pulls a multi-GB CUDA build; GPU users may pre-install their own torch build in .venv;
#  - the project itself (editable) with its test extras, including the SeaweedFS binary.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libglapi-mesa libgbm1)
# the UI test's headless browser: only for the test command (scripts/test.sh sets IH_WITH_BROWSER)
if [ "${IH_WITH_BROWSER:-0}" = "1" ]; then APT_PACKAGES+=(chromium chromium-driver); fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "[setup] installing torch==2.13.0 (CPU build)"
    .venv/bin/pip install -q "torch==2.13.0"
  fi
  echo "[setup] installing the project and its dependencies"
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.setup-*
  touch "$stamp"
fi
# Blender (bpy 5.0.1, Python 3.11 only) lives in its own environment: it pins numpy<2 while pandas 3
# needs numpy>=2, and a worker process isolates Blender's memory and crashes from the pipeline
# (BlenderProc's way). The Cycles backend starts .venv-blender/bin/python as its worker.
if [ "${IH_WITH_BLENDER:-1}" = "1" ] && [ ! -f .venv-blender/.setup-bpy-5.0.1 ]; then
  BLENDER_PYTHON="${BLENDER_PYTHON:-python3.11}"
  if command -v "$BLENDER_PYTHON" >/dev/null 2>&1; then
    echo "[setup] installing bpy==5.0.1 into .venv-blender (Blender as a Python module, ~400 MB)"
    "$BLENDER_PYTHON" -m venv .venv-blender
    .venv-blender/bin/python -m pip install -q --upgrade pip
    .venv-blender/bin/pip install -q "bpy==5.0.1"
    touch .venv-blender/.setup-bpy-5.0.1
  else
    echo "[setup] WARNING: $BLENDER_PYTHON not found; the Cycles renderer is unavailable (raster still works)" >&2
  fi
fi
bash scripts/fetch_assets.sh
echo "[setup] ready: $(.venv/bin/python -c 'import torch, dagster; print("torch", torch.__version__, "dagster", dagster.__version__)')"
