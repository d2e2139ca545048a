#!/usr/bin/env bash
# Set up (if needed), start the local S3 server (SeaweedFS on 127.0.0.1:8333) unless one already
# answers there, and materialize the whole asset graph at the small default size (preset `demo`).
# Runs are recorded in .dagster_home, so `scripts/ui.sh` shows them afterwards; a killed run is
# finished by running this again. Extra arguments go to `python -m ih_assets.main_job`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
started=""
if ! .venv/bin/python -m resources.seaweed ping --endpoint "$IH_S3_ENDPOINT" 2>/dev/null; then
  echo "[run] starting SeaweedFS (data in .local/seaweed, log in .local/seaweed/weed.log)"
  mkdir -p .local/seaweed
  .venv/bin/python -m resources.seaweed serve --dir .local/seaweed --s3-port "$IH_S3_PORT" > .local/seaweed.out 2>&1 &
  started=$!
  trap '[ -n "$started" ] && kill "$started" 2>/dev/null && wait "$started" 2>/dev/null; true' EXIT
  .venv/bin/python -m resources.seaweed ping --endpoint "$IH_S3_ENDPOINT" --wait 60
fi
.venv/bin/python -m ih_assets.main_job "$@"
