"""One storage layer for the pipeline, the command line and the training reader.

A :class:`Store` maps '/'-separated keys to objects in one root of an fsspec filesystem: a local
folder (:class:`LocalStore`), fsspec's in-process memory (:class:`MemoryStore`, for tests) or an
S3 bucket through s3fs (:class:`S3Store`, any S3-compatible endpoint such as SeaweedFS). Every
caller uses the same methods, so a test on memory checks the code that runs on S3:

- whole objects: ``put_bytes``, ``get_bytes``, ``exists``, ``size``, ``list_keys``, ``delete``,
  ``uri``;
- streams: ``open(key, "rb")`` and ``open(key, "wb")``; ``read_range(key, start, length)``;
- integrity: ``get_verified`` / ``verify`` against a recorded size and SHA-256.

Guarantees, the same on every backend: a reader sees the old object or the complete new one,
never part of a write. ``put_bytes`` is one PUT on S3 and temp-file + rename locally; a
``"wb"`` stream becomes visible only when it is closed without an error (S3: a multipart
upload completed on close and aborted on error; locally: a hidden temp file renamed on close),
so a killed writer leaves nothing behind under the key. Every failure is one
:class:`StorageError` naming the object's URI and the operation (:class:`ObjectNotFoundError`
when nothing is stored there); content that does not match its record is an
:class:`IntegrityError`.

:func:`open_store` turns ``s3://bucket/prefix``, a local folder or ``memory://name`` into a store
with the pipeline's defaults (:meth:`S3Settings.from_env`), so the command line and the training
reader reach the server ``scripts/run_pipeline.sh`` starts without any setting. No Dagster here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

#: Part size of streamed S3 uploads and read-ahead of streamed reads (S3 parts must be >= 5 MiB).
STREAM_BLOCK = 8 * 2**20
#: The pipeline's defaults (``scripts/env.sh``): the local SeaweedFS server, bucket and key prefix.
DEFAULT_S3_ENDPOINT = "http://127.0.0.1:8333"
DEFAULT_BUCKET = "renderih"
DEFAULT_PREFIX = "renderih"
#: Name prefix of a local write in progress; such files are never listed as objects.
TMP_PREFIX = ".tmp-"


class StorageError(RuntimeError):
    """A storage operation failed; the message names the object's URI and the operation."""


class ObjectNotFoundError(StorageError, KeyError):
    """No object at the key (also a ``KeyError``, so ``except KeyError`` callers keep working)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class IntegrityError(ValueError):
    """Stored bytes differ from their record: the message names the URI, the expected and the
    found size and SHA-256 (``found_sha256`` is None when the size already differed)."""

    def __init__(self, uri: str, expected_size: int, expected_sha256: str, found_size: int,
                 found_sha256: str | None) -> None:
        self.uri, self.expected_size, self.expected_sha256 = uri, expected_size, expected_sha256
        self.found_size, self.found_sha256 = found_size, found_sha256
        found = f"{found_size} bytes" + (f" sha256 {found_sha256}" if found_sha256 else "")
        super().__init__(f"{uri}: stored object corrupted: expected {expected_size} bytes sha256 "
                         f"{expected_sha256}, found {found}")

    def short(self) -> str:
        """The mismatch in a few words (for per-asset reasons): size first, else the hashes."""
        if self.found_size != self.expected_size:
            return f"{self.found_size} bytes, recorded {self.expected_size}"
        return f"sha256 {(self.found_sha256 or '')[:12]}…, recorded {self.expected_sha256[:12]}…"


def stream_sha256(stream: IO[bytes]) -> tuple[int, str]:
    """``(bytes read, SHA-256 hex)`` of a binary stream read to its end in blocks (constant memory)."""
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(STREAM_BLOCK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """The SHA-256 of ``data`` as 64 hex digits (the form every record stores)."""
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    """Reject keys that are empty, absolute or climb out of the root (``..``) on any backend."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid object key {key!r}: need non-empty '/'-separated parts, no '.', '..' or '//'")
    return key


