"""Streaming readers of InterHand2.6M (IH2.6M) annotation files.

IH2.6M ships its annotations as single JSON documents of up to several gigabytes
(``InterHand2.6M_{split}_MANO_NeuralAnnot.json``, ``..._joint_3d.json``, ``..._camera.json``).
``json.load`` on those needs tens of gigabytes of Python objects, so these readers walk the
document with ijson, materialise one frame (a few hundred numbers) at a time, and pack the
numbers into float32 blocks of ``chunk_rows`` rows; memory is bounded by the output arrays.

File layouts (``capture`` and ``frame`` keys are decimal strings):

- MANO: ``{capture: {frame: {"right": {"pose": [48], "shape": [10], "trans": [3]} | null,
  "left": ... }}}``; world frame, metres; ``pose[0:3]`` is the global orientation, ``pose[3:48]``
  the 15 finger rotations in MANO's ``flat_hand_mean=False`` convention.
- joints: ``{capture: {frame: {"world_coord": [42][3] (mm), "joint_valid": [42][1],
  "hand_type": "right"|"left"|"interacting", "hand_type_valid": bool}}}``.
- cameras: ``{capture: {"campos": {cam: [3]}, "camrot": {cam: [3][3]}, "focal": {cam: [2]},
  "princpt": {cam: [2]}}}`` with ``X_cam = camrot @ (X_world - campos)`` in millimetres.

Every malformed input raises :class:`InterHandFormatError` naming the file, capture, frame,
hand and field.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Union

import ijson
import numpy as np
import pandas as pd

from handsynth.ids import escape_part
from handsynth.pose_table import SIDES, PoseTable, from_hands

Source = Union[str, "os.PathLike[str]", BinaryIO]

SOURCE_NAME = "interhand2.6m"

#: MANO fields of one hand in the NeuralAnnot file and their lengths.
MANO_FIELDS: dict[str, int] = {"pose": 48, "shape": 10, "trans": 3}

HAND_TYPES: tuple[str, ...] = ("right", "left", "interacting")

NUM_JOINTS = 42


class InterHandFormatError(ValueError):
    """An IH2.6M file is malformed; the message names file, capture, frame, hand and field."""


@dataclass
class InterHandStats:
    """Counts from one MANO file: frames read, kept (both hands present) and skipped."""

    frames_read: int = 0
    frames_kept: int = 0
    frames_skipped: int = 0
    #: Per side, how many frames lacked that hand (null or absent).
    missing_hands: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SIDES})


@dataclass
class InterHandCameras:
    """The cameras of one capture in the project's convention ``X_cam = R @ X_world + t``."""

    capture: str
    names: list[str]  # camera ids as written in the file, e.g. "400026"
    K: np.ndarray  # (C, 3, 3) intrinsics, pixels
    R: np.ndarray  # (C, 3, 3) world -> camera rotation
    t: np.ndarray  # (C, 3) world -> camera translation, metres


@dataclass
class InterHandJoints:
    """Rows of ``joint_3d.json``, one per (capture, frame), in IH2.6M's 42-joint order."""

    capture: np.ndarray  # (N,) str
    frame: np.ndarray  # (N,) str
    world_mm: np.ndarray  # (N, 42, 3) float32, world frame, millimetres
    valid: np.ndarray  # (N, 42) bool
    hand_type: np.ndarray  # (N,) str in HAND_TYPES
    hand_type_valid: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.capture)


# ---- streaming ---------------------------------------------------------------------------


