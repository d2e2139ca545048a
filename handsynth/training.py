"""Training on the data: a PyTorch ``Dataset`` over the pipeline's output.

The dataset reads the pipeline's own layout — ``<prefix>/annotations/shard=*.parquet`` (one row
per image, see :mod:`handsynth.annotate`) and the render blocks those rows point into — through
a :class:`handsynth.storage.Store` (``open_store("s3://renderih/renderih")``, a local folder or
``memory://name``), so the same code trains from a local copy of the bucket, a local store's
root or straight from S3 with the pipeline's defaults. No Dagster here.

Bounded memory at any size: the annotation tables are read in batches of rows (only the
columns an item needs) into an index of fixed-size NumPy records (:data:`INDEX_DTYPE`, about
1.7 kB per image) written to a file with plain writes, then memory-mapped read-only. Resident
memory before the first item is one batch of rows, not the dataset; DataLoader workers (forked
or spawned) map the same file, so they share its pages through the page cache instead of each
touching — and so copying — a pandas frame. Images are one ranged read of their block's tar
each (:func:`handsynth.render.blocks.read_member`, checked against the recorded sha256).

The render blocks themselves are WebDataset shards (one tar per distinct pose, see
:mod:`handsynth.render.blocks`), for training code that prefers sequential tar streaming.

Units: 3D keypoints in millimetres (camera frame), 2D keypoints in pixels of the image (integer
coordinates = pixel centres with the renderer sampling pixel centres), ``t`` and MANO ``trans``
in metres, depth in millimetres (0 = background).
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from handsynth.annotate import stack
from handsynth.exports import DEFAULT_SPLITS, check_splits, split_of
from handsynth.render.blocks import MEMBER_SUFFIX, read_member
from handsynth.storage import Store

#: Per-image arrays of an item: name -> (annotation column(s), shape).
_ARRAYS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "keypoints2d": (("keypoints2d_px",), (42, 2)), "keypoints3d": (("keypoints3d_cam_mm",), (42, 3)),
    "visibility": (("visibility",), (42,)), "K": (("K",), (3, 3)), "R": (("R",), (3, 3)), "t": (("t",), (3,)),
    "mano_pose": (("right_mano_pose", "left_mano_pose"), (2, 48)),
    "mano_shape": (("right_shape", "left_shape"), (2, 10)),
    "mano_trans": (("right_trans", "left_trans"), (2, 3)),
}
#: One image's index record: its arrays (float32, as the items are), where its image id is in the
#: ids file, and where its images are (block tar number, each member's offset, size, sha256).
INDEX_DTYPE = np.dtype(
    [(name, "<f4", shape) for name, (_, shape) in _ARRAYS.items()]
    + [("id_start", "<i8"), ("id_length", "<i4"), ("tar", "<i4")]
    + [(f"{kind}_{c}", t) for kind in MEMBER_SUFFIX for c, t in (("offset", "<i8"), ("bytes", "<i8"), ("sha256", "V32"))]
)
#: Annotation columns the index is built from (and the only ones read).
INDEX_COLUMNS: tuple[str, ...] = (
    "image_id", "distinct_pose_id", "tar_key", *(c for cols, _ in _ARRAYS.values() for c in cols),
    *(f"{kind}_{c}" for kind in MEMBER_SUFFIX for c in ("offset", "bytes", "sha256")),
)


def annotation_keys(store: Store, prefix: str = "") -> list[str]:
    """The keys of every shard's annotation table under ``<prefix>/annotations/``, in shard order."""
    folder = "/".join(p for p in (prefix, "annotations") if p) + "/"
    keys = [k for k in store.list_keys(folder) if k.endswith(".parquet")]
    if not keys:
        raise FileNotFoundError(f"{store.uri(folder)}: no annotation tables there")
    return keys


def annotation_row_groups(store: Store, key: str) -> list[int]:
    """The rows of each Parquet row group of a stored annotation table (its footer: a ranged read)."""
    import pyarrow.parquet as pq

    try:
        with store.open(key, "rb") as stream:
            meta = pq.ParquetFile(stream).metadata
            return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{store.uri(key)}: not a readable annotation table ({exc})") from exc


