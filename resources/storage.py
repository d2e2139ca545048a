"""Storage resources (S3 / local folder / memory) and the IO manager built on any of them.

Each resource only turns Dagster config into a :class:`handsynth.storage.Store` (the one storage
layer, shared with the command line and the training reader). Definitions pick one resource by
deployment and hand it to :func:`io_manager_for`; asset code never sees which. ``S3Storage``
takes the same settings as dagster-aws ``S3Resource`` (credentials are passed as ``EnvVar`` by
the definitions) plus what a self-hosted endpoint such as SeaweedFS needs: path-style addressing
and short timeouts, so a wrong endpoint fails in seconds, not minutes.
"""

from __future__ import annotations

from typing import Literal

from dagster import ConfigurableIOManagerFactory, ConfigurableResource, InitResourceContext
from dagster_aws.s3.resources import ResourceWithS3Configuration
from pydantic import Field

from handsynth.storage import LocalStore, MemoryStore, S3Settings, S3Store, Store
from resources.io_managers import ObjectStoreIOManager


class StorageResource(ConfigurableResource):
    """Where pipeline objects live: a key prefix plus a backend given by the subclass."""

    prefix: str = Field(default="", description="Key prefix of every object, e.g. 'renderih/v1'.")

    def object_store(self) -> Store:
        raise NotImplementedError(f"{type(self).__name__} must implement object_store()")


class S3Storage(StorageResource, ResourceWithS3Configuration):
    """An S3 bucket (AWS when ``endpoint_url`` is None, else SeaweedFS / MinIO / ...)."""

    bucket: str = Field(description="Bucket name; created on first write if missing.")
    region_name: str | None = Field(default="us-east-1", description="Region used for request signing.")
    max_attempts: int = Field(default=3, description="Attempts per request, the first one included.")
    addressing_style: Literal["path", "virtual", "auto"] = Field(
        default="path", description="'path' for self-hosted endpoints; 'virtual' or 'auto' for AWS."
    )
    connect_timeout: float = Field(default=3.0, description="Seconds to wait for a TCP connection.")
    read_timeout: float = Field(default=60.0, description="Seconds to wait for a response.")

    def settings(self) -> S3Settings:
        """This resource's connection settings in the storage layer's terms."""
        return S3Settings(
            endpoint_url=self.endpoint_url, region_name=self.region_name or "us-east-1",
            key=self.aws_access_key_id, secret=self.aws_secret_access_key, token=self.aws_session_token,
            anonymous=self.use_unsigned_session, profile=self.profile_name, addressing_style=self.addressing_style,
            connect_timeout=self.connect_timeout, read_timeout=self.read_timeout, max_attempts=self.max_attempts,
            use_ssl=self.use_ssl, verify=self.verify)

    def object_store(self) -> S3Store:
        return S3Store(self.bucket, self.settings())


class LocalStorage(StorageResource):
    """A folder on the local disk (single machine runs, no server needed)."""

    root_dir: str = Field(description="Folder holding the objects; created on first write.")

    def object_store(self) -> LocalStore:
        return LocalStore(self.root_dir)


class MemoryStorage(StorageResource):
    """An in-process store shared by every ``MemoryStorage`` (and ``memory://name`` URI) with the
    same ``name``, across Dagster's re-initialisation of resources per run; for tests."""

    name: str = Field(default="default", description="Stores with the same name share objects.")

    def object_store(self) -> MemoryStore:
        return MemoryStore(self.name)


class StorageIOManager(ConfigurableIOManagerFactory):
    """Dagster-configurable factory of :class:`ObjectStoreIOManager` over a storage resource."""

    storage: StorageResource

    def create_io_manager(self, context: InitResourceContext) -> ObjectStoreIOManager:
        return ObjectStoreIOManager(self.storage.object_store(), self.storage.prefix)


def io_manager_for(storage: StorageResource) -> StorageIOManager:
    """The IO manager resource to register as ``io_manager`` for ``storage``."""
    return StorageIOManager(storage=storage)
