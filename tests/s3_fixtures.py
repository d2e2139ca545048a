"""Fixtures for storage tests: one real SeaweedFS server per session, and the same tests run
against S3, a local folder and memory. Import the fixtures into a test module by name."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from resources.object_store import LocalObjectStore, MemoryObjectStore, ObjectStore
from resources.seaweed import SeaweedError, SeaweedServer, find_weed
from resources.storage import S3Storage


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A ``weed mini`` on free ports in a temp dir, shared by the session (~1 s to start)."""
    try:
        find_weed()
    except SeaweedError as exc:
        pytest.skip(f"no SeaweedFS binary, S3 tests need it: {exc}")
    with SeaweedServer(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


def s3_storage(server: SeaweedServer, **settings: object) -> S3Storage:
    """An ``S3Storage`` on ``server`` with a fresh bucket (so tests never see each other's keys)."""
    return S3Storage(
        endpoint_url=server.endpoint_url,
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        **settings,
    )


@pytest.fixture(params=["s3", "local", "memory"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """Each backend in turn, empty; S3 pulls in the session server only when its turn comes."""
    if request.param == "s3":
        return s3_storage(request.getfixturevalue("seaweed_server")).object_store()
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return MemoryObjectStore()
