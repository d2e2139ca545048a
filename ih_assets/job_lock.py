"""One main job at a time per Dagster instance and per bucket.

Two main jobs at once would plan from records the other is changing: both render every missing
shard, and one deletes as orphans the objects of shards the other has just registered. A second
main job therefore **refuses** to start, naming the one that runs (``--wait`` queues it behind
instead). Refusing is the default because the running job already makes everything the second
would: a second start is almost always a slip (a second terminal, a double click), and saying so
at once is better than a terminal that silently hangs for hours.

- Instance: an exclusive ``flock`` on ``$DAGSTER_HOME/main_job.lock``. The kernel drops it when
  its process ends in any way (SIGKILL included), so a killed job never blocks the next one. The
  file holds the holder's host, pid and start time for the message.
- Bucket: a lease object ``<prefix>/_main_job/lease.json`` (holder, expiry), renewed every
  :data:`LEASE_RENEW_S` seconds by a thread and deleted at the end. It stops a second instance
  (another ``DAGSTER_HOME`` or machine) on the same bucket. A lease whose holder is a dead process
  on this host is taken over at once (a killed job), any other one only once it has expired. S3
  offers no compare-and-swap on every server, so the written lease is read back after
  :data:`SETTLE_S`: two instances starting within that moment are told apart by the last writer
  (the instance lock, by contrast, is exact).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from handsynth.processes import process_alive, process_start

LOCK_FILE = "main_job.lock"
LEASE_KEY = "_main_job/lease.json"
LEASE_TTL_S = 120.0
LEASE_RENEW_S = 30.0
SETTLE_S = 1.0
WAIT_POLL_S = 5.0


class JobLockedError(RuntimeError):
    """Another main job holds the instance lock or the bucket lease; the message names it."""


def this_process() -> dict[str, Any]:
    """Who holds a lock: host, pid, pid start, wall-clock start and command line."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv)}


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a main job (holder unknown)"
    return f"the main job pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')})"


class InstanceLock:
    """The exclusive ``flock`` on ``<home>/main_job.lock`` (see the module docstring)."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.path = Path(home) / LOCK_FILE
        self._fd: int | None = None

    def _holder(self, fd: int) -> dict[str, Any] | None:
        try:
            return json.loads(os.pread(fd, 4096, 0) or b"null")
        except (OSError, ValueError):
            return None   # being rewritten by its holder this very moment

    def acquire(self, wait: bool, on_wait: Callable[[str], None]) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = describe(self._holder(fd))
                if not wait:
                    raise JobLockedError(f"{holder} holds {self.path}: refusing to start a second main job on this "
                                         "instance (it would redo the same work); wait for it, or pass --wait") from None
                on_wait(f"waiting for {holder} (instance lock {self.path})")
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(this_process()).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Unlock (the file stays: removing it would race with a job opening it right now)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class BucketLease:
    """The lease object in the bucket (see the module docstring). ``store`` has ``get_bytes``,
    ``put_bytes``, ``exists`` and ``delete``; ``key`` is the lease's full object key."""

    def __init__(self, store: Any, key: str, ttl: float = LEASE_TTL_S, renew_every: float = LEASE_RENEW_S) -> None:
        self.store, self.key, self.ttl, self.renew_every = store, key, ttl, renew_every
        self.token = uuid.uuid4().hex
        self.holder = this_process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        if not self.store.exists(self.key):
            return None
        try:
            lease = json.loads(self.store.get_bytes(self.key))
        except (ValueError, KeyError):   # unreadable, or deleted since: as good as absent
            return None
        return lease if isinstance(lease, dict) else None

    def _write(self) -> None:
        self.store.put_bytes(self.key, json.dumps({"token": self.token, "holder": self.holder,
                                                   "expires": time.time() + self.ttl}).encode())

    def _free(self, lease: dict[str, Any] | None) -> str | None:
        """Why ``lease`` does not stop us ('' = no lease), or None when it does."""
        if lease is None:
            return ""
        holder = lease.get("holder") or {}
        if lease.get("token") == self.token:
            return ""
        if float(lease.get("expires", 0)) < time.time():
            return f"the lease of {describe(holder)} expired"
        if holder.get("host") == self.holder["host"] and not process_alive(int(holder.get("pid", 0)),
                                                                           str(holder.get("pid_start", ""))):
            return f"{describe(holder)} is gone (killed); its lease is taken over"
        return None

    def acquire(self, wait: bool, on_wait: Callable[[str], None]) -> str:
        """Hold the lease; returns a note when a stale lease was taken over ('' otherwise)."""
        while True:
            lease = self._read()
            note = self._free(lease)
            if note is not None:
                self._write()
                time.sleep(SETTLE_S)
                lease = self._read()
                if lease is not None and lease.get("token") == self.token:
                    self._thread = threading.Thread(target=self._renew, name="main-job-lease", daemon=True)
                    self._thread.start()
                    return note
            holder = describe((lease or {}).get("holder"))
            uri = self.store.uri(self.key)
            if not wait:
                raise JobLockedError(f"{holder} holds the bucket lease {uri}: refusing to start a second main job on "
                                     "this bucket (it would redo the same work and delete shards the other one is "
                                     "making); wait for it, or pass --wait")
            on_wait(f"waiting for {holder} (bucket lease {uri})")
            time.sleep(WAIT_POLL_S)

    def _renew(self) -> None:
        warned = False
        while not self._stop.wait(self.renew_every):
            try:
                self._write()
            except Exception as exc:  # the store is down: the run itself will say so
                if not warned:
                    print(f"[main] warning: cannot renew the bucket lease {self.key}: {exc}", file=sys.stderr)
                    warned = True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        lease = self._read()
        if lease is not None and lease.get("token") == self.token:
            self.store.delete(self.key)


@contextlib.contextmanager
def instance_lock(home: str | os.PathLike[str], wait: bool, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the instance lock for the duration of the block."""
    lock = InstanceLock(home)
    lock.acquire(wait, log)
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def bucket_lease(store: Any, prefix: str, wait: bool, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the bucket lease under ``prefix`` for the duration of the block."""
    lease = BucketLease(store, "/".join(p for p in (prefix, LEASE_KEY) if p))
    note = lease.acquire(wait, log)
    if note:
        log(note)
    try:
        yield
    finally:
        lease.release()