#: Rows per batch when annotation tables are streamed (memory: one batch, whatever the shard size).
BATCH_ROWS = 2048


def iter_annotation_batches(store: Store, key: str, columns: list[str] | None = None,
                            rows: int = BATCH_ROWS, row_groups: list[int] | None = None) -> Iterator[pd.DataFrame]:
    """One stored annotation table (or only its ``row_groups``) in batches of ``rows`` rows, read
    by ranges (Parquet row groups and columns), with the same dtypes as the whole table; a damaged
    file is a ``ValueError`` naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with store.open(key, "rb") as stream:
        try:
            batches = pq.ParquetFile(stream).iter_batches(batch_size=rows, columns=columns, row_groups=row_groups)
            for batch in batches:
                yield pa.Table.from_batches([batch]).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{store.uri(key)}: not a readable annotation table ({exc})") from exc


def iter_annotation_tables(store: Store, prefix: str = "", columns: list[str] | None = None,
                           rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """Every shard's annotation table in order, as batches of at most ``rows`` rows (memory:
    one batch; a pose's views may span two batches)."""
    for key in annotation_keys(store, prefix):
        yield from iter_annotation_batches(store, key, columns, rows)


def _index_records(table: pd.DataFrame, id_start: int, tar_numbers: dict[str, int]) -> tuple[np.ndarray, bytes]:
    """One table's index records and the UTF-8 bytes of its image ids (concatenated)."""
    n = len(table)
    records = np.zeros(n, INDEX_DTYPE)
    if n == 0:  # e.g. no distinct pose of this shard falls in the split
        return records, b""
    for name, (columns, shape) in _ARRAYS.items():
        if len(columns) == 1:
            records[name] = stack(table, columns[0], shape)
        else:
            records[name] = np.stack([stack(table, c, shape[1:]) for c in columns], axis=1)
    ids = [str(i).encode() for i in table["image_id"]]
    lengths = np.fromiter((len(b) for b in ids), np.int64, n)
    records["id_length"] = lengths
    records["id_start"] = id_start + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    records["tar"] = [tar_numbers.setdefault(str(k), len(tar_numbers)) for k in table["tar_key"]]
    for kind in MEMBER_SUFFIX:
        records[f"{kind}_offset"] = table[f"{kind}_offset"].to_numpy(np.int64)
        records[f"{kind}_bytes"] = table[f"{kind}_bytes"].to_numpy(np.int64)
        records[f"{kind}_sha256"] = [bytes.fromhex(str(h)) for h in table[f"{kind}_sha256"]]
    return records, b"".join(ids)