@contextmanager
def _opened(source: Source, name: str | None) -> Iterator[tuple[BinaryIO, str]]:
    """Yield a binary file object and the name to use in messages."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            yield fh, name or os.path.basename(os.fspath(source))
    else:
        yield source, name or str(getattr(source, "name", "") or "<stream>")


#: Most parser events (values, keys, brackets) one frame may hold. A MANO frame has ~140 and a
#: joint frame ~360; a record far beyond that is malformed, and building it would cost memory
#: without bound (a 20M-value ``pose`` needed 0.9 GB), so it is refused while streaming.
MAX_FRAME_VALUES = 10_000


def _iter_frames(
    fh: BinaryIO, name: str, max_values: int = MAX_FRAME_VALUES
) -> Iterator[tuple[str, str, object, bool]]:
    """Yield ``(capture, frame, value, has_bool)`` for a ``{capture: {frame: value}}`` document.

    Only the current frame's value is ever built as Python objects, and at most ``max_values``
    parser events of it. The builder is inlined (a stack of the open containers) because it handles
    every number of a multi-GB file: this is ~1.5x faster than ``ijson.ObjectBuilder``.
    ``has_bool`` says whether the frame holds a JSON ``true``/``false`` anywhere: numpy turns
    ``true`` into 1.0 without complaint, so callers check booleans only in frames that have one.
    """
    depth, capture, frame = 0, None, None  # depth: open maps above the frame level
    stack: list = []  # open containers of the current frame's value
    key = None  # last map key inside the frame's value (each map value directly follows its key)
    n_values, has_bool = 0, False
    try:
        for event, value in ijson.basic_parse(fh, use_float=True):
            if stack:
                n_values += 1  # every event counts: 20M empty lists are as oversized as 20M numbers
                if n_values > max_values:
                    raise InterHandFormatError(
                        f"{name}: capture {capture!r} frame {frame!r} holds more than {max_values} values "
                        "(an oversized record)"
                    )
                if event == "number" or event == "string" or event == "boolean" or event == "null":
                    if event == "boolean":
                        has_bool = True
                    top = stack[-1]
                    if top.__class__ is list:
                        top.append(value)
                    else:
                        top[key] = value
                elif event == "map_key":
                    key = value
                elif event == "start_array" or event == "start_map":
                    new: list | dict = [] if event == "start_array" else {}
                    top = stack[-1]
                    if top.__class__ is list:
                        top.append(new)
                    else:
                        top[key] = new
                    stack.append(new)
                else:  # end_array / end_map
                    done = stack.pop()
                    if not stack:
                        yield capture, frame, done, has_bool
                        n_values, has_bool = 0, False
            elif event == "map_key":
                if depth == 1:
                    capture, frame = value, None
                else:
                    frame = value
            elif event == "start_map" and depth < 2:
                depth += 1
            elif event == "end_map":
                depth -= 1
            elif depth == 2:  # a frame's value starts
                if event == "start_map" or event == "start_array":
                    stack.append([] if event == "start_array" else {})
                else:
                    yield capture, frame, value, event == "boolean"
            elif depth == 0:
                raise InterHandFormatError(f"{name}: the top level must be an object of captures, found {event}")
            else:
                raise InterHandFormatError(
                    f"{name}: capture {capture!r} must be an object of frames, found {event} {value!r}"
                )
    except ijson.JSONError as exc:
        raise InterHandFormatError(
            f"{name}: invalid or truncated JSON after capture {capture!r} frame {frame!r}: {exc}"
        ) from exc


def _iter_captures(fh: BinaryIO, name: str) -> Iterator[tuple[str, object]]:
    """Yield ``(capture, value)`` for a ``{capture: value}`` document (small values only)."""
    capture = None
    try:
        for capture, value in ijson.kvitems(fh, "", use_float=True):
            yield capture, value
    except ijson.JSONError as exc:
        raise InterHandFormatError(f"{name}: invalid or truncated JSON after capture {capture!r}: {exc}") from exc


# ---- numeric blocks ----------------------------------------------------------------------


def _row_problem(value: object, shape: tuple[int, ...], kinds: str) -> str | None:
    """Why one JSON value is not a numeric array of ``shape`` with dtype kind in ``kinds``."""
    if not isinstance(value, list):
        return f"expected a list of shape {shape}, got {type(value).__name__} {value!r}"
    try:
        arr = np.array(value)
    except ValueError:
        return f"is ragged, expected shape {shape}"
    if "b" not in kinds and arr.dtype.kind in "fi":  # numpy reads true as 1.0: look for booleans
        for i, v in enumerate(np.array(value, dtype=object).ravel()):
            if isinstance(v, bool):
                return f"value {v!r} at flat index {i} is a boolean, not a number"
    if arr.dtype.kind in kinds:
        if arr.shape == shape:
            return None
        if len(shape) == 1 and arr.ndim == 1:
            return f"has {arr.size} values, expected {shape[0]}"
        return f"has shape {arr.shape}, expected {shape}"
    for i, v in enumerate(np.array(value, dtype=object).ravel()):  # the parser's own objects
        if not isinstance(v, (int, float)) or (isinstance(v, bool) and "b" not in kinds):
            return f"value {v!r} at flat index {i} is not a number"
    return f"has shape {arr.shape}, expected {shape}"


class _RowBlocks:
    """Accumulates per-frame JSON arrays into typed numpy blocks, ``chunk_rows`` at a time.

    Pending rows stay as the parser's lists only until the chunk is full; then one
    ``np.array`` call converts and checks the whole chunk, and only if that fails are the rows
    inspected one by one to name the offending frame.
    """

    def __init__(self, name: str, columns: dict[str, tuple[tuple[int, ...], str, np.dtype, str]], chunk_rows: int):
        self.name = name
        self.columns = columns  # key -> (shape, label for messages, dtype, accepted numpy kinds)
        self.chunk_rows = chunk_rows
        self.pending: dict[str, list] = {k: [] for k in columns}
        self.refs: list[tuple[str, str]] = []
        self.blocks: dict[str, list[np.ndarray]] = {k: [] for k in columns}
        self.key_blocks: list[np.ndarray] = []  # (n, 2) str: capture, frame of the stored rows

    def add(self, ref: tuple[str, str], values: dict[str, object]) -> None:
        for key, value in values.items():
            self.pending[key].append(value)
        self.refs.append(ref)
        if len(self.refs) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        n = len(self.refs)
        if n == 0:
            return
        for key, (shape, label, dtype, kinds) in self.columns.items():
            rows = self.pending[key]
            try:
                arr = np.array(rows)
                ok = arr.shape == (n, *shape) and arr.dtype.kind in kinds
            except ValueError:
                ok = False
            if not ok:
                self._raise_first_problem(rows, shape, label, kinds)
            self.blocks[key].append(arr.astype(dtype))
            rows.clear()
        self.key_blocks.append(np.array(self.refs, dtype=str).reshape(n, 2))
        self.refs.clear()

    def _raise_first_problem(self, rows: list, shape: tuple[int, ...], label: str, kinds: str) -> None:
        for (capture, frame), value in zip(self.refs, rows, strict=True):
            problem = _row_problem(value, shape, kinds)
            if problem is not None:
                raise InterHandFormatError(f"{self.name}: capture {capture!r} frame {frame!r} {label} {problem}")
        raise InterHandFormatError(f"{self.name}: {label} values do not form arrays of shape {shape}")

    def finish(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """All rows: ``({key: (N, *shape)}, captures (N,), frames (N,))``."""
        self.flush()
        arrays = {
            key: np.concatenate(blocks) if blocks else np.zeros((0, *self.columns[key][0]), self.columns[key][2])
            for key, blocks in self.blocks.items()
        }
        keys = np.concatenate(self.key_blocks) if self.key_blocks else np.zeros((0, 2), dtype=str)
        return arrays, keys[:, 0], keys[:, 1]


# ---- MANO parameters ---------------------------------------------------------------------


def load_interhand_mano(
    source: Source,
    split_name: str = "train",
    *,
    name: str | None = None,
    stats: InterHandStats | None = None,
    chunk_rows: int = 8192,
) -> PoseTable:
    """Read ``InterHand2.6M_{split}_MANO_NeuralAnnot.json`` into a pose table of two-hand frames.

    Only frames where both hands have parameters are kept (RenderIH starts from interacting
    poses); frames with a null or absent hand are counted in ``stats`` (if given) and skipped.
    ``source`` is a path or a binary file object; ``name`` overrides the file name used in
    messages and ``source_ref`` (pass the object key for S3 bodies).
    """
    stats = stats if stats is not None else InterHandStats()
    columns = {
        f"{side}_{fld}": ((k,), f"hand {side!r} field {fld!r}", np.dtype(np.float32), "fi")
        for side in SIDES
        for fld, k in MANO_FIELDS.items()
    }
    with _opened(source, name) as (fh, where):
        blocks = _RowBlocks(where, columns, chunk_rows)
        for capture, frame, value, has_bool in _iter_frames(fh, where):
            stats.frames_read += 1
            if not isinstance(value, dict):
                raise InterHandFormatError(
                    f"{where}: capture {capture!r} frame {frame!r} must be an object with 'right' and 'left', "
                    f"got {type(value).__name__}"
                )
            missing = [side for side in SIDES if value.get(side) is None]
            if missing:
                stats.frames_skipped += 1
                for side in missing:
                    stats.missing_hands[side] += 1
                continue
            row = {}
            for side in SIDES:
                hand = value[side]
                if not isinstance(hand, dict):
                    raise InterHandFormatError(
                        f"{where}: capture {capture!r} frame {frame!r} hand {side!r} must be an object or null, "
                        f"got {type(hand).__name__}"
                    )
                for fld in MANO_FIELDS:
                    if fld not in hand:
                        raise InterHandFormatError(
                            f"{where}: capture {capture!r} frame {frame!r} hand {side!r} field {fld!r} is missing"
                        )
                    if has_bool:
                        _refuse_booleans(hand[fld], f"{where}: capture {capture!r} frame {frame!r} hand {side!r} "
                                                    f"field {fld!r}")
                    row[f"{side}_{fld}"] = hand[fld]
            blocks.add((capture, frame), row)
            stats.frames_kept += 1
        arrays, captures, frames = blocks.finish()
    if stats.frames_kept == 0:
        raise InterHandFormatError(
            f"{where}: no frame has both hands ({stats.frames_read} frames read, {stats.frames_skipped} without "
            f"the right or left hand); RenderIH needs two-hand frames"
        )
    return _mano_table(arrays, captures, frames, split_name, where)


def _refuse_booleans(value: object, at: str) -> None:
    """Raise if a numeric field holds a JSON ``true``/``false`` (numpy would read it as 1.0 / 0.0)."""
    flat = np.array(value, dtype=object).ravel() if isinstance(value, list) else [value]
    for i, v in enumerate(flat):
        if isinstance(v, bool):
            raise InterHandFormatError(f"{at} value {v!r} at flat index {i} is a boolean, not a number")


def _escaped(keys: np.ndarray) -> np.ndarray:
    """:func:`escape_part` of each key, computed once per distinct key (1.4M frames, few captures)."""
    distinct, inverse = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
    return np.array([escape_part(k) for k in distinct], dtype=object)[inverse] if len(keys) else np.array([], object)


def _mano_table(
    arrays: dict[str, np.ndarray], captures: np.ndarray, frames: np.ndarray, split: str, where: str
) -> PoseTable:
    n = len(captures)
    # escaped, so a "/" or ";" inside a key cannot fake a boundary: capture "1/2" frame "3" and
    # capture "1" frame "2/3" keep distinct ids and references
    capture = pd.Series(_escaped(captures), dtype="string")
    frame = pd.Series(_escaped(frames), dtype="string")
    meta = pd.DataFrame(
        {
            "pose_id": f"ih26m/{escape_part(split)}/" + capture + "/" + frame,
            "source": pd.Series([SOURCE_NAME] * n, dtype="string"),
            "source_ref": "capture=" + capture + ";frame=" + frame + f";file={where}",  # the last field: may hold anything
            "seed": np.zeros(n, dtype=np.int64),
        }
    )
    hands = {
        side: {
            "global_orient": arrays[f"{side}_pose"][:, :3],  # (N, 3)
            "hand_pose": arrays[f"{side}_pose"][:, 3:],  # (N, 45)
            "betas": arrays[f"{side}_shape"],  # (N, 10)
            "transl": arrays[f"{side}_trans"],  # (N, 3)
        }
        for side in SIDES
    }
    table = from_hands(meta, hands)
    table.arrays = {k: np.ascontiguousarray(v) for k, v in table.arrays.items()}
    return table.validate(where)


# ---- cameras -----------------------------------------------------------------------------

#: Camera fields of ``camera.json`` and the shape of one camera's entry.
CAMERA_FIELDS: dict[str, tuple[int, ...]] = {"campos": (3,), "camrot": (3, 3), "focal": (2,), "princpt": (2,)}


def load_interhand_cameras(source: Source, *, name: str | None = None) -> dict[str, InterHandCameras]:
    """Read ``camera.json`` into ``{capture: InterHandCameras}``, converted to ``X_cam = R X + t`` (m).

    IH2.6M stores the camera centre ``campos`` (mm) and ``camrot``; in metres
    ``X_cam = camrot (X - campos / 1000)``, so ``R = camrot`` and ``t = -camrot @ campos / 1000``.
    """
    out: dict[str, InterHandCameras] = {}
    with _opened(source, name) as (fh, where):
        for capture, value in _iter_captures(fh, where):
            out[capture] = _capture_cameras(value, capture, where)
    return out


def _capture_cameras(value: object, capture: str, where: str) -> InterHandCameras:
    if not isinstance(value, dict):
        raise InterHandFormatError(f"{where}: capture {capture!r} must be an object, got {type(value).__name__}")
    for fld in CAMERA_FIELDS:
        if not isinstance(value.get(fld), dict):
            raise InterHandFormatError(f"{where}: capture {capture!r} field {fld!r} is missing or not an object")
    names = list(value["campos"])
    per_field: dict[str, np.ndarray] = {}
    for fld, shape in CAMERA_FIELDS.items():
        rows = []
        for cam in names:
            entry = value[fld].get(cam)
            problem = _row_problem(entry, shape, "fi") if cam in value[fld] else "is missing"
            if problem is not None:
                raise InterHandFormatError(f"{where}: capture {capture!r} camera {cam!r} field {fld!r} {problem}")
            rows.append(entry)
        per_field[fld] = np.array(rows, dtype=np.float64).reshape(len(names), *shape)
    n = len(names)
    K = np.zeros((n, 3, 3))  # (C, 3, 3)
    K[:, 0, 0], K[:, 1, 1] = per_field["focal"][:, 0], per_field["focal"][:, 1]
    K[:, :2, 2] = per_field["princpt"]
    K[:, 2, 2] = 1.0
    R = per_field["camrot"]  # (C, 3, 3)
    t = -np.einsum("cij,cj->ci", R, per_field["campos"]) / 1000.0  # (C, 3) metres
    return InterHandCameras(capture=capture, names=names, K=K, R=R, t=t)


# ---- 3D joints ---------------------------------------------------------------------------


def load_interhand_joints(source: Source, *, name: str | None = None, chunk_rows: int = 8192) -> InterHandJoints:
    """Read ``joint_3d.json``: world joints (mm, IH2.6M order), validity and hand type per frame."""
    columns = {
        "world_coord": ((NUM_JOINTS, 3), "field 'world_coord'", np.dtype(np.float32), "fi"),
        "joint_valid": ((NUM_JOINTS, 1), "field 'joint_valid'", np.dtype(bool), "fib"),
        "hand_type": ((), "field 'hand_type'", np.dtype(np.int8), "i"),
        "hand_type_valid": ((), "field 'hand_type_valid'", np.dtype(bool), "b"),
    }
    with _opened(source, name) as (fh, where):
        blocks = _RowBlocks(where, columns, chunk_rows)
        for capture, frame, value, has_bool in _iter_frames(fh, where):
            at = f"{where}: capture {capture!r} frame {frame!r}"
            if not isinstance(value, dict):
                raise InterHandFormatError(f"{at} must be an object, got {type(value).__name__}")
            for fld in columns:
                if fld not in value:
                    raise InterHandFormatError(f"{at} field {fld!r} is missing")
            if has_bool:
                _refuse_booleans(value["world_coord"], f"{at} field 'world_coord'")
            if value["hand_type"] not in HAND_TYPES:
                raise InterHandFormatError(
                    f"{at} field 'hand_type' is {value['hand_type']!r}, expected one of {HAND_TYPES}"
                )
            if value["hand_type_valid"] not in (0, 1):  # JSON true/false or 0/1
                raise InterHandFormatError(
                    f"{at} field 'hand_type_valid' is {value['hand_type_valid']!r}, expected a boolean"
                )
            row = dict(
                value, hand_type=HAND_TYPES.index(value["hand_type"]), hand_type_valid=bool(value["hand_type_valid"])
            )
            blocks.add((capture, frame), {fld: row[fld] for fld in columns})
        arrays, captures, frames = blocks.finish()
    return InterHandJoints(
        capture=captures,
        frame=frames,
        world_mm=arrays["world_coord"],
        valid=arrays["joint_valid"][..., 0],
        hand_type=np.array(HAND_TYPES)[arrays["hand_type"]],
        hand_type_valid=arrays["hand_type_valid"],
    )
