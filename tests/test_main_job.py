"""The main job from the CLI on a real SeaweedFS: a 3-shard run succeeds, launching it again is a
no-op, and --refresh re-creates byte-identical objects."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.s3_fixtures import s3_storage, seaweed_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def _run(env: dict, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "ih_assets.main_job", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_three_shard_run_then_noop_then_identical_refresh(seaweed_server, tmp_path):  # noqa: F811
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy/dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), IH_ENV="local", IH_S3_ENDPOINT=seaweed_server.endpoint_url,
               IH_S3_BUCKET="main-job-test", IH_PRESET="test", IH_N_PROCEDURAL_POSES="6", IH_SHARD_SIZE="2",
               IH_N_AUGMENTATIONS="1", IH_OPTIMIZE_ITERATIONS="10", IH_N_VIEWS="1", IH_IMAGE_SIZE="96")
    first = _run(env)
    assert first.count("[main] shard shard=") == 3
    store = s3_storage(seaweed_server).model_copy(update={"bucket": "main-job-test"}).object_store()
    before = {k: store.get_bytes(k) for k in store.list_keys("renderih/")}
    assert any(k.endswith("_rgb.png") for k in before) and any("dataset_manifest" in k for k in before)
    second = _run(env)
    assert "[main] shard shard=" not in second and "(0 new in this run" in second
    _run(env, "--refresh")
    after = {k: store.get_bytes(k) for k in store.list_keys("renderih/")}
    assert after.keys() == before.keys()
    assert [k for k in before if before[k] != after[k]] == []
