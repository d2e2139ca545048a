"""Render blocks: the image store. One WebDataset tar per distinct pose of a shard, plus its index.

A *block* holds every view of every kept augmentation of ONE distinct pose. It is stored as two
objects (a tar and a small JSON index), so that a million images are ~7,400 objects, not 3.3M:

- ``<prefix>/render/<shard>/<encoded distinct_pose_id>.tar``: the WebDataset layout, one sample
  per image (``<sample>.png`` RGB, ``<sample>.label.png`` part labels, ``<sample>.depth.png``
  depth in mm, ``<sample>.json`` the training targets). The tar is a training shard as it is.
- ``<…>.index.json``, written only after the tar is stored: each image's manifest row with the
  data offset, size and sha256 of its members, the tar's size and sha256, the digest of the
  inputs the block was rendered from, and when and where it was rendered.

So a block is *complete and current* exactly when its index exists, names the current inputs
digest, and the tar has the recorded size and sha256 (:func:`check_block`); a killed render
leaves a tar without index (or no tar), which reads as missing. Any image is reachable by one
ranged read through its row (:func:`read_member`), verified against its sha256.

Tars are byte-identical for identical images: member headers carry no time, owner or mode that
varies, and samples follow the renderer's order.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np

from handsynth import ids
from handsynth.pose_table import PoseTable
from handsynth.storage import IntegrityError, ObjectNotFoundError, sha256_hex

#: Image kinds of a sample and their member suffix (WebDataset: the key ends at the first dot).
MEMBER_SUFFIX: dict[str, str] = {"rgb": "png", "label": "label.png", "depth": "depth.png"}
TARGETS_SUFFIX = "json"
#: The per-image columns that locate an image's bytes (rendered_views and annotations rows).
LOCATION_COLUMNS: tuple[str, ...] = ("tar_key", *(f"{k}_{c}" for k in MEMBER_SUFFIX for c in ("offset", "bytes", "sha256")))
INDEX_FORMAT = "renderih-render-block/1"
_BLOCK = tarfile.BLOCKSIZE


# ---- keys ------------------------------------------------------------------------------------------


def shard_folder(prefix: str, shard: str) -> str:
    """The folder of a shard's blocks, with a trailing slash (for listing)."""
    return "/".join(p for p in (prefix, "render", shard) if p) + "/"


def block_key(prefix: str, shard: str, distinct_pose_id: str) -> str:
    """The tar of one distinct pose; injective in the id (:func:`ids.id_to_filename`)."""
    return f"{shard_folder(prefix, shard)}{ids.id_to_filename(distinct_pose_id)}.tar"


def index_key(tar_key: str) -> str:
    """The block index stored beside ``tar_key``."""
    return tar_key.removesuffix(".tar") + ".index.json"


def sample_name(image_id: str) -> str:
    """The WebDataset key of an image: its id as a file name with ``.`` escaped too (WebDataset
    splits a member name at its first dot). Injective: ``id_to_filename`` never writes ``~2E``."""
    return ids.id_to_filename(image_id).replace(".", "~2E")


# ---- what a block is made from ----------------------------------------------------------------------


def inputs_digest(poses: PoseTable, context: Mapping[str, Any]) -> str:
    """SHA-256 over what decides a block's bytes: its poses (ids, lineage, every parameter array
    in row order) and ``context`` (code version, settings, render options, hand model, maps),
    given as JSON-ready values. Anything that changes an image must be in one of the two."""
    h = hashlib.sha256(json.dumps(context, sort_keys=True, default=str).encode())
    meta = poses.meta[[c for c in ("pose_id", "distinct_pose_id", "source_ref") if c in poses.meta]]
    h.update(meta.to_json(orient="values").encode())
    for name in sorted(poses.arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(poses.arrays[name]).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Block:
    """One distinct pose's render work: the kept augmentations to render and where they go."""

    tar_key: str
    distinct_pose_id: str
    poses: PoseTable
    inputs_digest: str


def plan_blocks(kept: PoseTable, prefix: str, shard: str, context: Mapping[str, Any]) -> list[Block]:
    """Group a shard's kept poses into blocks by distinct pose (sorted by id: a stable order)."""
    distinct = kept.meta["distinct_pose_id"].astype(str).to_numpy()
    blocks = []
    for did in sorted(set(distinct)):
        poses = kept.take(np.flatnonzero(distinct == did))
        blocks.append(Block(block_key(prefix, shard, did), did, poses, inputs_digest(poses, context)))
    return blocks


# ---- writing ------------------------------------------------------------------------------------------


class _Counting(io.RawIOBase):
    """Passes writes through while counting and hashing them (the tar's size and sha256)."""

    def __init__(self, sink: io.BufferedIOBase) -> None:
        self.sink, self.size, self.hash = sink, 0, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sink.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)


