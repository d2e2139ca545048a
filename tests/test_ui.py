"""The Dagster UI for real: `dagster dev` on loopback, GraphQL lists every asset and check, a
materialization of the sources and of one shard succeeds, and headless Chromium screenshots of
the asset graph and of each asset group are saved to docs/ (the README shows them)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from resources.seaweed import free_ports
from tests.s3_fixtures import seaweed_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def _session_members(sid: int) -> set[int]:
    """Live (non-zombie) processes of session ``sid``: ``dagster dev`` and everything it started."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, _ppid, _pgrp, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            except (OSError, ValueError):
                continue
            if int(session) == sid and state != "Z":
                members.add(int(entry.name))
    return members


def stop_process_group(proc: subprocess.Popen, grace: float = 30.0) -> set[int]:
    """Stop a process started with ``start_new_session=True`` and all it started: SIGINT (what
    Ctrl-C sends; ``dagster dev`` shuts its webserver, daemon and code servers down on it), then
    SIGKILL to the whole group for whatever lingers after ``grace`` seconds. Returns the pids that
    still live afterwards (none, unless a child left the session)."""
    os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    while _session_members(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap our direct child so it does not linger as a zombie
        time.sleep(0.2)
    if _session_members(proc.pid):
        for pid in _session_members(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)   # killpg misses members that moved to another group
            except ProcessLookupError:
                pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # orphans are reaped by init asynchronously
    return _session_members(proc.pid)


def _wait_for(condition, what: str, within: float = 120.0) -> None:
    """Poll ``condition`` (a loaded machine starts processes and pages in seconds, not ms)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {within:.0f} s"
        time.sleep(0.2)


def test_stop_process_group_kills_what_ignores_sigint():
    proc = subprocess.Popen(["sh", "-c", "trap '' INT; sleep 300 & sleep 300 & wait"], start_new_session=True)
    _wait_for(lambda: len(_session_members(proc.pid)) == 3, "the shell and its two sleeps")
    grace = 1.0
    started = time.monotonic()
    assert stop_process_group(proc, grace=grace) == set()
    # nothing ended on SIGINT, so the whole grace passed before SIGKILL; the shell either was
    # killed itself or returned from `wait` once SIGKILL had taken its children (which of the two
    # depends on the order the kernel delivers the kills: both are a stopped group)
    assert time.monotonic() - started >= grace
    assert proc.returncode in (-signal.SIGKILL, 0)


def _default_sigint() -> None:
    """A test run started in the background (``cmd &``) ignores SIGINT, and children inherit that;
    ``dagster dev`` must get the default so that SIGINT shuts it down cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", method="POST",
                                 data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture(scope="module")
def dagster_dev(seaweed_server, tmp_path_factory):  # noqa: F811
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "deploy/dagster.yaml", home / "dagster.yaml")
    _, [port] = free_ports(0, 1)  # outside the ephemeral range: dagster dev binds it seconds later
    env = dict(os.environ, DAGSTER_HOME=str(home), IH_ENV="local", IH_PRESET="test", IH_N_PROCEDURAL_POSES="4",
               IH_SHARD_SIZE="4", IH_OPTIMIZE_ITERATIONS="10", IH_N_AUGMENTATIONS="1", IH_N_VIEWS="1",
               IH_S3_ENDPOINT=seaweed_server.endpoint_url, IH_S3_BUCKET="ui-test", PYOPENGL_PLATFORM="egl")
    log = open(home / "dagster_dev.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
                             "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine needs minutes
        while True:
            try:
                if _graphql(port, "{ version }"):
                    break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dagster dev did not come up; log {home / 'dagster_dev.log'}")
                time.sleep(1)
        yield port
    finally:
        survivors = stop_process_group(proc)
        log.close()
        assert survivors == set(), f"processes of dagster dev outlived the test: {sorted(survivors)}"


def test_graphql_lists_every_asset_and_check(dagster_dev):
    from ih_assets.definitions import all_assets, all_checks

    data = _graphql(dagster_dev, "{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name } } } } }")
    listed = {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]}
    assert listed == {a.key.to_user_string() for a in all_assets}
    checks = {c["name"] for n in data["assetNodes"] for c in (n["assetChecksOrError"].get("checks") or [])}
    assert checks == {spec.name for c in all_checks for spec in c.check_specs}


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""


def _launch_and_wait(port: int, job: str, tags: list[dict] | None = None, in_process: bool = False) -> str:
    run_config = {"execution": {"config": {"in_process": {}}}} if in_process else {}
    params = {"selector": {"repositoryLocationName": "ih_assets.definitions", "repositoryName": "__repository__",
                           "jobName": job}, "runConfigData": run_config, "executionMetadata": {"tags": tags or []}}
    result = _graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["runId"]
    deadline = time.monotonic() + 900  # a shard takes minutes when other jobs load the 2 cores
    while time.monotonic() < deadline:
        status = _graphql(port, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(2)
    return "TIMEOUT"


def test_materialize_sources_then_one_shard_through_the_ui(dagster_dev):
    """The sources with the UI's default executor (a process per step), then a shard with the
    in-process one (a user's choice in the launchpad; its ~20 steps would each start a process
    importing torch and the definitions: minutes of the suite on 2 cores)."""
    assert _launch_and_wait(dagster_dev, "prepare_sources") == "SUCCESS"
    shards = _graphql(dagster_dev, """{ partitionSetsOrError(repositorySelector: {repositoryLocationName:
        "ih_assets.definitions", repositoryName: "__repository__"}, pipelineName: "generate_shard") {
        ... on PartitionSets { results { partitionsOrError { ... on Partitions { results { name } } } } } } }""")
    names = [p["name"] for s in shards["partitionSetsOrError"]["results"] for p in s["partitionsOrError"]["results"]]
    assert names and names[0].startswith("shard=")
    assert _launch_and_wait(dagster_dev, "generate_shard", [{"key": "dagster/partition", "value": names[0]}],
                            in_process=True) == "SUCCESS"


def test_screenshot_of_the_asset_graph(dagster_dev):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/test.sh installs them through IH_WITH_BROWSER=1)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(f"http://127.0.0.1:{dagster_dev}/asset-groups")
        # the first-visit community dialog: on a loaded machine it appears only after seconds
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            buttons = browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']")
            if buttons:
                buttons[0].click()
                break
            time.sleep(1)
        _wait_for(lambda: all(group in browser.page_source for group in ("poses", "optimization", "rendering")),
                  "the asset groups on the page")
        time.sleep(2)   # let the graph layout settle for the picture (nothing is asserted on it)
        out = ROOT / "docs/asset_graph.png"
        browser.save_screenshot(str(out))
        assert out.stat().st_size > 10_000
        for group in ("poses", "optimization", "rendering"):   # each group's assets with their checks
            browser.get(f"http://127.0.0.1:{dagster_dev}/locations/ih_assets.definitions/asset-groups/{group}")
            _wait_for(lambda: "Asset checks" in browser.page_source, f"the {group} group's asset checks")
            time.sleep(2)
            shot = ROOT / f"docs/asset_group_{group}.png"
            browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
    finally:
        browser.quit()
