"""Per-image annotation rows: MANO parameters, 3D/2D keypoints, cameras, visibility, boxes, lineage.

One row per rendered image. Keypoints are in the project's 21-per-hand MANO order (right hand
first, then left); exporters convert to the InterHand2.6M or wrist-first orders. Millimetres for 3D
keypoints (as InterHand2.6M), pixels for 2D. Scalar camera columns (``fx``, ``fy``, ``cx``,
``cy``, ``r_orthonormality_error``) are duplicated from ``K`` / ``R`` so that table-level
expectations can check them without unpacking lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from handsynth.cameras import project

#: Scalar columns of the annotation table and their dtypes (list columns are documented below).
SCALAR_COLUMNS: dict[str, str] = {
    "image_id": "string", "pose_id": "string", "distinct_pose_id": "string", "source_ref": "string",
    "shard": "string", "view": "int64", "render_seed": "int64", "envmap": "string",
    # where the image's bytes are: its block tar and each member's data offset, size and sha256
    "tar_key": "string", **{f"{kind}_{c}": d for kind in ("rgb", "label", "depth")
                           for c, d in (("offset", "int64"), ("bytes", "int64"), ("sha256", "string"))},
    "width": "int64", "height": "int64", "fx": "float64", "fy": "float64", "cx": "float64", "cy": "float64",
    "r_orthonormality_error": "float64", "visible_keypoints": "int64",
    "bbox_x0": "float64", "bbox_y0": "float64", "bbox_x1": "float64", "bbox_y1": "float64",
    "hand_model": "string",
}
#: List columns: name -> length.
LIST_COLUMNS: dict[str, int] = {
    "K": 9, "R": 9, "t": 3,
    "right_mano_pose": 48, "right_shape": 10, "right_trans": 3,
    "left_mano_pose": 48, "left_shape": 10, "left_trans": 3,
    "keypoints3d_world_mm": 126, "keypoints3d_cam_mm": 126, "keypoints2d_px": 84, "visibility": 42,
}


@dataclass
class ImageRecord:
    """Everything known about one rendered image, before it becomes a table row."""

    image_id: str
    pose: dict[str, Any]          # pose_id, distinct_pose_id, source_ref, shard
    hands: dict[str, dict[str, np.ndarray]]  # side -> global_orient(3), hand_pose(45), betas(10), transl(3)
    keypoints_world: np.ndarray   # (2, 21, 3) metres, right then left, MANO order
    K: np.ndarray                 # (3, 3)
    R: np.ndarray                 # (3, 3) world -> camera
    t: np.ndarray                 # (3,) metres
    width: int
    height: int
    visibility: np.ndarray        # (2, 21) bool
    view: int
    render_seed: int
    envmap: str


def project_record(rec: ImageRecord) -> np.ndarray:
    """2D keypoints (42, 2) of a record, right hand first."""
    return project(rec.keypoints_world.reshape(42, 3), rec.K, rec.R, rec.t)


def annotation_row(rec: ImageRecord, hand_model_name: str) -> dict[str, Any]:
    """The table row of one image (see module docstring for units and orders), without its
    location columns (the block the image is stored in adds them)."""
    kp = rec.keypoints_world.reshape(42, 3)
    cam = kp @ rec.R.T + rec.t
    uv = project_record(rec)
    x0, y0 = uv.min(axis=0)
    x1, y1 = uv.max(axis=0)
    row: dict[str, Any] = {
        "image_id": rec.image_id, "pose_id": rec.pose["pose_id"], "distinct_pose_id": rec.pose["distinct_pose_id"],
        "source_ref": rec.pose["source_ref"], "shard": rec.pose["shard"], "view": rec.view,
        "render_seed": rec.render_seed, "envmap": rec.envmap,
        "width": rec.width, "height": rec.height,
        "fx": float(rec.K[0, 0]), "fy": float(rec.K[1, 1]), "cx": float(rec.K[0, 2]), "cy": float(rec.K[1, 2]),
        "r_orthonormality_error": float(np.abs(rec.R @ rec.R.T - np.eye(3)).max()),
        "visible_keypoints": int(rec.visibility.sum()),
        "bbox_x0": float(x0), "bbox_y0": float(y0), "bbox_x1": float(x1), "bbox_y1": float(y1),
        "hand_model": hand_model_name,
        "K": rec.K.reshape(9), "R": rec.R.reshape(9), "t": rec.t.reshape(3),
        "keypoints3d_world_mm": (kp * 1000.0).reshape(126), "keypoints3d_cam_mm": (cam * 1000.0).reshape(126),
        "keypoints2d_px": uv.reshape(84), "visibility": rec.visibility.reshape(42).astype(np.uint8),
    }
    for side in ("right", "left"):
        h = rec.hands[side]
        row[f"{side}_mano_pose"] = np.concatenate([h["global_orient"], h["hand_pose"]]).astype(np.float32)
        row[f"{side}_shape"] = np.asarray(h["betas"], np.float32)
        row[f"{side}_trans"] = np.asarray(h["transl"], np.float32)
    return row


def annotation_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the declared dtypes; list columns as float32/uint8 arrays."""
    if not rows:
        df = pd.DataFrame({c: pd.Series(dtype=d) for c, d in SCALAR_COLUMNS.items()})
        for c in LIST_COLUMNS:
            df[c] = pd.Series(dtype=object)
        return df
    df = pd.DataFrame(rows)
    return df.astype(SCALAR_COLUMNS)


def stack(df: pd.DataFrame, column: str, shape: tuple[int, ...]) -> np.ndarray:
    """A list column as one array (N, *shape)."""
    return np.stack([np.asarray(v) for v in df[column]]).reshape(len(df), *shape)


def sample_targets(row: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready labels of one annotation row: the ``.json`` member of an image's sample in its
    render block (a WebDataset sample), so a tar alone trains a model."""
    return {
        "image_id": str(row["image_id"]), "pose_id": str(row["pose_id"]),
        "distinct_pose_id": str(row["distinct_pose_id"]), "width": int(row["width"]), "height": int(row["height"]),
        "keypoints2d_px": np.asarray(row["keypoints2d_px"], np.float64).reshape(42, 2).tolist(),
        "keypoints3d_cam_mm": np.asarray(row["keypoints3d_cam_mm"], np.float64).reshape(42, 3).tolist(),
        "visibility": np.asarray(row["visibility"]).astype(int).tolist(),
        "K": np.asarray(row["K"], np.float64).reshape(3, 3).tolist(),
        "R": np.asarray(row["R"], np.float64).reshape(3, 3).tolist(),
        "t": np.asarray(row["t"], np.float64).tolist(),
        "mano": {side: {"pose": np.asarray(row[f"{side}_mano_pose"], np.float64).tolist(),
                        "shape": np.asarray(row[f"{side}_shape"], np.float64).tolist(),
                        "trans": np.asarray(row[f"{side}_trans"], np.float64).tolist()} for side in ("right", "left")},
        "keypoint_order": "per hand 21 MANO-order keypoints, right hand then left",
    }
