#!/usr/bin/env bash
# Set up (if needed), start the local S3 server unless one answers, and open the Dagster UI
# (dagster dev with workspace.yaml) on http://127.0.0.1:3000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
if ! .venv/bin/python -m resources.seaweed ping --endpoint "$IH_S3_ENDPOINT" 2>/dev/null; then
  mkdir -p .local/seaweed
  .venv/bin/python -m resources.seaweed serve --dir .local/seaweed --s3-port "$IH_S3_PORT" > .local/seaweed.out 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; true' EXIT
  .venv/bin/python -m resources.seaweed ping --endpoint "$IH_S3_ENDPOINT" --wait 60
fi
.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${IH_UI_PORT:-3000}"
