"""Two-hand pose tables: one row per pose, MANO parameters per hand, Parquet with a fixed schema.

Arrays are kept as dense ``(N, k)`` numpy blocks rather than per-row Python objects, because
the full InterHand2.6M holds about 1.4M interacting frames: a list-per-cell DataFrame of that size
costs gigabytes, dense float32 blocks cost ~700 MB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SIDES: tuple[str, str] = ("right", "left")

#: MANO parameter blocks per hand and their widths.
HAND_PARAMS: dict[str, int] = {"global_orient": 3, "hand_pose": 45, "betas": 10, "transl": 3}

#: Columns every pose table carries in ``meta``.
REQUIRED_META: dict[str, str] = {
    "pose_id": "string",
    "source": "string",
    "source_ref": "string",
    "seed": "int64",
}


def param_name(side: str, param: str) -> str:
    """Column name of one hand's parameter block, e.g. ``right_hand_pose``."""
    return f"{side}_{param}"


PARAM_COLUMNS: dict[str, int] = {
    param_name(s, p): k for s in SIDES for p, k in HAND_PARAMS.items()
}


class PoseTableError(ValueError):
    """A pose table failed validation; the message names the file, row and column."""


@dataclass
class PoseTable:
    """Poses of two hands. ``meta`` has one row per pose; ``arrays`` maps column -> (N, k)."""

    meta: pd.DataFrame
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meta = self.meta.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def pose_ids(self) -> np.ndarray:
        return self.meta["pose_id"].to_numpy()

    def hand(self, side: str) -> dict[str, np.ndarray]:
        """One hand's parameters as ``{global_orient, hand_pose, betas, transl}`` arrays."""
        return {p: self.arrays[param_name(side, p)] for p in HAND_PARAMS}

    def take(self, index: np.ndarray | Iterable[int]) -> "PoseTable":
        """Rows by integer position (a copy)."""
        idx = np.asarray(list(index) if not isinstance(index, np.ndarray) else index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return PoseTable(
            self.meta.iloc[idx].reset_index(drop=True).copy(),
            {k: np.ascontiguousarray(v[idx]) for k, v in self.arrays.items()},
        )

    def with_arrays(self, **arrays: np.ndarray) -> "PoseTable":
        """A copy with some arrays replaced or added."""
        new = dict(self.arrays)
        new.update({k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
        return PoseTable(self.meta.copy(), new)

    @staticmethod
    def concat(tables: Iterable["PoseTable"]) -> "PoseTable":
        tables = [t for t in tables]
        if not tables:
            raise PoseTableError("cannot concatenate zero pose tables")
        keys = list(tables[0].arrays)
        return PoseTable(
            pd.concat([t.meta for t in tables], ignore_index=True),
            {k: np.concatenate([t.arrays[k] for t in tables]) for k in keys},
        )

    def validate(self, where: str = "pose table") -> "PoseTable":
        """Check schema and values; raise :class:`PoseTableError` naming row and column."""
        validate(self, where)
        return self

    # ---- Parquet -----------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        cols: dict[str, pa.Array] = {}
        for name in self.meta.columns:
            cols[name] = pa.array(self.meta[name].to_numpy(), from_pandas=True)
        for name, arr in self.arrays.items():
            a = np.ascontiguousarray(arr, dtype=np.float32)
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
        return pa.table(cols)

    def to_parquet_bytes(self) -> bytes:
        buf = io.BytesIO()
        pq.write_table(self.to_arrow(), buf, compression="zstd")
        return buf.getvalue()

    @classmethod
    def from_arrow(cls, table: pa.Table, where: str = "pose table") -> "PoseTable":
        meta_cols, arrays = {}, {}
        ids = table.column("pose_id").to_pylist() if "pose_id" in table.column_names else None
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                arrays[name] = _list_column_to_array(col, name, ids, where)
            elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                meta_cols[name] = col.to_pandas().astype("string")  # one string dtype, as written
            else:
                meta_cols[name] = col.to_pandas()
        return cls(pd.DataFrame(meta_cols), arrays).validate(where)

    @classmethod
    def from_parquet_bytes(cls, data: bytes, where: str = "pose table") -> "PoseTable":
        try:
            table = pq.read_table(io.BytesIO(data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise PoseTableError(f"{where}: not a readable Parquet file ({exc})") from exc
        return cls.from_arrow(table, where)

    def write_parquet(self, path: str) -> None:
        with open(path, "wb") as fh:
            fh.write(self.to_parquet_bytes())

    @classmethod
    def read_parquet(cls, path: str) -> "PoseTable":
        with open(path, "rb") as fh:
            return cls.from_parquet_bytes(fh.read(), where=str(path))


def _list_column_to_array(col: pa.Array, name: str, ids: list | None, where: str) -> np.ndarray:
    expected = PARAM_COLUMNS.get(name)
    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise PoseTableError(f"{where}: row {_row_name(ids, row)} column {name!r} is null")
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        arr = flat.reshape(len(col), width)
    else:
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        nulls = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
        if len(nulls):
            raise PoseTableError(f"{where}: row {_row_name(ids, int(nulls[0]))} column {name!r} is null")
        width = expected if expected is not None else (int(lengths[0]) if len(lengths) else 0)
        bad = np.flatnonzero(lengths != width)
        if len(bad):
            r = int(bad[0])
            raise PoseTableError(
                f"{where}: row {_row_name(ids, r)} column {name!r} has {int(lengths[r])} values, expected {width}"
            )
        arr = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(col), width)
    return arr


def _row_name(ids: list | np.ndarray | None, row: int) -> str:
    if ids is None or row >= len(ids):
        return f"#{row}"
    return f"#{row} (pose_id={ids[row]!r})"


def validate(table: PoseTable, where: str = "pose table") -> None:
    """Raise :class:`PoseTableError` for missing columns, wrong widths, NaN/inf or duplicate ids."""
    meta = table.meta
    for col in REQUIRED_META:
        if col not in meta.columns:
            raise PoseTableError(f"{where}: missing column {col!r}")
    ids = meta["pose_id"].to_numpy()
    dup = pd.Index(ids).duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        raise PoseTableError(f"{where}: row {_row_name(ids, r)} column 'pose_id' repeats an earlier id")
    for name, width in PARAM_COLUMNS.items():
        if name not in table.arrays:
            raise PoseTableError(f"{where}: missing column {name!r}")
    for name, arr in table.arrays.items():
        width = PARAM_COLUMNS.get(name)
        if arr.ndim != 2 or arr.shape[0] != len(meta) or (width is not None and arr.shape[1] != width):
            raise PoseTableError(
                f"{where}: column {name!r} has shape {arr.shape}, expected ({len(meta)}, {width or 'k'})"
            )
        finite = np.isfinite(arr)
        if not finite.all():
            r, c = (int(x) for x in np.argwhere(~finite)[0])
            raise PoseTableError(
                f"{where}: row {_row_name(ids, r)} column {name!r}[{c}] is {arr[r, c]} (not finite)"
            )


def from_hands(meta: pd.DataFrame, hands: Mapping[str, Mapping[str, np.ndarray]]) -> PoseTable:
    """Build a table from ``{side: {param: (N,k)}}`` blocks."""
    arrays = {
        param_name(side, p): np.asarray(hands[side][p], dtype=np.float32).reshape(len(meta), k)
        for side in SIDES
        for p, k in HAND_PARAMS.items()
    }
    return PoseTable(meta, arrays)


def empty_meta(n: int = 0) -> pd.DataFrame:
    """A meta frame with the required columns and dtypes."""
    return pd.DataFrame(
        {
            "pose_id": pd.Series([""] * n, dtype="string"),
            "source": pd.Series([""] * n, dtype="string"),
            "source_ref": pd.Series([""] * n, dtype="string"),
            "seed": pd.Series(np.zeros(n, dtype=np.int64)),
        }
    )
