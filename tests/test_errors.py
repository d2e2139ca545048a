"""Refused settings and inputs at the command line: one line naming the variable or file, its
value and what is allowed, a non-zero exit, and the traceback only with --debug / IH_DEBUG=1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from handsynth import envmaps
from resources.settings import settings_from_env
from tests.test_main_job import ROOT

MAIN_JOB = [sys.executable, "-m", "ih_assets.main_job"]
CLI = [sys.executable, "-m", "ih_assets.cli"]


def _run(command: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "deploy/dagster.yaml", home / "dagster.yaml")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IH_")}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**clean, "DAGSTER_HOME": str(home), **env})


def _environment_dir_with_a_link(tmp: Path) -> dict[str, str]:
    folder = tmp / "maps"
    folder.mkdir()
    (folder / "sky.hdr").write_bytes(envmaps.write_hdr(envmaps.procedural_envmap(1, 8, 16)))
    (folder / "passwd.hdr").symlink_to("/etc/passwd")
    return {"IH_ENVIRONMENT_DIR": str(folder)}


def _environment_dir_with_garbage(tmp: Path) -> dict[str, str]:
    folder = tmp / "maps"
    folder.mkdir()
    (folder / "broken.hdr").write_bytes(b"not a map")
    return {"IH_ENVIRONMENT_DIR": str(folder)}


CASES = [
    ("views 0", MAIN_JOB, lambda tmp: {"IH_N_VIEWS": "0"},
     r"IH_N_VIEWS=0: Input should be greater than or equal to 1; allowed: an integer from 1 to 1000"),
    ("image size not a number", MAIN_JOB, lambda tmp: {"IH_IMAGE_SIZE": "abc"},
     r"IH_IMAGE_SIZE='abc': not an integer; allowed: an integer from 16 to 8192"),
    ("MANO folder missing", MAIN_JOB, lambda tmp: {"IH_MANO_DIR": str(tmp / "nowhere")},
     r"IH_MANO_DIR: \S*nowhere: MANO model folder not found; allowed: a folder holding MANO_RIGHT and MANO_LEFT"),
    ("link in the environment folder", MAIN_JOB, _environment_dir_with_a_link,
     r"IH_ENVIRONMENT_DIR: \S*maps/passwd\.hdr: a symbolic link; .*allowed: a folder of valid equirectangular "
     r"\.hdr/\.exr maps, regular files only"),
    ("unreadable map in the environment folder", MAIN_JOB, _environment_dir_with_garbage,
     r"IH_ENVIRONMENT_DIR: \S*maps/broken\.hdr: not a Radiance HDR file"),
    ("run through ih-pipeline", CLI[:] + ["run"], lambda tmp: {"IH_RENDERER": "vray"},
     r"IH_RENDERER='vray': Input should be 'cycles' or 'raster'; allowed: one of 'cycles', 'raster'"),
    ("export splits", CLI + ["export", "--source", "x", "--to", "y", "--splits", "train=0.7,test=0.1"], lambda tmp: {},
     r"ih-pipeline: error: --splits 'train=0\.7,test=0\.1': .*sum to 1"),
]


@pytest.mark.parametrize("name, command, env, message", CASES, ids=[c[0] for c in CASES])
def test_refusal_is_one_line_naming_what_is_allowed(name, command, env, message, tmp_path):
    done = _run(command, tmp_path / "home", **env(tmp_path))
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_debug_flag_and_variable_show_the_traceback(tmp_path):
    export = CLI + ["export", "--source", str(tmp_path / "nowhere"), "--to", str(tmp_path / "out")]
    quiet = _run(export, tmp_path / "home")
    assert quiet.returncode == 2 and len(quiet.stderr.strip().splitlines()) == 1 and "nowhere" in quiet.stderr
    for command, env in ((MAIN_JOB + ["--debug"], {"IH_N_VIEWS": "0"}), (export, {"IH_DEBUG": "1"})):
        done = _run(command, tmp_path / "home", **env)
        assert done.returncode != 0 and "Traceback (most recent call last)" in done.stderr, done.stderr[-2000:]


def test_every_refused_setting_is_named_in_one_message():
    with pytest.raises(ValueError) as err:
        settings_from_env({"IH_N_VIEWS": "-2", "IH_DENOISE": "maybe", "IH_SHARD_SIZE": "lots"})
    message = str(err.value)
    assert "\n" not in message
    for part in ("IH_DENOISE='maybe': not a truth value; allowed: true or false",
                 "IH_SHARD_SIZE='lots': not an integer; allowed: an integer from 1 to 100000"):
        assert part in message
