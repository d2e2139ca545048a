"""Pose augmentation: N copies of each distinct pose with finger bends and splays offset in range.

RenderIH augments each distinct InterHand2.6M pose 30 times. Each finger joint's bend and splay
get a uniform random offset chosen so that the new angle lies inside the augmentation ranges of
the reference implementation (below; at most 120 degrees of bend and 30 of splay per offset).
Twist, root rotation, shape and translation are kept. The ranges are wider than the anatomical
limits on purpose: augmented poses may break limits and interpenetrate, which the optimizer fixes.

Finger splay in these ranges counts positive toward the thumb (radial), the opposite of
:mod:`handsynth.joint_limits`; the thumb's splay (palmar abduction) has the same sign in both.
A current angle already outside a range is moved inside (the offset interval then starts at the
range boundary), so every augmented angle ends up inside its range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from handsynth import joint_limits
from handsynth.joint_limits import JOINT_NAMES, AnatomicalFrames
from handsynth.pose_table import PoseTable
from handsynth.seeds import seed_for

if TYPE_CHECKING:
    from handsynth.hand_model.model import HandModel

_MCP_BEND = (-25.0, 70.0)
#: Augmentation ranges in degrees (reference implementation), in joint_limits' sign convention
#: (finger splay already negated): joint -> (bend range or None, splay range or None).
AUGMENTATION_RANGES_DEG: dict[str, tuple[tuple[float, float] | None, tuple[float, float] | None]] = {
    "index_mcp": (_MCP_BEND, (-20.0, 6.0)), "middle_mcp": (_MCP_BEND, (-10.0, 10.0)),
    "ring_mcp": (_MCP_BEND, (-6.0, 15.0)), "pinky_mcp": (_MCP_BEND, (-6.0, 35.0)),
    "index_pip": ((-8.0, 110.0), None), "middle_pip": ((-8.0, 110.0), None),
    "ring_pip": ((-8.0, 110.0), None), "pinky_pip": ((-8.0, 110.0), None),
    "index_dip": ((-8.0, 90.0), None), "middle_dip": ((-8.0, 90.0), None),
    "ring_dip": ((-8.0, 90.0), None), "pinky_dip": ((-8.0, 90.0), None),
    "thumb_cmc": ((-20.0, 40.0), (-9.0, 80.0)), "thumb_mcp": ((-8.0, 50.0), None), "thumb_ip": ((-8.0, 90.0), None),
}
MAX_OFFSET_DEG = (120.0, 30.0)   # per offset: bend, splay
#: Slack for float round trips (axis-angle <-> Euler) when checking ranges.
RANGE_TOLERANCE_DEG = 1e-2


def _range_table() -> tuple[np.ndarray, np.ndarray]:
    """(15, 2, 2) lower/upper bounds and a (15, 2) mask of which (bend, splay) are augmented."""
    bounds = np.zeros((15, 2, 2))
    mask = np.zeros((15, 2), dtype=bool)
    for j, name in enumerate(JOINT_NAMES):
        for a, rng in enumerate(AUGMENTATION_RANGES_DEG[name]):
            if rng is not None:
                bounds[j, a] = rng
                mask[j, a] = True
    return bounds, mask


def augment_angles(angles_deg: np.ndarray, rng: np.random.Generator, n_aug: int) -> np.ndarray:
    """(15, 3) degrees of one pose -> (n_aug, 15, 3): bend/splay offset uniformly within range."""
    bounds, mask = _range_table()
    cur = angles_deg[:, :2]                                             # (15, 2)
    cap = np.array(MAX_OFFSET_DEG)
    lo_raw, hi_raw = bounds[..., 0] - cur, bounds[..., 1] - cur        # offsets landing in range
    lo, hi = np.maximum(lo_raw, -cap), np.minimum(hi_raw, cap)
    # so far outside that the cap cannot reach the range: step exactly onto its nearer bound
    empty = lo > hi
    lo = np.where(empty, np.where(lo_raw > 0, lo_raw, hi_raw), lo)
    hi = np.where(empty, lo, hi)
    offsets = rng.uniform(lo, hi, size=(n_aug, 15, 2)) * mask
    out = np.repeat(angles_deg[None], n_aug, axis=0)
    out[..., :2] += offsets
    return out


def augmentation_range_violation(angles_deg: np.ndarray) -> np.ndarray:
    """Degrees outside the augmentation ranges, (N, 15, 2) for (bend, splay); 0 where not augmented."""
    bounds, mask = _range_table()
    a = angles_deg[..., :2]
    return (np.maximum(bounds[..., 0] - a, 0) + np.maximum(a - bounds[..., 1], 0)) * mask


def right_equivalent_angles(model: "HandModel", table: PoseTable, side: str, frames: AnatomicalFrames) -> np.ndarray:
    """Anatomical angles (N, 15, 3) in degrees of one side's hands, left mirrored into right."""
    hand_pose = torch.as_tensor(table.hand(side)["hand_pose"], device=model.device)
    full = model.full_finger_pose(side, hand_pose).double()
    if side == "left":
        full = joint_limits.mirror_pose(full)
    angles = joint_limits.joint_angles(full, AnatomicalFrames(frames.frames.double()))
    return np.rad2deg(angles.cpu().numpy())