class RenderIHDataset(Dataset):
    """One item per rendered image: tensors ready for a two-hand pose estimator.

    Item keys: ``image`` float (3, H, W) in [0, 1]; ``image_id``; ``keypoints2d`` (42, 2) px;
    ``keypoints3d`` (42, 3) mm camera frame; ``visibility`` (42,); ``K`` (3, 3); ``R`` (3, 3);
    ``t`` (3,) m; ``mano_pose`` (2, 48), ``mano_shape`` (2, 10), ``mano_trans`` (2, 3) (right,
    left); with ``with_mask`` a ``mask`` (H, W) int64 of part labels (0 background, 1-16 right,
    17-32 left, 33/34 forearms, 35/36 sleeves: README "Label values"); with ``with_depth`` a
    ``depth`` (H, W) float32 in mm. ``split`` keeps one of train/val/test (by distinct pose, the
    same assignment as the exports).

    ``index_dir``: where the index files go (default: a temporary folder); they are removed when
    the dataset that built them is garbage-collected.
    """

    def __init__(self, store: Store, prefix: str = "", *, split: str | None = None,
                 splits: dict[str, float] | None = None, with_mask: bool = False, with_depth: bool = False,
                 index_dir: str | os.PathLike[str] | None = None) -> None:
        self.store, self.with_mask, self.with_depth = store, with_mask, with_depth
        fractions = check_splits(splits or DEFAULT_SPLITS) if split is not None else None
        folder = Path(tempfile.mkdtemp(prefix="renderih-index-", dir=index_dir))
        self._records_path, self._ids_path = folder / "records.bin", folder / "ids.bin"
        tar_numbers: dict[str, int] = {}
        n = id_bytes = 0
        with open(self._records_path, "wb") as records_out, open(self._ids_path, "wb") as ids_out:
            for table in iter_annotation_tables(store, prefix, list(INDEX_COLUMNS)):  # batch by batch
                if fractions is not None and len(table):
                    splits_of = {d: split_of(d, fractions) for d in table["distinct_pose_id"].astype(str).unique()}
                    table = table[table["distinct_pose_id"].astype(str).map(splits_of).to_numpy() == split]
                records, ids = _index_records(table, id_bytes, tar_numbers)
                records_out.write(records.tobytes())  # plain writes: nothing of the index stays resident
                ids_out.write(ids)
                n, id_bytes = n + len(records), id_bytes + len(ids)
        self._tar_keys = np.array(sorted(tar_numbers, key=tar_numbers.__getitem__), dtype=object)
        self._n = n
        self._finalizer = weakref.finalize(self, _remove_index, folder, os.getpid())
        self._open_maps()

    def _open_maps(self) -> None:
        self._records = (np.memmap(self._records_path, INDEX_DTYPE, mode="r", shape=(self._n,)) if self._n
                         else np.zeros(0, INDEX_DTYPE))
        size = self._ids_path.stat().st_size
        self._ids = np.memmap(self._ids_path, np.uint8, mode="r", shape=(size,)) if size else np.zeros(0, np.uint8)

    def __getstate__(self) -> dict[str, Any]:
        """For spawned DataLoader workers: the file paths, not the mapped pages (each worker maps
        the same files). Only the building process removes them."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_records", "_ids", "_finalizer")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_maps()

    def __len__(self) -> int:
        return self._n

    def image_id(self, i: int) -> str:
        record = self._records[i]
        start = int(record["id_start"])
        return self._ids[start:start + int(record["id_length"])].tobytes().decode()

    def location(self, i: int) -> dict[str, Any]:
        """Image ``i``'s location columns (``tar_key``, member offsets, sizes, sha256) as in its
        annotation row, for :func:`handsynth.render.blocks.read_member`."""
        record = self._records[i]
        row: dict[str, Any] = {"tar_key": self._tar_keys[int(record["tar"])], "image_id": self.image_id(i)}
        for kind in MEMBER_SUFFIX:
            row[f"{kind}_offset"], row[f"{kind}_bytes"] = int(record[f"{kind}_offset"]), int(record[f"{kind}_bytes"])
            row[f"{kind}_sha256"] = bytes(record[f"{kind}_sha256"]).hex()
        return row

    def _png(self, row: dict[str, Any], kind: str) -> np.ndarray:
        from handsynth.render.raster import decode_png

        return decode_png(read_member(self.store, row, kind))

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self._n:
            raise IndexError(f"image {i} of {self._n}")
        row = self.location(i)
        rgb = self._png(row, "rgb")
        item: dict[str, Any] = {"image": torch.from_numpy(np.array(rgb[..., :3])).permute(2, 0, 1).float() / 255.0,
                                "image_id": row["image_id"]}
        record = self._records[i]
        for name in _ARRAYS:
            item[name] = torch.from_numpy(np.array(record[name], dtype=np.float32))
        if self.with_mask:
            item["mask"] = torch.from_numpy(self._png(row, "label").astype(np.int64))
        if self.with_depth:
            item["depth"] = torch.from_numpy(self._png(row, "depth").astype(np.float32))
        return item


def _remove_index(folder: Path, builder: int) -> None:
    """Remove the index files, in the process that built them only (forked workers inherit the
    finalizer, and must not delete what the others still map)."""
    if os.getpid() != builder:
        return
    for name in ("records.bin", "ids.bin"):
        (folder / name).unlink(missing_ok=True)
    folder.rmdir()
