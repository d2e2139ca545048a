"""One main job per instance and bucket: a second one is refused (or waits with --wait), a killed
holder never blocks the next job, and a stale lease is taken over only when its holder is gone."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from ih_assets import job_lock
from ih_assets.job_lock import BucketLease, InstanceLock, JobLockedError
from resources.storage import MemoryStorage
from tests.test_main_job import ROOT

KEY = "p/_main_job/lease.json"


@pytest.fixture(autouse=True)
def _no_settle_pause(monkeypatch):
    monkeypatch.setattr(job_lock, "SETTLE_S", 0.0)


def test_second_main_job_on_the_instance_is_refused_in_one_line(tmp_path):
    shutil.copy(ROOT / "deploy/dagster.yaml", tmp_path / "dagster.yaml")
    lock = InstanceLock(tmp_path)
    lock.acquire(False, print)
    try:
        done = subprocess.run([sys.executable, "-m", "ih_assets.main_job"], cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, DAGSTER_HOME=str(tmp_path)), timeout=300)
    finally:
        lock.release()
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and f"refused: the main job pid {os.getpid()} on" in done.stderr
    assert "main_job.lock" in done.stderr and "--wait" in done.stderr


def test_instance_lock_waits_with_wait_and_is_free_once_its_holder_ends(tmp_path):
    first = InstanceLock(tmp_path)
    first.acquire(False, print)
    with pytest.raises(JobLockedError, match=f"the main job pid {os.getpid()} "):
        InstanceLock(tmp_path).acquire(False, print)
    second, waited = InstanceLock(tmp_path), []
    thread = threading.Thread(target=second.acquire, args=(True, waited.append))
    thread.start()
    while not waited:
        time.sleep(0.01)
    assert thread.is_alive()          # blocked until the first one lets go
    first.release()
    thread.join(timeout=60)
    assert not thread.is_alive() and "waiting for the main job pid" in waited[0]
    second.release()
    # a holder killed with SIGKILL: the kernel drops its flock with the process
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ih_assets.job_lock import InstanceLock; "
                               f"InstanceLock({str(tmp_path)!r}).acquire(False, print); print('held', flush=True); "
                               "time.sleep(600)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(JobLockedError, match=f"pid {holder.pid} "):
        InstanceLock(tmp_path).acquire(False, print)
    holder.kill()
    holder.wait()
    third = InstanceLock(tmp_path)
    third.acquire(False, print)
    third.release()


def _lease(store, **holder) -> None:
    store.put_bytes(KEY, json.dumps({"token": "other", "expires": holder.pop("expires", time.time() + 600),
                                     "holder": {"pid_start": "", "started": "earlier", **holder}}).encode())


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_bucket_lease_refuses_a_live_holder_and_takes_over_a_gone_one(tmp_path):
    store = MemoryStorage(name=f"lease-{tmp_path.name}").object_store()
    first = BucketLease(store, KEY, renew_every=0.05)
    assert first.acquire(False, print) == ""
    expires = json.loads(store.get_bytes(KEY))["expires"]
    time.sleep(0.3)
    assert json.loads(store.get_bytes(KEY))["expires"] > expires          # renewed while held
    with pytest.raises(JobLockedError, match=f"pid {os.getpid()} .*bucket lease memory"):
        BucketLease(store, KEY).acquire(False, print)
    first.release()
    assert not store.exists(KEY)

    host = socket.gethostname()
    _lease(store, host="elsewhere", pid=1)                                # live on another host
    with pytest.raises(JobLockedError, match="pid 1 on elsewhere"):
        BucketLease(store, KEY).acquire(False, print)
    _lease(store, host="elsewhere", pid=1, expires=time.time() - 1)        # expired
    taken = BucketLease(store, KEY)
    assert "expired" in taken.acquire(False, print)
    taken.release()
    _lease(store, host=host, pid=_dead_pid(), pid_start="1")               # killed on this host (a reused pid
    # has another start time, so it still counts as gone)
    taken = BucketLease(store, KEY)
    assert "is gone (killed)" in taken.acquire(False, print)
    taken.release()
