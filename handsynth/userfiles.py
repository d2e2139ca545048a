"""Files from a user's folder, read as data and never as paths to follow.

A folder named by a setting (``IH_ENVIRONMENT_DIR``, ``IH_MANO_DIR``, a local
``IH_INTERHAND_MANO_FILES`` entry) is input, not a set of pointers: a symlink ``sky.hdr ->
/etc/passwd`` in it must not upload ``/etc/passwd`` into the bucket, and a FIFO must not hang the
run. So every file is opened with ``O_NOFOLLOW`` relative to a descriptor of its folder (the
folder cannot be swapped between the listing and the open) and must be a regular file by
``fstat`` of the opened descriptor; anything else is a :class:`UserFileError` naming the path.
The folder itself may be given through a symlink: the user names it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterable

from handsynth.storage import stream_sha256

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class UserFileError(ValueError):
    """A user's file or folder is missing, a link, or not a regular file: ``path: reason``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _refusal(path: Path, what: str) -> UserFileError:
    return UserFileError(path, f"{what}; only regular files are read from user folders (links are not followed)")


def _open_folder(folder: str | os.PathLike[str]) -> int:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserFileError(folder, "folder not found") from None
    except NotADirectoryError:
        raise UserFileError(folder, "not a folder") from None
    except OSError as exc:
        raise UserFileError(folder, f"cannot open the folder ({exc.strerror})") from None


def _open_in(folder_fd: int, folder: Path, name: str) -> int:
    """A descriptor of the regular file ``name`` directly inside the open folder."""
    path = folder / name
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=folder_fd)
    except FileNotFoundError:
        raise UserFileError(path, "file not found") from None
    except OSError as exc:
        try:  # ELOOP is how O_NOFOLLOW reports a link; say what the entry is
            what = _kind(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode)
        except OSError:
            what = f"cannot be opened ({exc.strerror})"
        raise _refusal(path, what) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _refusal(path, _kind(mode))
    os.set_blocking(fd, True)
    return fd


def list_files(folder: str | os.PathLike[str], suffixes: Iterable[str]) -> list[str]:
    """Sorted names of the entries of ``folder`` whose name ends in one of ``suffixes``
    (case-insensitive); :class:`UserFileError` when any of them is not a regular file.
    Other entries are ignored: they are never opened."""
    ends = tuple(s.lower() for s in suffixes)
    fd = _open_folder(folder)
    try:
        names = sorted(entry for entry in os.listdir(fd) if entry.lower().endswith(ends))
        for name in names:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                raise _refusal(Path(folder, name), _kind(mode))
    finally:
        os.close(fd)
    return names


def read_files(folder: str | os.PathLike[str], names: Iterable[str]) -> dict[str, bytes]:
    """``name -> bytes`` of regular files directly inside ``folder`` (see the module docstring)."""
    fd = _open_folder(folder)
    out = {}
    try:
        for name in names:
            if not name or "/" in name or name in (".", ".."):
                raise UserFileError(folder, f"{name!r} is not a file name inside the folder")
            with os.fdopen(_open_in(fd, Path(folder), name), "rb") as fh:
                out[name] = fh.read()
    finally:
        os.close(fd)
    return out


def open_file(path: str | os.PathLike[str]) -> BinaryIO:
    """A binary stream of the regular file ``path`` (its last component is not followed if a link)."""
    path = Path(path)
    try:
        fd = _open_folder(path.parent)
    except UserFileError as exc:
        raise UserFileError(path, f"cannot open its folder ({exc.reason})") from None
    try:
        return os.fdopen(_open_in(fd, path.parent, path.name), "rb")
    finally:
        os.close(fd)


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_file`)."""
    with open_file(path) as fh:
        return fh.read()


def _combine(sha256_by_name: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(sha256_by_name):
        h.update(f"{name}\0{sha256_by_name[name]}\n".encode())
    return h.hexdigest()


def files_digest(files: dict[str, bytes]) -> str:
    """SHA-256 over sorted ``(name, sha256(content))``: changes when any file is added, removed,
    renamed or edited; what a copy of a folder records to know when to re-sync."""
    return _combine({name: hashlib.sha256(data).hexdigest() for name, data in files.items()})


def folder_digest(folder: str | os.PathLike[str], suffixes: Iterable[str]) -> str:
    """:func:`files_digest` of the files :func:`list_files` names, streamed (constant memory)."""
    names = list_files(folder, suffixes)
    fd = _open_folder(folder)
    shas = {}
    try:
        for name in names:
            with os.fdopen(_open_in(fd, Path(folder), name), "rb") as fh:
                shas[name] = stream_sha256(fh)[1]
    finally:
        os.close(fd)
    return _combine(shas)
