"""Shared fixtures: one generated stand-in hand model and one MANO-like test model per test session."""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import pytest


@pytest.fixture(scope="session")
def hand_model():
    """The generated stand-in (cached under HANDSYNTH_CACHE or ~/.cache/handsynth)."""
    from handsynth.hand_model.model import HandModel

    return HandModel.standin()


@pytest.fixture(scope="session")
def mano_like_model(hand_model, tmp_path_factory):
    """A MANO-like TEST model (see tests/mano_like.py) read through the real-MANO path from pickles."""
    from handsynth.hand_model import mano_files
    from handsynth.hand_model.model import HandModel
    from tests.mano_like import write_mano_like_folder

    right = mano_files.read_mano_file(hand_model.identity["source"] + "/MANO_RIGHT.npz")
    return HandModel.from_mano_folder(write_mano_like_folder(tmp_path_factory.mktemp("mano_like"), right))


@pytest.fixture(scope="session", params=["standin", "mano_like"])
def each_hand_model(request):
    """The stand-in, then the MANO-like test model: for tests that must hold for real MANO too."""
    return request.getfixturevalue("hand_model" if request.param == "standin" else "mano_like_model")
