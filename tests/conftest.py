"""Shared fixtures: one generated stand-in hand model per test session."""

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