def _failure_types() -> tuple[type[BaseException], ...]:
    """What a backend raises for an I/O failure: OSError (local, and s3fs's translation of S3
    errors) plus botocore's own errors (connection refused, timeouts) that s3fs passes through."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no S3 support installed: local and memory raise OSError only
        return (OSError,)
    return OSError, BotoCoreError, ClientError


class _Upload:
    """A write stream whose object appears only on :meth:`close` without an error.

    ``sink`` receives the bytes; ``commit`` makes them the object; ``discard`` drops them. Used
    as a context manager, an exception inside the block discards instead of committing; a
    writer that is dropped without ``close`` (a killed step) discards too, unlike fsspec's own
    files, which complete an upload when they are closed or garbage-collected.
    """

    def __init__(self, uri: str, sink: IO[bytes], commit: Callable[[], None], discard: Callable[[], None],
                 failures: tuple[type[BaseException], ...]) -> None:
        self.uri, self._sink, self._commit, self._discard, self._failures = uri, sink, commit, discard, failures
        self._written, self.closed = 0, False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError(f"{self.uri}: write to a closed upload")
        with _mapped(self.uri, "write", self._failures):
            self._sink.write(data)
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        """Nothing to do: bytes reach the backend in parts; the object appears on close."""

    def close(self) -> None:
        """Commit: from here on readers see the new object."""
        if self.closed:
            return
        self.closed = True
        try:
            with _mapped(self.uri, "write (commit)", self._failures):
                self._commit()
        except BaseException:
            self._discard_quietly()
            raise

    def abort(self) -> None:
        """Drop everything written; the key keeps its previous object (or none)."""
        if not self.closed:
            self.closed = True
            self._discard_quietly()

    def _discard_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._discard()

    def __enter__(self) -> "_Upload":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        self.abort()


class _Download:
    """A read stream over an fsspec file whose I/O failures become :class:`StorageError`."""

    def __init__(self, uri: str, raw: IO[bytes], failures: tuple[type[BaseException], ...]) -> None:
        self.uri, self._raw, self._failures = uri, raw, failures

    def read(self, size: int = -1) -> bytes:
        with _mapped(self.uri, "read", self._failures):
            return self._raw.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        with _mapped(self.uri, "seek", self._failures):
            return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "_Download":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


@contextlib.contextmanager
def _mapped(uri: str, op: str, failures: tuple[type[BaseException], ...], where: str = "") -> Iterator[None]:
    """Turn a backend failure into one :class:`StorageError` naming ``uri`` and ``op``."""
    try:
        yield
    except (StorageError, IntegrityError):
        raise
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ObjectNotFoundError(f"{uri}: no object there ({op}{where})") from None
    except failures as exc:
        raise StorageError(f"{uri}: {op} failed{where}: {type(exc).__name__}: {exc}") from exc


class Store:
    """Objects addressed by keys below ``root`` of the fsspec filesystem ``fs``.

    Subclasses say how a key becomes a URI and how a write is made atomic; everything else is
    one implementation over fsspec.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self._failures = _failure_types()

    # ---- naming --------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def uri(self, key: str) -> str:
        """A URI naming the object, for errors, logs and asset metadata."""
        raise NotImplementedError

    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` on this machine (for hard links), or None if remote."""
        return None

    def _where(self) -> str:
        """Context for failure messages beyond the URI (the S3 endpoint)."""
        return ""

    def _io(self, key: str, op: str) -> contextlib.AbstractContextManager[None]:
        return _mapped(self.uri(key), op, self._failures, self._where())

    # ---- whole objects -------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``key`` atomically (replaces any previous object)."""
        with self.open(key, "wb") as out:
            out.write(data)

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; :class:`ObjectNotFoundError` if absent."""
        path = self._path(key)
        with self._io(key, "get"):
            return self.fs.cat_file(path)

    def size(self, key: str) -> int:
        """The object's size in bytes (one HEAD on S3); :class:`ObjectNotFoundError` if absent."""
        path = self._path(key)
        with self._io(key, "size"):
            info = self.fs.info(path)
        if info.get("type") != "file":
            raise ObjectNotFoundError(f"{self.uri(key)}: no object there (a folder of other objects)")
        return int(info["size"])

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        """All keys starting with ``prefix`` (a plain string prefix, not only whole folders), sorted."""
        folder, _, rest = prefix.rpartition("/")
        if ".." in folder.split("/"):
            raise StorageError(f"{self.uri(prefix)}: invalid listing prefix {prefix!r} ('..')")
        base = f"{self.root}/{folder}" if folder else self.root
        try:
            with self._io(prefix, "list"):
                paths = self.fs.find(base, prefix=rest)
        except ObjectNotFoundError:
            return []  # no such folder (or bucket): nothing stored under it
        cut = len(self.root) + 1
        keys = (self.fs._strip_protocol(p)[cut:] for p in paths)
        return sorted(k for k in keys if k.startswith(prefix) and not k.rpartition("/")[2].startswith(TMP_PREFIX))

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is a no-op (as in S3)."""
        path = self._path(key)
        with contextlib.suppress(ObjectNotFoundError), self._io(key, "delete"):
            self.fs.rm_file(path)

    # ---- streams and ranges --------------------------------------------------------------------
    def open(self, key: str, mode: str = "rb") -> Any:
        """A stream: ``"rb"`` reads (seekable, read-ahead of :data:`STREAM_BLOCK`); ``"wb"`` writes
        in parts, and the object appears only when the stream is closed without an error."""
        path = self._path(key)
        if mode == "rb":
            with self._io(key, "open for reading"):
                raw = self.fs.open(path, "rb", block_size=STREAM_BLOCK)
            return _Download(self.uri(key), raw, self._failures)
        if mode == "wb":
            with self._io(key, "open for writing"):
                sink, commit, discard = self._begin_write(path)
            return _Upload(self.uri(key), sink, commit, discard, self._failures)
        raise ValueError(f"{self.uri(key)}: mode {mode!r} is not supported, use 'rb' or 'wb'")

    def _begin_write(self, path: str) -> tuple[IO[bytes], Callable[[], None], Callable[[], None]]:
        """``(sink, commit, discard)`` of a write to ``path`` (see :class:`_Upload`)."""
        raise NotImplementedError

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from offset ``start`` (one ranged GET on S3). An object too short for
        the range is an :class:`IntegrityError`: the caller's record promised those bytes."""
        path = self._path(key)
        with self._io(key, f"read_range({start}, {length})"):
            data = self.fs.cat_file(path, start=start, end=start + length)
        if len(data) != length:
            raise IntegrityError(self.uri(key) + f" [{start}:{start + length}]", length, "(range)", len(data), None)
        return data

    # ---- integrity -----------------------------------------------------------------------------
    def get_verified(self, key: str, size: int, sha256: str) -> bytes:
        """The object's bytes after checking them against the recorded ``size`` and ``sha256``."""
        data = self.get_bytes(key)
        found = sha256_hex(data)
        if len(data) != size or found != sha256:
            raise IntegrityError(self.uri(key), size, sha256, len(data), found)
        return data

    def verify(self, key: str, size: int, sha256: str) -> None:
        """Check a stored object against its record without holding it in memory: the size first
        (a HEAD), then the SHA-256 of a streamed read."""
        found_size = self.size(key)
        if found_size != size:
            raise IntegrityError(self.uri(key), size, sha256, found_size, None)
        with self.open(key, "rb") as stream:
            found_sha256 = stream_sha256(stream)[1]
        if found_sha256 != sha256:
            raise IntegrityError(self.uri(key), size, sha256, found_size, found_sha256)


class LocalStore(Store):
    """Objects as files under a folder (key parts = sub-folders); created on first write.

    A write goes to a hidden temp file in the target folder, is fsynced and ``os.replace``d into
    place, which is atomic on POSIX: a killed writer leaves the old file or the new one.
    """

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        super().__init__(LocalFileSystem(), Path(root_dir).resolve().as_posix())

    def uri(self, key: str) -> str:
        return Path(self.root, key).as_uri()

    def local_path(self, key: str) -> Path:
        return Path(self._path(key))

    def _begin_write(self, path: str) -> tuple[IO[bytes], Callable[[], None], Callable[[], None]]:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
        sink = os.fdopen(fd, "wb")

        def commit() -> None:
            sink.flush()
            os.fsync(sink.fileno())
            sink.close()
            os.replace(tmp, target)

        def discard() -> None:
            sink.close()
            Path(tmp).unlink(missing_ok=True)

        return sink, commit, discard


class MemoryStore(Store):
    """Objects in fsspec's process-wide memory filesystem under ``/<name>``: every store (and
    ``memory://name`` URI) with the same name shares them, until the process ends; a store made
    without a name gets a fresh, empty one of its own. For tests."""

    def __init__(self, name: str | None = None) -> None:
        self.name = (name or f"anonymous-{uuid.uuid4().hex}").strip("/")
        super().__init__(MemoryFileSystem(), f"/{self.name}")

    def uri(self, key: str) -> str:
        return f"memory://{self.name}/{key}"

    def _begin_write(self, path: str) -> tuple[IO[bytes], Callable[[], None], Callable[[], None]]:
        buffer = io.BytesIO()
        return buffer, lambda: self.fs.pipe_file(path, buffer.getvalue()), buffer.close


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible service (AWS when ``endpoint_url`` is None).

    Credentials: ``key``/``secret`` (and ``token``) when given; ``anonymous`` sends unsigned
    requests (a SeaweedFS without identities accepts them); neither means botocore's default
    chain (environment, profile, instance role). Short connect timeouts and few attempts make an
    unreachable endpoint fail in seconds, not minutes.
    """

    endpoint_url: str | None = None
    region_name: str = "us-east-1"
    key: str | None = None
    secret: str | None = None
    token: str | None = None
    anonymous: bool = False
    profile: str | None = None
    addressing_style: str = "path"
    connect_timeout: float = 3.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    use_ssl: bool = True
    verify: bool | str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, environment: str = "local") -> "S3Settings":
        """The pipeline's defaults for ``environment`` (``IH_ENV``): endpoint ``IH_S3_ENDPOINT``,
        by default the local server, or AWS for ``cluster``; credentials from ``AWS_ACCESS_KEY_ID``
        / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` if set, otherwise anonymous access to a
        self-hosted endpoint and botocore's default chain for AWS; region ``AWS_REGION``."""
        env = os.environ if env is None else env
        endpoint = env.get("IH_S3_ENDPOINT", "" if environment == "cluster" else DEFAULT_S3_ENDPOINT) or None
        given = "AWS_ACCESS_KEY_ID" in env
        return cls(endpoint_url=endpoint, region_name=env.get("AWS_REGION", "us-east-1"),
                   key=env.get("AWS_ACCESS_KEY_ID") if given else None,
                   secret=env.get("AWS_SECRET_ACCESS_KEY") if given else None,
                   token=env.get("AWS_SESSION_TOKEN") if given else None,
                   anonymous=not given and endpoint is not None,
                   addressing_style="path" if endpoint else "auto")

    def filesystem(self) -> fsspec.AbstractFileSystem:
        """An s3fs filesystem with these settings (listings never cached: other processes write)."""
        import s3fs

        if (self.key is None) != (self.secret is None):
            raise StorageError(f"S3 endpoint {self.endpoint_url or 'AWS'}: give both the access key and the secret, "
                               "or neither")
        client_kwargs: dict[str, Any] = {"region_name": self.region_name}
        if self.verify is not None:
            client_kwargs["verify"] = self.verify
        return s3fs.S3FileSystem(
            anon=self.anonymous, key=self.key, secret=self.secret, token=self.token, profile=self.profile,
            endpoint_url=self.endpoint_url, use_ssl=self.use_ssl, client_kwargs=client_kwargs,
            config_kwargs={"connect_timeout": self.connect_timeout, "read_timeout": self.read_timeout,
                           "retries": {"max_attempts": self.max_attempts, "mode": "standard"},
                           "s3": {"addressing_style": self.addressing_style}},
            use_listings_cache=False)


