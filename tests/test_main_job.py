"""The main job from the CLI on a real SeaweedFS: of two jobs started together one runs the
3 shards and the other is refused, a third started with --wait queues behind it and finds nothing
to do, and --refresh re-creates byte-identical objects."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.s3_fixtures import s3_storage, seaweed_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def _run(env: dict, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "ih_assets.main_job", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)  # minutes on a loaded machine
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


def _start(env: dict, log: Path, *args: str) -> subprocess.Popen:
    """A main job writing its stdout to ``log`` and Dagster's log (stderr) beside it."""
    return subprocess.Popen([sys.executable, "-m", "ih_assets.main_job", *args], cwd=ROOT, env=env, text=True,
                            stdout=open(log, "w"), stderr=open(log.with_suffix(".err"), "w"))


def test_concurrent_start_refused_queued_noop_then_identical_refresh(seaweed_server, tmp_path):  # noqa: F811
    env = main_job_env(seaweed_server, tmp_path / "dagster_home", "main-job-test")
    together = {name: _start(env, tmp_path / f"{name}.out") for name in ("a", "b")}
    deadline = time.monotonic() + 1200
    while not any("[main]" in (tmp_path / f"{n}.out").read_text() for n in together):   # one holds the locks
        assert time.monotonic() < deadline and all(p.poll() in (None, 0, 3) for p in together.values())
        time.sleep(1)
    queued = _start(env, tmp_path / "queued.out", "--wait")
    codes = {name: proc.wait(timeout=1800) for name, proc in together.items()}
    winner, loser = sorted(together, key=lambda n: codes[n])
    assert (codes[winner], codes[loser]) == (0, 3), codes
    refusal = (tmp_path / f"{loser}.err").read_text()
    assert f"refused: the main job pid {together[winner].pid} on" in refusal and "--wait" in refusal
    first = (tmp_path / f"{winner}.out").read_text()
    assert len(shard_lines(first)) == 3 and all("never materialized" in line for line in shard_lines(first).values())
    assert "materialized in this run:" in first and "annotated images, manifest s3://main-job-test/" in first

    assert queued.wait(timeout=1800) == 0, (tmp_path / "queued.err").read_text()[-3000:]
    second = (tmp_path / "queued.out").read_text()
    assert f"waiting for the main job pid {together[winner].pid}" in second
    assert shard_lines(second) == {} and "unpartitioned assets up to date" in second

    store = s3_storage(seaweed_server).model_copy(update={"bucket": "main-job-test"}).object_store()
    before = {k: store.get_bytes(k) for k in store.list_keys("renderih/")}
    assert any("/render/" in k for k in before) and any("dataset_manifest" in k for k in before)
    _run(env, "--refresh")
    after = {k: store.get_bytes(k) for k in store.list_keys("renderih/")}
    assert after.keys() == before.keys()
    assert [k for k in before if before[k] != after[k]] == []
