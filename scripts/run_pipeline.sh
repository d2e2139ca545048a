#!/usr/bin/env bash
# Set up (if needed), start the local S3 server (SeaweedFS on 127.0.0.1:8333) unless one already
# answers there, materialize the whole asset graph at the small default size (preset `demo`), and
# write a contact sheet and the local export folders under .local/results/ (paths printed).
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
# The result as files, with the commands README's "Where the results are" shows: a contact sheet
# and the local export folders (InterHand2.6M and IntagHand layouts, each with SHA256SUMS).
source="s3://$IH_S3_BUCKET/${IH_S3_PREFIX:-renderih}"
.venv/bin/ih-pipeline preview --source "$source" --out .local/results/contact_sheet.png
.venv/bin/ih-pipeline export --source "$source" --to .local/results/exports
echo "[run] contact sheet: $PWD/.local/results/contact_sheet.png"
echo "[run] exports:       $PWD/.local/results/exports/interhand26m and $PWD/.local/results/exports/intaghand"
