"""Training on the data: a PyTorch ``Dataset`` over the pipeline's output, and WebDataset shards.

The dataset reads the pipeline's own layout — ``<prefix>/annotations/shard=*.parquet`` (one row
per image, see :mod:`handsynth.annotate`) and the PNGs they name — through a
:class:`handsynth.storage.Store` (``open_store("s3://renderih/renderih")``, a local folder or
``memory://name``), so the same code trains from a local copy of the bucket, a local store's
root or straight from S3 with the pipeline's defaults. No Dagster here.

WebDataset shards (:func:`webdataset_tar`) hold, per image, ``{key}.png`` (RGB),
``{key}.label.png``, ``{key}.depth.png`` and ``{key}.json`` (keypoints, camera, MANO); one tar
per pose shard, so a re-rendered shard replaces exactly one tar.

Units: 3D keypoints in millimetres (camera frame), 2D keypoints in pixels of the image (integer
coordinates = pixel centres with the renderer sampling pixel centres), ``t`` and MANO ``trans``
in metres, depth in millimetres (0 = background).
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from handsynth.annotate import sample_targets, stack
from handsynth.exports import DEFAULT_SPLITS, check_splits, split_of
from handsynth.render.raster import decode_png
from handsynth.storage import LocalStore, Store, open_store


#: What the dataset reads from: any store of the storage layer (a local folder, memory or S3).
Reader = Store
#: Older names, kept so that code written before the storage layer keeps working.
FolderReader = LocalStore
open_source = open_store


def load_annotation_tables(reader: Reader, prefix: str = "") -> pd.DataFrame:
    """Every shard's annotation table under ``<prefix>/annotations/``, concatenated in shard order."""
    folder = "/".join(p for p in (prefix, "annotations") if p) + "/"
    keys = [k for k in reader.list_keys(folder) if k.endswith(".parquet")]
    if not keys:
        raise FileNotFoundError(f"no annotation tables under {folder!r}")
    tables = []
    for key in keys:
        try:
            tables.append(pd.read_parquet(io.BytesIO(reader.get_bytes(key)), engine="pyarrow"))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ValueError(f"{key}: not a readable annotation table ({exc})") from exc
    return pd.concat(tables, ignore_index=True)


class RenderIHDataset(Dataset):
    """One item per rendered image: tensors ready for a two-hand pose estimator.

    Item keys: ``image`` float (3, H, W) in [0, 1]; ``keypoints2d`` (42, 2) px; ``keypoints3d``
    (42, 3) mm camera frame; ``visibility`` (42,); ``K`` (3, 3); ``R`` (3, 3); ``t`` (3,) m;
    ``mano_pose`` (2, 48), ``mano_shape`` (2, 10), ``mano_trans`` (2, 3) (right, left); with
    ``with_mask`` a ``mask`` (H, W) int64 of part labels (0 background, 1-16 right, 17-32 left,
    33/34 forearms, 35/36 sleeves: README "Label values");
    with ``with_depth`` a ``depth`` (H, W) float32 in mm. ``split`` keeps one of train/val/test
    (by distinct pose, the same assignment as the exports).
    """

    def __init__(self, reader: Reader, prefix: str = "", *, split: str | None = None,
                 splits: dict[str, float] | None = None, with_mask: bool = False, with_depth: bool = False) -> None:
        table = load_annotation_tables(reader, prefix)
        if split is not None:
            fractions = check_splits(splits or DEFAULT_SPLITS)
            keep = [split_of(d, fractions) == split for d in table["distinct_pose_id"].astype(str)]
            table = table[np.asarray(keep, dtype=bool)].reset_index(drop=True)
        self.reader, self.table = reader, table
        self.with_mask, self.with_depth = with_mask, with_depth
        n = len(table)
        self._arrays = {
            "keypoints2d": stack(table, "keypoints2d_px", (42, 2)) if n else np.zeros((0, 42, 2)),
            "keypoints3d": stack(table, "keypoints3d_cam_mm", (42, 3)) if n else np.zeros((0, 42, 3)),
            "visibility": stack(table, "visibility", (42,)) if n else np.zeros((0, 42)),
            "K": stack(table, "K", (3, 3)) if n else np.zeros((0, 3, 3)),
            "R": stack(table, "R", (3, 3)) if n else np.zeros((0, 3, 3)),
            "t": stack(table, "t", (3,)) if n else np.zeros((0, 3)),
        }
        for name, width in (("mano_pose", 48), ("shape", 10), ("trans", 3)):
            self._arrays[name if name == "mano_pose" else f"mano_{name}"] = (
                np.stack([stack(table, f"{s}_{name}", (width,)) for s in ("right", "left")], axis=1)
                if n else np.zeros((0, 2, width)))

    def __len__(self) -> int:
        return len(self.table)

    def _png(self, key: str) -> np.ndarray:
        try:
            return decode_png(self.reader.get_bytes(key))
        except Exception as exc:
            raise ValueError(f"{key}: cannot read the image ({exc})") from exc

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.table.iloc[i]
        rgb = self._png(str(row["rgb_key"]))
        item: dict[str, Any] = {"image": torch.from_numpy(np.array(rgb[..., :3])).permute(2, 0, 1).float() / 255.0,
                                "image_id": str(row["image_id"])}
        for name, arr in self._arrays.items():
            item[name] = torch.as_tensor(arr[i], dtype=torch.float32)
        if self.with_mask:
            item["mask"] = torch.from_numpy(self._png(str(row["label_key"])).astype(np.int64))
        if self.with_depth:
            item["depth"] = torch.from_numpy(self._png(str(row["depth_key"])).astype(np.float32))
        return item


def webdataset_tar(table: pd.DataFrame, read: Any) -> bytes:
    """A WebDataset tar of the rows of one shard: ``{key}.png``, ``.label.png``, ``.depth.png``, ``.json``.

    ``key`` is the image id with ``/`` and ``.`` replaced (WebDataset splits a member name at the
    first dot after the last slash). Member times are fixed, so equal input gives equal bytes.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for _, row in table.iterrows():
            key = str(row["image_id"]).replace("/", "_").replace(".", "_")
            members = {"png": read(str(row["rgb_key"])), "label.png": read(str(row["label_key"])),
                       "depth.png": read(str(row["depth_key"])),
                       "json": json.dumps(sample_targets(row), separators=(",", ":")).encode()}
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
