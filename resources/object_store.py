"""A minimal key -> bytes store with three interchangeable backends: S3, a local folder, memory.

The pipeline only needs whole-object PUT / GET / LIST, which every S3-compatible service (AWS,
SeaweedFS, MinIO) does atomically: a reader sees the old object or the new one, never a torn
write. The local and memory stores give the same guarantee, so the IO manager and the tests are
written once against :class:`ObjectStore`.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

#: S3 error codes meaning "no such object" / "no such bucket" rather than a failure (HEAD
#: requests have no body, so they only carry the status code).
_MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_MISSING_BUCKET_CODES = frozenset({"404", "NoSuchBucket", "NotFound"})


class StorageError(RuntimeError):
    """A storage operation failed; the message names the store, the key and what went wrong."""


class ObjectNotFoundError(StorageError, KeyError):
    """No object at the key (also a ``KeyError``, so ``except KeyError`` callers keep working)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def check_key(key: str) -> str:
    """Reject keys that are empty, absolute or climb out of the root (``..``) on any backend."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid object key {key!r}: need non-empty '/'-separated parts, no '.', '..' or '//'")
    return key


class ObjectStore(Protocol):
    """Whole-object storage addressed by '/'-separated keys."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` atomically (replaces any previous object)."""

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; :class:`ObjectNotFoundError` if absent."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""

    def list_keys(self, prefix: str = "") -> list[str]:
        """All keys starting with ``prefix`` (plain string prefix), sorted."""

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is a no-op (as in S3)."""

    def uri(self, key: str) -> str:
        """A URI naming the object, for logs and asset metadata."""


class MemoryObjectStore:
    """Objects in a dict: for tests and single-process runs only (gone when the process ends)."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[check_key(key)] = bytes(data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._objects[check_key(key)]
        except KeyError:
            raise ObjectNotFoundError(f"{self.uri(key)}: no object at key {key!r}") from None

    def exists(self, key: str) -> bool:
        return check_key(key) in self._objects

    def list_keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._objects if k.startswith(prefix))

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(check_key(key), None)

    def uri(self, key: str) -> str:
        return f"memory://{key}"


class LocalObjectStore:
    """Objects as files under ``root_dir`` (key parts = sub-folders).

    Writes go to a hidden temp file in the target folder and are ``os.replace``d into place,
    which is atomic on POSIX: a killed writer leaves the old file or the new one.
    """

    _TMP_PREFIX = ".tmp-"

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root_dir).resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self._TMP_PREFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"{self.uri(key)}: write failed ({exc})") from exc

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"{self.uri(key)}: no object at key {key!r}") from None
        except OSError as exc:
            raise StorageError(f"{self.uri(key)}: read failed ({exc})") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        # Walk only the deepest folder the prefix fully names, then filter by string prefix.
        folders = prefix.split("/")[:-1]
        if ".." in folders:
            raise StorageError(f"{self.uri('')}: invalid listing prefix {prefix!r} ('..')")
        folder = self.root.joinpath(*folders)
        if not folder.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(self._TMP_PREFIX)
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.uri(key)}: delete failed ({exc})") from exc

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()


class S3ObjectStore:
    """Objects in one bucket of an S3-compatible service, through a boto3 S3 client.

    The bucket is created on first use if missing, so a fresh SeaweedFS or MinIO needs no setup
    step. Every botocore failure is turned into one :class:`StorageError` naming endpoint, bucket,
    key and operation; give the client a short connect timeout and few retries (see
    ``resources.storage.S3Storage``) so an unreachable endpoint fails in seconds.
    """

    def __init__(self, client: Any, bucket: str, page_size: int = 1000) -> None:
        self.client = client
        self.bucket = bucket
        self.page_size = page_size  # keys per LIST request (S3's maximum is 1000)
        self.endpoint = client.meta.endpoint_url
        self._bucket_ready = False
        self._lock = threading.Lock()

    def _fail(self, op: str, key: str | None, exc: Exception) -> StorageError:
        where = f"S3 endpoint {self.endpoint}, bucket {self.bucket!r}" + (f", key {key!r}" if key else "")
        return StorageError(f"{where}: {op} failed: {type(exc).__name__}: {exc}")

    def _call(self, op: str, key: str | None, **kwargs: Any) -> Any:
        """Run one client operation, mapping errors to ObjectNotFoundError / StorageError."""
        self._ensure_bucket()
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            if key is not None and exc.response.get("Error", {}).get("Code") in _MISSING_KEY_CODES:
                raise ObjectNotFoundError(f"{self.uri(key)}: no object at key {key!r}") from None
            raise self._fail(op, key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail(op, key, exc) from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _MISSING_BUCKET_CODES:
                    raise self._fail("head_bucket", None, exc) from exc
                self._create_bucket()
            except BotoCoreError as exc:
                raise self._fail("head_bucket", None, exc) from exc
            self._bucket_ready = True

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # AWS rejects an explicit us-east-1 constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._fail("create_bucket", None, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("create_bucket", None, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put_object", check_key(key), Key=key, Body=bytes(data))

    def get_bytes(self, key: str) -> bytes:
        body = self._call("get_object", check_key(key), Key=key)["Body"]
        try:
            return body.read()
        except BotoCoreError as exc:
            raise self._fail("get_object (reading body)", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", check_key(key), Key=key)
        except ObjectNotFoundError:
            return False
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        self._ensure_bucket()
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", ()))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"list_objects_v2 (prefix {prefix!r})", None, exc) from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("delete_object", check_key(key), Key=key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
