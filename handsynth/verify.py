"""Check stored data against its records: a bucket (prefix) of the pipeline, or an export folder.

Every problem is one line naming the object (URI or path, and the image inside a block) and
what was expected against what was found; callers print them as they come. Everything is
streamed, one object, one block or one shard's annotation table at a time; what grows with the
data set is only the listing of the render folder's keys (two per block: about a megabyte at
paper size), which finds the blocks no table references:

- **recorded objects** (:func:`verify_records`): ``(what, key, bytes, sha256)`` records, such as
  those the IO manager keeps of every table it writes (they live in Dagster's records; the
  command line gathers them, :mod:`ih_assets.cli`).
- **render blocks** (:func:`verify_render`, :func:`block_problems`): each shard's annotation
  table against the blocks under ``<prefix>/render/<shard>/``. A block must have its index and a
  tar of the size and SHA-256 the index records; every annotation row must locate its image
  members exactly where the block's index does (same tar, offsets, sizes, SHA-256), so that the
  training reader's and the exports' ranged reads (:func:`handsynth.render.blocks.read_member`)
  get the recorded bytes. A damaged tar is then read member by member to name the damaged
  images. A block no row references, or a tar without index (an interrupted render) is reported
  too: the bucket is not the complete data set its tables describe.
- **exports** (:func:`verify_export`): every file listed in the export's ``SHA256SUMS``
  (``sha256sum`` format, written by the exports) against its hash; in a local folder, files the
  list does not name are counted as a problem as well.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Iterator, NamedTuple

import pandas as pd

from handsynth.export_files import SUMS_FILE, check_relative_path
from handsynth.render.blocks import LOCATION_COLUMNS, MEMBER_SUFFIX, check_stored_block, index_key, read_member
from handsynth.storage import STREAM_BLOCK, IntegrityError, ObjectNotFoundError, StorageError, Store, open_store, stream_sha256

#: Checksum file at an export's root (``sha256sum -c`` format).
#: One ``sha256sum`` line: hash, a space, ``' '`` (text) or ``'*'`` (binary), the path.
_SUMS_LINE = re.compile(r"^(\\?)([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass
class Tally:
    """What a verification looked at: objects (or files) and their recorded bytes, and problems."""

    objects: int = 0
    bytes: int = 0
    problems: int = 0

    def summary(self, seconds: float) -> str:
        verdict = "OK" if not self.problems else f"{self.problems} problem(s)"
        return f"checked {self.objects} objects ({self.bytes / 2**20:.1f} MiB) in {seconds:.1f} s: {verdict}"


class Record(NamedTuple):
    """An object a record promises: what made it (e.g. ``optimized_poses[shard=00001]``), its
    key, size and SHA-256."""

    what: str
    key: str
    bytes: int
    sha256: str


def _line(uri: str, reason: str) -> str:
    """``reason`` as a problem line that names ``uri`` (once)."""
    return reason if reason.startswith(uri) else f"{uri}: {reason}"


# ---- recorded objects ------------------------------------------------------------------------------


def verify_records(store: Store, records: Iterable[Record], tally: Tally) -> Iterator[str]:
    """Each recorded object: present, with the recorded size and SHA-256 (streamed read)."""
    for record in records:
        tally.objects += 1
        tally.bytes += record.bytes
        try:
            store.verify(record.key, record.bytes, record.sha256)
        except ObjectNotFoundError:
            yield f"{store.uri(record.key)}: missing (recorded by {record.what}: {record.bytes} bytes sha256 {record.sha256})"
        except IntegrityError as exc:
            yield f"{exc} (recorded by {record.what})"


# ---- render blocks ------------------------------------------------------------------------------------


def _location(row: dict, kind: str) -> tuple[str, int, int, str]:
    return (str(row["tar_key"]), int(row[f"{kind}_offset"]), int(row[f"{kind}_bytes"]), str(row[f"{kind}_sha256"]))


def block_problems(store: Store, tar_key: str, rows: list[dict], tally: Tally) -> Iterator[str]:
    """The problems of one stored block and of the table ``rows`` that reference it (each with
    ``image_id`` and :data:`LOCATION_COLUMNS`)."""
    check = check_stored_block(store, tar_key)
    tally.objects += 1
    uri = store.uri(tar_key)
    if check.index is None:
        yield _line(uri, check.reason)
        if store.exists(index_key(tar_key)) and store.exists(tar_key):   # name the damaged images
            for row in rows:
                for kind in MEMBER_SUFFIX:
                    try:
                        read_member(store, row, kind)
                    except IntegrityError as exc:
                        yield str(exc)
        return
    tally.bytes += check.index.tar_bytes
    indexed = {str(r["image_id"]): r for r in check.index.rows}
    for row in rows:
        image_id = str(row["image_id"])
        stored = indexed.get(image_id)
        if stored is None:
            yield f"{uri}: image {image_id} of the table is not in the block's index"
            continue
        for kind in MEMBER_SUFFIX:
            want, found = _location(row, kind), _location(stored, kind)
            if want != found:
                yield (f"{uri} ({kind} image of {image_id}): the table records offset {want[1]}, {want[2]} bytes, "
                       f"sha256 {want[3]}; the block's index offset {found[1]}, {found[2]} bytes, sha256 {found[3]}")


def table_block_problems(store: Store, table: pd.DataFrame, tally: Tally) -> Iterator[tuple[str, str]]:
    """``(tar key, problem)`` for :func:`block_problems` of every block ``table`` (a rendered_views
    or annotations table of one shard) references; the main job asks this of a shard it would skip."""
    if not len(table):
        return
    columns = ["image_id", *LOCATION_COLUMNS]
    for tar_key, group in table[columns].groupby("tar_key", sort=True):
        for problem in block_problems(store, str(tar_key), group.to_dict("records"), tally):
            yield str(tar_key), problem


def _read_table(store: Store, key: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(store.get_bytes(key)), engine="pyarrow")
    except StorageError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{store.uri(key)}: not a readable annotation table ({type(exc).__name__}: {exc})") from None


def verify_render(store: Store, prefix: str, tally: Tally) -> Iterator[str]:
    """Every shard's annotation table (``<prefix>/annotations/<shard>.parquet``) against its
    render blocks (``<prefix>/render/<shard>/``), and every stored block against some row."""
    join = lambda *parts: "/".join(p for p in (prefix, *parts) if p)  # noqa: E731
    tables = {key.rsplit("/", 1)[-1].removesuffix(".parquet"): key
              for key in store.list_keys(join("annotations") + "/") if key.endswith(".parquet")}
    stored: dict[str, set[str]] = {}
    for key in store.list_keys(join("render") + "/"):
        shard, _, name = key[len(join("render")) + 1:].partition("/")
        if name:
            stored.setdefault(shard, set()).add(name.removesuffix(".index.json").removesuffix(".tar"))
    for shard in sorted(set(tables) | set(stored)):
        referenced: set[str] = set()
        if shard in tables:
            try:
                table = _read_table(store, tables[shard])
            except ValueError as exc:
                yield str(exc)
                continue
            if len(table):
                referenced = {k.rsplit("/", 1)[-1].removesuffix(".tar") for k in table["tar_key"].astype(str)}
            yield from (problem for _, problem in table_block_problems(store, table, tally))
        orphans = sorted(stored.get(shard, set()) - referenced)
        where = (store.uri(tables[shard]) if shard in tables
                 else f"no annotation table {store.uri(join('annotations', shard + '.parquet'))}")
        for name in orphans:
            yield f"{store.uri(join('render', shard, name))}.tar: a block no image row references ({where})"


# ---- exports ----------------------------------------------------------------------------------------


def parse_sums_line(line: str, where: str) -> tuple[str, str]:
    """``(sha256, relative path)`` of one ``sha256sum`` line; a line that is not one, or whose path
    leaves the folder, is a ``ValueError`` naming ``where`` (the file and line number)."""
    match = _SUMS_LINE.match(line)
    if not match:
        raise ValueError(f"{where}: not a sha256sum line ('<64 hex digits>  <path>'): {line[:80]!r}")
    escaped, sha256, path = match.groups()
    if escaped:   # sha256sum escapes names holding a backslash or a newline
        path = re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\"}.get(m.group(1), m.group(0)), path)
    try:
        return sha256.lower(), check_relative_path(path)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_listed(lines: Iterable[str], sums_name: str, open_file: Callable[[str], IO[bytes]], name: Callable[[str], str],
                  tally: Tally, found_files: list[int] | None = None) -> Iterator[str]:
    """Each listed file against its hash; ``found_files[0]`` counts the listed files that exist."""
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line:
            continue
        try:
            sha256, path = parse_sums_line(line, f"{sums_name} line {number}")
        except ValueError as exc:
            yield str(exc)
            continue
        tally.objects += 1
        try:
            with open_file(path) as stream:
                size, found = stream_sha256(stream)
        except (FileNotFoundError, ObjectNotFoundError):
            yield f"{name(path)}: missing (listed in {sums_name} with sha256 {sha256})"
            continue
        except (OSError, StorageError) as exc:
            yield f"{name(path)}: not readable as a listed file ({exc})"
            continue
        tally.bytes += size
        if found_files is not None:
            found_files[0] += 1
        if found != sha256:
            yield f"{name(path)}: sha256 differs from {sums_name}: expected {sha256}, found {found} ({size} bytes)"


def _local_open(root: Path) -> Callable[[str], IO[bytes]]:
    def open_file(path: str) -> IO[bytes]:
        target = root.joinpath(*PurePosixPath(path).parts)
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise OSError("a link or folder, not a regular file")  # an export holds regular files only
        return open(target, "rb")
    return open_file


def export_roots(folder: Path) -> list[Path]:
    """The export roots of a local folder: itself when it holds ``SHA256SUMS``, else its
    sub-folders that do (``ih-pipeline export`` writes one per format)."""
    if (folder / SUMS_FILE).is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / SUMS_FILE).is_file()) if folder.is_dir() else []


def verify_export(root: Path, tally: Tally) -> Iterator[str]:
    """A local export folder against its ``SHA256SUMS``: each listed file present, regular and of
    the listed hash; then files the list does not name (counted while walking the folder)."""
    sums = root / SUMS_FILE
    listed = [0]
    with open(sums, encoding="utf-8", errors="surrogateescape") as lines:
        yield from _check_listed(lines, str(sums), _local_open(root), lambda p: str(root / p), tally, listed)
    present = sum(len(names) for _, _, names in os.walk(root)) - 1   # SHA256SUMS lists all but itself
    if present > listed[0]:
        yield (f"{root}: {present - listed[0]} file(s) not listed in {sums} (the folder holds {present} files besides "
               f"it, {listed[0]} of them listed)")


def _lines(stream: IO[bytes]) -> Iterator[str]:
    """The text lines of a binary stream, read in parts (a store's read stream is no file for ``io``)."""
    rest = b""
    while chunk := stream.read(STREAM_BLOCK):
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line.decode("utf-8", "surrogateescape") for line in lines)
    if rest:
        yield rest.decode("utf-8", "surrogateescape")


