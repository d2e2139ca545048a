"""The files of an export folder: written one at a time as streams, each one's SHA-256 recorded.

An export at paper scale is millions of files (IntagHand writes 17 per image), so nothing here
keeps a list of them: :class:`ExportFiles` writes each file through an ``open_write(path)``
stream (a local file or ``Store.open(key, "wb")``) and appends its checksum line to
``SHA256SUMS`` at the export root as soon as the file is complete. ``SHA256SUMS`` is in the
format of ``sha256sum`` (``<64 hex>  <path>``, one line per file, paths relative to the root), so
``cd <export> && sha256sum -c SHA256SUMS`` checks a copy, and ``ih-pipeline verify`` reads it.
It lists every file of the export except itself, and it is stored only when the export finished
(written last, committed on a clean exit), so its presence says the folder is complete.

Orphans (files an earlier, larger export left) are found by streaming the folder's listing
against a predicate of the new export's expected paths, again without a list of what was written.

Exported images are JPEG at :data:`JPEG_QUALITY` with full-resolution chroma: see
:func:`encode_jpeg` for why.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, ContextManager, Iterable, Iterator

import numpy as np
from PIL import Image

#: Checksum file at the root of every export (``sha256sum -c`` format).
SUMS_FILE = "SHA256SUMS"
#: JPEG quality of exported images (see :func:`encode_jpeg`).
JPEG_QUALITY = 95

#: ``open_write(relative_path)``: a binary write stream whose file appears complete on a clean
#: exit of the context and not at all after an error.
OpenWrite = Callable[[str], ContextManager[IO[bytes]]]


def encode_jpeg(array: np.ndarray) -> bytes:
    """uint8 RGB (an alpha channel is dropped) or grey -> JPEG bytes, deterministic for equal input.

    Why JPEG, not PNG content under ``.jpg`` names: InterHand2.6M's and IntagHand's loaders build
    ``.jpg`` paths, and readers that pick the decoder by extension (GPU JPEG decoders such as
    nvJPEG/DALI, ``torchvision.io.decode_jpeg``) fail on PNG bytes. Quality 95 with 4:4:4 chroma
    (no chroma subsampling) keeps the mean error around one grey level and leaves hand edges and
    thin fingers sharp, at a quarter to a third of the PNG's size; IH2.6M's own images are JPEG too.
    """
    pixels = np.ascontiguousarray(array[..., :3] if array.ndim == 3 else array)
    if pixels.dtype != np.uint8:
        raise ValueError(f"encode_jpeg takes uint8 arrays, got {pixels.dtype}")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def check_relative_path(path: str) -> str:
    """A path inside the export root, fit for one ``SHA256SUMS`` line (no newline or backslash,
    which ``sha256sum`` would escape)."""
    # plain string checks: this runs for every file of an export (17 per image for IntagHand)
    if any(p in ("", ".", "..") for p in path.split("/")) or "\n" in path or "\\" in path:
        raise ValueError(f"export path {path!r} is not a plain relative path")
    return path


class ExportFiles:
    """Writes an export's files and its ``SHA256SUMS``; a context manager.

    On a clean exit ``SHA256SUMS`` is committed; after an error it is dropped (the files written
    so far stay, and a re-run replaces them). ``files`` counts the files written. ``sums_to``
    writes ``SHA256SUMS`` elsewhere: a part of an export written by several processes keeps its
    lines aside until the whole export takes them in (:meth:`adopt`).
    """

    def __init__(self, open_write: OpenWrite, sums_to: OpenWrite | None = None) -> None:
        self._open, self._open_sums = open_write, sums_to or open_write
        self._stack = contextlib.ExitStack()
        self._sums: IO[bytes] | None = None
        self.files = 0

    def __enter__(self) -> "ExportFiles":
        self._sums = self._stack.enter_context(self._open_sums(SUMS_FILE))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._sums = None
        self._stack.__exit__(*exc)

    def put(self, path: str, data: bytes) -> None:
        """Write one file whose bytes are at hand."""
        self.write(path, (data,))

    def write(self, path: str, chunks: Iterable[bytes]) -> None:
        """Write one file from a stream of chunks (never joined in memory)."""
        if self._sums is None:
            raise RuntimeError("ExportFiles used outside its `with` block")
        digest = hashlib.sha256()
        with self._open(check_relative_path(path)) as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
        self._sums.write(f"{digest.hexdigest()}  {path}\n".encode())
        self.files += 1

    def adopt(self, sums: IO[bytes]) -> None:
        """Append the checksum lines of files another writer wrote (one part of an export written
        by several processes, each with its own ``sums_to``), streamed, and count them."""
        if self._sums is None:
            raise RuntimeError("ExportFiles used outside its `with` block")
        for line in sums:
            self._sums.write(line)
            self.files += 1


def local_writer(root: str | os.PathLike[str]) -> OpenWrite:
    """``open_write`` for a local folder: a temp file beside the target, renamed into place when the
    stream closes cleanly (removed after an error), so a reader never sees half a file."""

    @contextlib.contextmanager
    def open_write(relative_path: str) -> Iterator[IO[bytes]]:
        path = os.path.join(root, *PurePosixPath(relative_path).parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                yield fh
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    return open_write


def store_writer(store: Any, folder: str) -> OpenWrite:
    """``open_write`` for ``<folder>/<path>`` in a :class:`handsynth.storage.Store` (S3: one
    multipart upload per file, completed on close and aborted on error)."""
    return lambda relative_path: store.open(f"{folder}/{relative_path}", "wb")


def local_files(root: str | os.PathLike[str]) -> Iterator[str]:
    """Relative '/'-paths of the files below ``root``, streamed folder by folder (none if absent)."""
    base = Path(root)
    for folder, _, names in os.walk(base):
        rel = Path(folder).relative_to(base).as_posix()
        for name in names:
            yield name if rel == "." else f"{rel}/{name}"


def remove_orphans(existing: Iterable[str], expected: Callable[[str], bool], delete: Callable[[str], None]) -> int:
    """Delete every path of ``existing`` that the new export does not have (``expected`` is
    false); return how many. An export re-run with fewer images would otherwise leave files that
    loaders count (IntagHand globs ``anno/*.pkl``)."""
    removed = 0
    for path in existing:
        if not expected(path):
            delete(path)
            removed += 1
    return removed