def _hand_pose_from_angles(model: "HandModel", side: str, angles_deg: np.ndarray, frames: AnatomicalFrames) -> np.ndarray:
    full = joint_limits.compose_pose(torch.as_tensor(np.deg2rad(angles_deg), dtype=torch.float64),
                                     AnatomicalFrames(frames.frames.double())).reshape(-1, 45)
    if side == "left":
        full = joint_limits.mirror_pose(full)
    return (full - model.hands_mean(side).double().cpu()).numpy().astype(np.float32)


def augment_pose_table(model: "HandModel", distinct: PoseTable, n_aug: int, shard: str) -> tuple[PoseTable, dict]:
    """RenderIH's augmentation step for one shard; returns the table and violation statistics.

    Row ``k`` of pose ``p`` draws from a generator seeded by ("augment", shard, p's id), so a
    re-run gives identical rows; each row records that seed and links to its distinct pose.
    """
    frames = AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    angles = {s: right_equivalent_angles(model, distinct, s, frames) for s in ("right", "left")}
    new_angles = {s: [] for s in angles}
    rows = []
    for i, pid in enumerate(distinct.pose_ids):
        seed = seed_for("augment", shard, str(pid))
        rng = np.random.default_rng(seed)
        for side in ("right", "left"):
            new_angles[side].append(augment_angles(angles[side][i], rng, n_aug))
        for k in range(n_aug):
            rows.append({"src": i, "aug_index": k, "seed": seed, "pose_id": f"{pid}/aug{k:02d}"})
    rows_df = pd.DataFrame(rows)
    src = rows_df["src"].to_numpy() if len(rows_df) else np.zeros(0, dtype=np.int64)
    out = distinct.take(src)
    out.meta["pose_id"] = rows_df["pose_id"].astype("string").to_numpy() if len(rows_df) else out.meta["pose_id"]
    out.meta["aug_index"] = rows_df["aug_index"].to_numpy(np.int64) if len(rows_df) else np.zeros(0, np.int64)
    out.meta["seed"] = rows_df["seed"].to_numpy(np.int64) if len(rows_df) else np.zeros(0, np.int64)
    arrays = {}
    all_angles = []
    for side in ("right", "left"):
        a = np.concatenate(new_angles[side]) if new_angles[side] else np.zeros((0, 15, 3))
        all_angles.append(a)
        arrays[f"{side}_hand_pose"] = _hand_pose_from_angles(model, side, a, frames) if len(a) else np.zeros((0, 45), np.float32)
    table = out.with_arrays(**arrays).validate(f"augmented poses ({shard})")
    return table, augmentation_report(model, table, frames)


def augmentation_report(model: "HandModel", table: PoseTable, frames: AnatomicalFrames | None = None) -> dict:
    """Anatomical-limit violation statistics (degrees) of a pose table, both hands."""
    frames = frames or AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    per_joint, per_pose = [], []
    for side in ("right", "left"):
        a = torch.as_tensor(np.deg2rad(right_equivalent_angles(model, table, side, frames)))
        v = joint_limits.limit_violation(a).amax(dim=-1).numpy()       # (N, 15)
        per_joint.append(v)
        per_pose.append(v.max(axis=1) if len(v) else np.zeros(0))
    worst = np.maximum(*per_pose) if len(table) else np.zeros(0)
    joint_max = np.maximum(*per_joint).max(axis=0) if len(table) else np.zeros(15)
    return {
        "per_pose_max_deg": worst,
        "max_violation_deg": {n: round(float(x), 2) for n, x in zip(JOINT_NAMES, joint_max)},
        "share_violating": float((worst > 0.1).mean()) if len(worst) else 0.0,
    }


def table_range_violation_deg(model: "HandModel", table: PoseTable) -> np.ndarray:
    """Largest augmentation-range violation per pose (N,), both hands, in degrees."""
    frames = AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    worst = [augmentation_range_violation(right_equivalent_angles(model, table, s, frames)).max(axis=(1, 2))
             for s in ("right", "left")]
    return np.maximum(*worst) if len(table) else np.zeros(0)
