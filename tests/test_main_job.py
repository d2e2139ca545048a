"""The main job from the CLI on a real SeaweedFS: a 3-shard run succeeds, launching it again is a
no-op, and --refresh re-creates byte-identical objects."""

import os
import re
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


def shard_lines(out: str) -> dict[str, str]:
    """``shard -> plan line`` for every shard the main job materialized (``[main] shard s (i/n...): ...``)."""
    return dict(re.findall(r"^\[main\] shard (shard=\S+) \(\d+/\d+[^)]*\): (.*)$", out, flags=re.M))


def main_job_env(server, home: Path, bucket: str, **settings: str) -> dict:
    """Environment of a small main-job run (test preset, tiny sizes) on ``server`` and ``home``."""
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "deploy/dagster.yaml", home / "dagster.yaml")
    sizes = dict(IH_PRESET="test", IH_N_PROCEDURAL_POSES="6", IH_SHARD_SIZE="2", IH_N_AUGMENTATIONS="1",
                 IH_OPTIMIZE_ITERATIONS="10", IH_N_VIEWS="1", IH_IMAGE_SIZE="96", IH_RENDERER="raster")
    return dict(os.environ, DAGSTER_HOME=str(home), IH_ENV="local", IH_S3_ENDPOINT=server.endpoint_url,
                IH_S3_BUCKET=bucket, **{**sizes, **settings})


def test_three_shard_run_then_noop_then_identical_refresh(seaweed_server, tmp_path):  # noqa: F811
    env = main_job_env(seaweed_server, tmp_path / "dagster_home", "main-job-test")
    first = _run(env)
    assert len(shard_lines(first)) == 3 and all("never materialized" in line for line in shard_lines(first).values())
    store = s3_storage(seaweed_server).model_copy(update={"bucket": "main-job-test"}).object_store()
    before = {k: store.get_bytes(k) for k in store.list_keys("renderih/")}
    assert any(k.endswith("_rgb.png") for k in before) and any("dataset_manifest" in k for k in before)
    second = _run(env)
    assert shard_lines(second) == {} and "(0 new in this run" in second
    assert "unpartitioned assets up to date" in second
    _run(env, "--refresh")
    after = {k: store.get_bytes(k) for k in store.list_keys("renderih/")}
    assert after.keys() == before.keys()
    assert [k for k in before if before[k] != after[k]] == []
