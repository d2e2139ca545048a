"""Fixtures for storage tests: one real SeaweedFS server per session, and the same tests run
against S3, a local folder and memory. Import the fixtures into a test module by name."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from handsynth.storage import LocalStore, MemoryStore, Store
from resources.seaweed import SeaweedError, SeaweedServer, find_weed
from resources.storage import S3Storage

#: Variables that would give S3 clients credentials; the pipeline's defaults must work without them.
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A ``weed mini`` on free ports in a temp dir, shared by the session (~1 s to start)."""
    try:
        find_weed()
    except SeaweedError as exc:
        pytest.skip(f"no SeaweedFS binary, S3 tests need it: {exc}")
    with SeaweedServer(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


def fresh_bucket() -> str:
    """A bucket name no other test uses (so tests never see each other's keys)."""
    return f"test-{uuid.uuid4().hex[:12]}"


def s3_storage(server: SeaweedServer, **settings: object) -> S3Storage:
    """An ``S3Storage`` on ``server`` with a fresh bucket."""
    return S3Storage(
        endpoint_url=server.endpoint_url,
        bucket=fresh_bucket(),
        aws_access_key_id="test",
        aws_secret_access_key="test",
        **settings,
    )


def env_without_aws(**extra: str) -> dict[str, str]:
    """This process's environment without any AWS credential variable, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}, **extra}


@pytest.fixture(params=["s3", "local", "memory"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each backend in turn, empty; S3 pulls in the session server only when its turn comes."""
    if request.param == "s3":
        return s3_storage(request.getfixturevalue("seaweed_server")).object_store()
    if request.param == "local":
        return LocalStore(tmp_path / "objects")
    return MemoryStore(f"test-{uuid.uuid4().hex[:12]}")
