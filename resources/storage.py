"""Storage resources (S3 / local folder / memory) and the IO manager built on any of them.

Definitions pick one resource by deployment and hand it to :func:`io_manager_for`; asset code never
sees which. ``S3Storage`` takes the same settings as dagster-aws ``S3Resource`` (credentials are
passed as ``EnvVar`` by the definitions) plus what a self-hosted endpoint such as SeaweedFS needs:
path-style addressing and short timeouts, so a wrong endpoint fails in seconds, not minutes.
"""

from __future__ import annotations

import functools
import threading
from typing import Literal

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from dagster import ConfigurableIOManagerFactory, ConfigurableResource, InitResourceContext
from dagster_aws.s3.resources import ResourceWithS3Configuration
from pydantic import Field

from resources.io_managers import ObjectStoreIOManager
from resources.object_store import LocalObjectStore, MemoryObjectStore, ObjectStore, S3ObjectStore, StorageError


#: boto3 sessions are not thread-safe, but a new one re-reads the service models (~0.4 s), once
#: per step; so one session per profile is kept and clients are created under a lock.
_SESSION_LOCK = threading.Lock()


@functools.cache
def _session(profile_name: str | None) -> boto3.session.Session:
    return boto3.session.Session(profile_name=profile_name)


class StorageResource(ConfigurableResource):
    """Where pipeline objects live: a key prefix plus a backend given by the subclass."""

    prefix: str = Field(default="", description="Key prefix of every object, e.g. 'renderih/v1'.")

    def object_store(self) -> ObjectStore:
        raise NotImplementedError(f"{type(self).__name__} must implement object_store()")


class S3Storage(StorageResource, ResourceWithS3Configuration):
    """An S3 bucket (AWS when ``endpoint_url`` is None, else SeaweedFS / MinIO / ...)."""

    bucket: str = Field(description="Bucket name; created on first use if missing.")
    region_name: str | None = Field(default="us-east-1", description="Region used for request signing.")
    max_attempts: int = Field(default=3, description="Attempts per request, the first one included.")
    addressing_style: Literal["path", "virtual", "auto"] = Field(
        default="path", description="'path' for self-hosted endpoints; 'virtual' or 'auto' for AWS."
    )
    connect_timeout: float = Field(default=3.0, description="Seconds to wait for a TCP connection.")
    read_timeout: float = Field(default=60.0, description="Seconds to wait for a response.")

    def client(self):  # -> botocore S3 client
        """A boto3 S3 client with ``S3Resource``'s settings plus timeouts and addressing style."""
        config = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            s3={"addressing_style": self.addressing_style},
            signature_version=UNSIGNED if self.use_unsigned_session else None,
        )
        try:
            with _SESSION_LOCK:
                return _session(self.profile_name).client(
                    "s3",
                    region_name=self.region_name,
                    endpoint_url=self.endpoint_url,
                    use_ssl=self.use_ssl,
                    verify=self.verify,
                    aws_access_key_id=self.aws_access_key_id,
                    aws_secret_access_key=self.aws_secret_access_key,
                    aws_session_token=self.aws_session_token,
                    config=config,
                )
        except (BotoCoreError, ValueError) as exc:  # bad profile, half-given credentials, bad endpoint
            raise StorageError(
                f"S3 endpoint {self.endpoint_url or 'AWS'}, bucket {self.bucket!r}: cannot create client: {exc}"
            ) from exc

    def object_store(self) -> S3ObjectStore:
        return S3ObjectStore(self.client(), self.bucket)


class LocalStorage(StorageResource):
    """A folder on the local disk (single machine runs, no server needed)."""

    root_dir: str = Field(description="Folder holding the objects; created on first write.")

    def object_store(self) -> LocalObjectStore:
        return LocalObjectStore(self.root_dir)


#: Memory stores by name, module-level so that data outlives Dagster's re-initialisation of a
#: resource for each run (one test materializes upstream, another run loads it).
_MEMORY_STORES: dict[str, MemoryObjectStore] = {}


class MemoryStorage(StorageResource):
    """An in-process store shared by every ``MemoryStorage`` with the same ``name``; for tests."""

    name: str = Field(default="default", description="Stores with the same name share objects.")

    def object_store(self) -> MemoryObjectStore:
        return _MEMORY_STORES.setdefault(self.name, MemoryObjectStore())


class StorageIOManager(ConfigurableIOManagerFactory):
    """Dagster-configurable factory of :class:`ObjectStoreIOManager` over a storage resource."""

    storage: StorageResource

    def create_io_manager(self, context: InitResourceContext) -> ObjectStoreIOManager:
        return ObjectStoreIOManager(self.storage.object_store(), self.storage.prefix)


def io_manager_for(storage: StorageResource) -> StorageIOManager:
    """The IO manager resource to register as ``io_manager`` for ``storage``."""
    return StorageIOManager(storage=storage)
