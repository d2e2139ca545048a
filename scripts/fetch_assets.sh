#!/usr/bin/env bash
# Fetch the third-party assets the pipeline renders with, by exact version, from the npm registry
# (safe to run again: it skips what is there). Each package's license file is kept beside its files.
#  - @pmndrs/assets@1.7.0 (CC0): 18 Poly Haven HDRIs as hdri/*.exr.js (base64 EXR, 512x256);
#  - @webxr-input-profiles/assets@1.0.20 (MIT): the rigged generic hand, generic-hand/{left,right}.glb.
# Destination: $IH_ASSETS_DIR (default .local/assets). Without npm or the registry it warns and
# exits 0: the pipeline then falls back to procedural maps, and says so in its logs.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${IH_ASSETS_DIR:-$PWD/.local/assets}"
mkdir -p "$dest"

fetch() {  # fetch NPM_SPEC FOLDER PATTERN...: extract the matching files of the package into $dest/FOLDER
  local spec=$1 folder=$2; shift 2
  [ -f "$dest/$folder/.complete" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then
    echo "[assets] npm not found: skipping $spec" >&2; return 0
  fi
  local tmp; tmp=$(mktemp -d)
  if ! (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>npm.err); then
    echo "[assets] npm pack $spec failed: $(tail -n 2 "$tmp/npm.err")" >&2; rm -rf "$tmp"; return 0
  fi
  rm -rf "${dest:?}/$folder"; mkdir -p "$dest/$folder"
  tar xzf "$tmp"/*.tgz -C "$dest/$folder" --strip-components=1 --wildcards "$@"
  rm -rf "$tmp"
  touch "$dest/$folder/.complete"
  echo "[assets] $spec -> $dest/$folder"
}

fetch @pmndrs/assets@1.7.0 pmndrs-assets-1.7.0 'package/LICENSE' 'package/package.json' 'package/hdri/*.exr.js'
fetch @webxr-input-profiles/assets@1.0.20 webxr-input-profiles-assets-1.0.20 'package/LICENSE.md' \
  'package/package.json' 'package/dist/profiles/generic-hand/*'
