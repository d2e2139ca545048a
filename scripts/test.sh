#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
IH_WITH_BROWSER=1 bash scripts/setup.sh
export PYOPENGL_PLATFORM=egl GX_ANALYTICS_ENABLED=false
export HANDSYNTH_CACHE="${HANDSYNTH_CACHE:-$PWD/.local/cache}"
exec .venv/bin/python -m pytest "$@"