class BlockWriter:
    """Appends samples to one block's tar as its images arrive (streamed: nothing waits for the
    whole block), then :meth:`commit` stores it, or :meth:`abort` leaves no object behind."""

    def __init__(self, store: Any, tar_key: str) -> None:
        self.tar_key = tar_key
        self._stack = contextlib.ExitStack()
        self._out = _Counting(self._stack.enter_context(store.open(tar_key, "wb")))  # visible on commit only
        self._tar = tarfile.open(fileobj=self._out, mode="w|", format=tarfile.PAX_FORMAT)

    def add(self, image_id: str, pngs: Mapping[str, bytes], targets: bytes) -> dict[str, Any]:
        """Append one sample; returns its location columns (see :data:`LOCATION_COLUMNS`)."""
        name = sample_name(image_id)
        location: dict[str, Any] = {"tar_key": self.tar_key}
        for suffix, data, kind in [*((MEMBER_SUFFIX[k], pngs[k], k) for k in MEMBER_SUFFIX), (TARGETS_SUFFIX, targets, None)]:
            info = tarfile.TarInfo(f"{name}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
            if kind is not None:  # data starts where its zero-padded 512-byte blocks start
                location[f"{kind}_offset"] = self._tar.offset - -(-len(data) // _BLOCK) * _BLOCK
                location[f"{kind}_bytes"] = len(data)
                location[f"{kind}_sha256"] = sha256_hex(data)
        return location

    def commit(self) -> tuple[int, str]:
        """Finish and store the tar -> (size, sha256)."""
        self._tar.close()
        self._stack.close()
        return self._out.size, self._out.hash.hexdigest()

    def abort(self, exc: BaseException) -> None:
        """Drop the block: the upload sees ``exc`` and stores nothing; the tar finishes into a
        throw-away buffer so that nothing writes to the dropped upload later."""
        self._stack.__exit__(type(exc), exc, exc.__traceback__)
        self._out.sink = io.BytesIO()
        self._tar.close()


# ---- the index ---------------------------------------------------------------------------------------


@dataclass
class BlockIndex:
    """What a stored block holds (written after its tar; see the module docstring)."""

    tar_key: str
    tar_bytes: int
    tar_sha256: str
    inputs_digest: str
    started: float                # wall-clock seconds (time.time()) when rendering began
    finished: float               # and when the last image arrived
    worker: str                   # the process that rendered it: "<host>:<pid>"
    rows: list[dict[str, Any]] = field(default_factory=list)  # manifest rows, JSON values

    def to_json(self) -> bytes:
        return json.dumps({"format": INDEX_FORMAT, **self.__dict__}, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, uri: str) -> "BlockIndex":
        """Parse an index; any problem is a one-line ``ValueError`` naming ``uri``."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{uri}: block index is not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise ValueError(f"{uri}: not a block index of format {INDEX_FORMAT!r}")
        try:
            index = cls(**{k: doc[k] for k in cls.__dataclass_fields__})
        except KeyError as exc:
            raise ValueError(f"{uri}: block index lacks field {exc}") from None
        for i, row in enumerate(index.rows):
            missing = [c for c in LOCATION_COLUMNS if c not in row]
            if missing or row["tar_key"] != index.tar_key:
                raise ValueError(f"{uri}: image row {i} lacks {missing or 'its tar_key'}")
        return index


def store_index(store: Any, index: BlockIndex) -> None:
    store.put_bytes(index_key(index.tar_key), index.to_json())


# ---- reading ----------------------------------------------------------------------------------------


def read_member(store: Any, row: Mapping[str, Any], kind: str) -> bytes:
    """The bytes of image ``kind`` (rgb, label, depth) of a manifest/annotation row: one ranged
    read of its block tar, verified against the row's sha256 (:class:`IntegrityError` if not)."""
    key, start, length = str(row["tar_key"]), int(row[f"{kind}_offset"]), int(row[f"{kind}_bytes"])
    where = f"{store.uri(key)} ({kind} image of {row.get('image_id', '?')} at byte {start})"
    expected = str(row[f"{kind}_sha256"])
    try:
        data = store.read_range(key, start, length)
    except IntegrityError as exc:   # the tar ends before the member does
        raise IntegrityError(where, length, expected, exc.found_size, None) from None
    found = sha256_hex(data)
    if len(data) != length or found != expected:
        raise IntegrityError(where, length, expected, len(data), found)
    return data


BlockState = Literal["current", "missing", "stale", "corrupt"]


@dataclass(frozen=True)
class BlockCheck:
    state: BlockState
    reason: str                   # why it is not current (one line), "" when current
    index: BlockIndex | None      # the stored index when current


def _stored_index(store: Any, tar_key: str) -> BlockIndex | BlockCheck:
    """The stored index of the block at ``tar_key``, or why there is none to trust."""
    ikey = index_key(tar_key)
    if not store.exists(ikey):
        return BlockCheck("missing", "never completed (no index)", None)
    try:
        index = BlockIndex.from_json(store.get_bytes(ikey), store.uri(ikey))
    except ValueError as exc:
        return BlockCheck("corrupt", str(exc), None)
    if index.tar_key != tar_key:
        return BlockCheck("corrupt", f"{store.uri(ikey)}: index names another tar ({index.tar_key})", None)
    return index


def _verified(store: Any, index: BlockIndex) -> BlockCheck:
    """``index``'s block as current when its tar has the recorded size and sha256 (the whole tar
    is read: a stored block is verified before it is trusted, which costs far less than rendering it)."""
    try:
        store.verify(index.tar_key, index.tar_bytes, index.tar_sha256)
    except ObjectNotFoundError:
        return BlockCheck("corrupt", f"{store.uri(index.tar_key)}: tar missing", None)
    except IntegrityError as exc:
        return BlockCheck("corrupt", str(exc), None)
    return BlockCheck("current", "", index)


def check_block(store: Any, block: Block) -> BlockCheck:
    """Whether ``block`` is stored complete and current: its index parses and names the block's
    inputs digest (checked first: a stale tar is not worth reading), and its tar has the recorded
    size and sha256."""
    index = _stored_index(store, block.tar_key)
    if isinstance(index, BlockCheck):
        return index
    if index.inputs_digest != block.inputs_digest:
        return BlockCheck("stale", "rendered from other inputs (poses, settings, code or maps changed)", None)
    return _verified(store, index)


def check_stored_block(store: Any, tar_key: str) -> BlockCheck:
    """Whether the block stored at ``tar_key`` is complete and intact, whatever it was rendered
    from: for checking what a stored manifest references (``handsynth.verify``), where the inputs
    that would give the digest are not at hand."""
    index = _stored_index(store, tar_key)
    return index if isinstance(index, BlockCheck) else _verified(store, index)
