# Environment shared by the run, UI and test scripts (sourced, not executed).
export IH_ENV="${IH_ENV:-local}"
export IH_S3_PORT="${IH_S3_PORT:-8333}"
export IH_S3_ENDPOINT="${IH_S3_ENDPOINT:-http://127.0.0.1:$IH_S3_PORT}"
export IH_S3_BUCKET="${IH_S3_BUCKET:-renderih}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
export GX_ANALYTICS_ENABLED=false
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
export HANDSYNTH_CACHE="${HANDSYNTH_CACHE:-$PWD/.local/cache}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