class S3Store(Store):
    """Objects in one bucket of an S3-compatible service, through s3fs.

    The bucket is created on the first write if missing, so a fresh SeaweedFS or MinIO needs no
    setup step. ``put_bytes`` is one PUT; ``open(key, "wb")`` a multipart upload in parts of
    :data:`STREAM_BLOCK`, completed on close and aborted on error.
    """

    def __init__(self, bucket: str, settings: S3Settings | None = None) -> None:
        self.bucket, self.settings = bucket, settings or S3Settings()
        super().__init__(self.settings.filesystem(), bucket)
        self._bucket_ready = False

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _where(self) -> str:
        return f", endpoint {self.settings.endpoint_url or 'AWS'}"

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            with self._io("", "head_bucket"):
                self.fs.info(self.bucket)
        except ObjectNotFoundError:
            with contextlib.suppress(FileExistsError), self._io("", "create_bucket"):
                self.fs.mkdir(self.bucket)
        self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(key)
        self._ensure_bucket()
        with self._io(key, "put"):
            self.fs.pipe_file(path, bytes(data))

    def _begin_write(self, path: str) -> tuple[IO[bytes], Callable[[], None], Callable[[], None]]:
        self._ensure_bucket()
        upload = self.fs.open(path, "wb", block_size=STREAM_BLOCK, autocommit=False)

        def commit() -> None:
            upload.close()   # uploads the last part
            upload.commit()  # completes the multipart upload: now the object exists

        def discard() -> None:
            upload.discard()      # aborts the multipart upload
            upload.closed = True  # so that fsspec's __del__ does not try to finish it

        return upload, commit, discard


def open_store(uri: str) -> tuple[Store, str]:
    """``(store, prefix)`` for ``s3://bucket/prefix``, ``memory://name/prefix`` or a local folder.

    S3 uses the pipeline's defaults (:meth:`S3Settings.from_env` for ``IH_ENV``). A local folder is either a
    store's root (then the prefix is ``IH_S3_PREFIX``, default ``renderih``, when that sub-folder
    exists) or the prefix folder itself (prefix ``""``).
    """
    for scheme in ("s3://", "memory://"):
        if uri.startswith(scheme):
            root, _, prefix = uri[len(scheme):].partition("/")
            if not root:
                raise StorageError(f"{uri}: no {'bucket' if scheme == 's3://' else 'store name'} after {scheme}")
            store = (S3Store(root, S3Settings.from_env(environment=os.environ.get("IH_ENV", "local")))
                     if scheme == "s3://" else MemoryStore(root))
            return store, prefix.strip("/")
    folder = Path(uri.removeprefix("file://"))
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected s3://bucket/prefix, memory://name or a local folder)")
    default = os.environ.get("IH_S3_PREFIX", DEFAULT_PREFIX)
    return LocalStore(folder), default if (folder / default).is_dir() else ""