def verify_store_export(store: Store, folder: str, tally: Tally) -> Iterator[str]:
    """An export stored under ``folder`` of ``store`` against its ``SHA256SUMS`` (listed files only:
    listing the folder to find unlisted ones would hold every key in memory)."""
    sums_key = f"{folder}/{SUMS_FILE}" if folder else SUMS_FILE
    key = lambda path: f"{folder}/{path}" if folder else path  # noqa: E731
    with store.open(sums_key, "rb") as stream:
        yield from _check_listed(_lines(stream), store.uri(sums_key), lambda p: store.open(key(p), "rb"),
                                 lambda p: store.uri(key(p)), tally)


# ---- what a source is --------------------------------------------------------------------------------


def verify_source(source: str, records: Callable[[Store, str], Iterable[Record]] | None, tally: Tally,
                  no_records: Callable[[], None] = lambda: None) -> Iterator[str]:
    """The problems of ``source``: a local export folder (it, or its sub-folders, hold
    ``SHA256SUMS``), an export stored under ``s3://bucket/prefix`` (``SHA256SUMS`` right there), or
    else a pipeline's bucket (prefix) or local store: the objects ``records(store, prefix)``
    gives (``no_records()`` is called instead when there are none to ask), then the annotation
    tables against the render blocks."""
    folder = Path(source.removeprefix("file://"))
    if "://" not in source.removeprefix("file://") and folder.is_dir() and export_roots(folder):
        for root in export_roots(folder):
            yield from verify_export(root, tally)
        return
    store, prefix = open_store(source)
    sums_key = "/".join(p for p in (prefix, SUMS_FILE) if p)
    if store.exists(sums_key):
        yield from verify_store_export(store, prefix, tally)
        return
    if records is not None:
        yield from verify_records(store, records(store, prefix), tally)
    else:
        no_records()
    yield from verify_render(store, prefix, tally)
