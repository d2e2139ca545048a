"""Resume after a kill: SIGKILL the main job while it renders a shard (holding the `render` pool
slot) once the shard's first render block is stored, then run it again: the dead run is marked
failed, its slot freed, its render workers died with it, and the resumed run renders exactly the
blocks (and images) that were not stored before the kill."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from ih_assets import versions
from ih_assets.main_job import TAG_PID
from tests.s3_fixtures import s3_storage, seaweed_server  # noqa: F401  (fixture)
from tests.test_main_job import ROOT, main_job_env, shard_lines

FIRST_BLOCK = re.compile(r"rendered_views - block \S+: \d+ images in")


def _children(pid: int) -> set[int]:
    """Child processes of ``pid`` (any of its threads may have started one)."""
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children |= {int(c) for c in (task / "children").read_text().split()}
        except FileNotFoundError:   # a thread that ended meanwhile
            pass
    return children


def _kill_after_first_block(env: dict, log) -> tuple[subprocess.Popen, set[int]]:
    """Start the main job; SIGKILL it when its first render block is stored -> (process, its children then)."""
    proc = subprocess.Popen([sys.executable, "-m", "ih_assets.main_job"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 480
    for line in proc.stderr:   # Dagster's console log: one line per event
        if FIRST_BLOCK.search(line):
            workers = _children(proc.pid)
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "no render block was stored"
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the main job ended by itself ({proc.returncode}) before the kill"
    return proc, workers


def _gone(pids: set[int], timeout: float = 120.0) -> bool:
    """Whether every pid has exited (render workers die with their parent) within ``timeout``."""
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"   # not a zombie
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(running(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_sigkill_mid_shard_then_resume_renders_only_the_missing_blocks(seaweed_server, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    env = main_job_env(seaweed_server, home, "resume-test", IH_N_VIEWS="4", IH_IMAGE_SIZE="128", IH_SHARD_SIZE="3",
                       IH_N_AUGMENTATIONS="2", IH_RENDER_WORKERS="1")
    with open(tmp_path / "killed.log", "w") as log:
        killed, workers = _kill_after_first_block(env, log)
    assert workers and _gone(workers), f"render workers {workers} outlived the killed main job"

    with DagsterInstance.from_config(str(home)) as instance:
        [dead] = [r for r in instance.get_runs() if r.tags.get(TAG_PID) == str(killed.pid)
                  and r.job_name == "generate_shard"]
        assert dead.status == DagsterRunStatus.STARTED                       # what blocked the next run
        assert dead.run_id in instance.event_log_storage.get_concurrency_info("render").active_run_ids
        shard = dead.tags["dagster/partition"]
    store = s3_storage(seaweed_server).model_copy(update={"bucket": "resume-test"}).object_store()
    stored = {k: len(json.loads(store.get_bytes(k))["rows"])
              for k in store.list_keys(f"renderih/render/{shard}/") if k.endswith(".index.json")}

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
        meta = versions.latest_materialization(instance, AssetKey("rendered_views"), shard).asset_materialization.metadata
    blocks, images = meta["blocks"].value, meta["images"].value
    assert 1 <= len(stored) < blocks, (stored, blocks)                     # the kill came part way
    assert meta["blocks_skipped"].value == len(stored)
    assert meta["blocks_rendered"].value == blocks - len(stored)
    assert meta["images_rendered"].value == images - sum(stored.values())  # only the images not stored before
