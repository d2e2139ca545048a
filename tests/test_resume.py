"""Resume after a kill: SIGKILL the main job while it renders a shard (holding the `render` pool
slot), then run it again: the dead run is marked failed, its slot freed, and the job finishes
without redoing what the killed run had already materialized."""

import signal
import subprocess
import sys
import time

from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from ih_assets.main_job import TAG_PID
from tests.s3_fixtures import seaweed_server  # noqa: F401  (fixture)
from tests.test_main_job import ROOT, main_job_env, shard_lines

STEP_STARTED = 'Started execution of step "rendered_views"'


def _kill_when_rendering(env: dict, log) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "ih_assets.main_job"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 480
    for line in proc.stderr:   # Dagster's console log: one line per event
        if STEP_STARTED in line:
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "rendered_views never started"
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the main job ended by itself ({proc.returncode}) before the kill"
    return proc


def test_sigkill_mid_shard_then_resume_to_completion(seaweed_server, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    env = main_job_env(seaweed_server, home, "resume-test", IH_N_VIEWS="4", IH_IMAGE_SIZE="128")
    with open(tmp_path / "killed.log", "w") as log:
        killed = _kill_when_rendering(env, log)

    with DagsterInstance.from_config(str(home)) as instance:
        [dead] = [r for r in instance.get_runs() if r.tags.get(TAG_PID) == str(killed.pid)
                  and r.job_name == "generate_shard"]
        assert dead.status == DagsterRunStatus.STARTED                       # what blocked the next run
        assert dead.run_id in instance.event_log_storage.get_concurrency_info("render").active_run_ids
        shard = dead.tags["dagster/partition"]

    resumed = subprocess.run([sys.executable, "-m", "ih_assets.main_job"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=480)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"run {dead.run_id} of a killed main job marked failed" in resumed.stdout
    plans = shard_lines(resumed.stdout)
    # the killed shard redoes only rendering onwards: its optimized poses survived the kill
    assert plans[shard].startswith("rendered_views (never materialized)"), plans[shard]
    assert "optimized_poses" not in plans[shard]
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("render").active_run_ids == set()
        assert set(instance.get_materialized_partitions(AssetKey("annotations"))) == set(
            instance.get_dynamic_partitions("pose_shards"))
