"""Pose augmentation: N copies of each distinct pose, moved along natural finger synergies.

RenderIH augments each distinct InterHand2.6M pose 30 times by offsetting every finger joint's
bend and splay independently, uniformly within ranges. That breaks the coupling of real fingers
(the distal joint bends with the middle one; neighbouring fingers curl together): after it, 40% of
the demo's fingers were more than 20 degrees off DIP = 2/3 PIP, the claw-like fingers of the
contact sheets. Here each copy's offset is drawn from the covariance of natural poses
(:class:`handsynth.synergies.SynergyBasis`: MANO's PCA space for real MANO, the gesture library for
the stand-in), so it keeps the coupling, moves neighbouring fingers together, and carries the few
degrees of twist and splay real hands have. Root rotation, shape and translation are kept.

Every augmented angle lies inside the augmentation ranges below: the reference implementation's
bend and splay ranges (wider than the anatomical limits on purpose: the optimizer fixes what
breaks them), and the anatomical limits for the other axes. An offset that would leave a range
is shortened, per finger (a finger's three joints together, so their coupling survives), to the
longest fraction of it that stays inside (see :func:`augment_angles`); a current angle already
outside a range is first moved onto the range. Finger splay in the reference ranges counts positive toward
the thumb (radial), the opposite of :mod:`handsynth.joint_limits`; they are written here in
joint_limits' convention.

Seeds: copy ``k`` of distinct pose ``p`` draws from ``seed_for("augment", settings seed, p, k)``:
stable ids only, never the shard or a row position, so adding input poses changes no existing copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from handsynth import joint_limits, synergies
from handsynth.joint_limits import JOINT_LIMITS, JOINT_NAMES, AnatomicalFrames
from handsynth.pose_table import PoseTable
from handsynth.seeds import seed_for
from handsynth.synergies import SynergyBasis

if TYPE_CHECKING:
    from handsynth.hand_model.model import HandModel

_MCP_BEND = (-25.0, 70.0)
#: Reference implementation's ranges in degrees, in joint_limits' sign convention (finger splay
#: already negated): joint -> (bend range, splay range or None). None: the anatomical limits.
REFERENCE_RANGES_DEG: dict[str, tuple[tuple[float, float], tuple[float, float] | None]] = {
    "index_mcp": (_MCP_BEND, (-20.0, 6.0)), "middle_mcp": (_MCP_BEND, (-10.0, 10.0)),
    "ring_mcp": (_MCP_BEND, (-6.0, 15.0)), "pinky_mcp": (_MCP_BEND, (-6.0, 35.0)),
    "index_pip": ((-8.0, 110.0), None), "middle_pip": ((-8.0, 110.0), None),
    "ring_pip": ((-8.0, 110.0), None), "pinky_pip": ((-8.0, 110.0), None),
    "index_dip": ((-8.0, 90.0), None), "middle_dip": ((-8.0, 90.0), None),
    "ring_dip": ((-8.0, 90.0), None), "pinky_dip": ((-8.0, 90.0), None),
    "thumb_cmc": ((-20.0, 40.0), (-9.0, 80.0)), "thumb_mcp": ((-8.0, 50.0), None), "thumb_ip": ((-8.0, 90.0), None),
}
#: Slack for float round trips (axis-angle <-> Euler) when checking ranges.
RANGE_TOLERANCE_DEG = 1e-2


def range_table() -> np.ndarray:
    """(15, 3, 2) lower/upper bounds (degrees) of every augmented angle: the reference ranges for
    bend and splay where it gives them, the anatomical limits elsewhere."""
    bounds = np.array(JOINT_LIMITS, dtype=np.float64)
    for j, name in enumerate(JOINT_NAMES):
        bend, splay = REFERENCE_RANGES_DEG[name]
        bounds[j, 0] = bend
        if splay is not None:
            bounds[j, 1] = splay
    return bounds


def _fraction_inside(start: np.ndarray, offset: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Largest t in [0, 1] per leading index with start + t * offset inside [lo, hi] on all of the
    last two axes (start inside)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(offset > 0, (hi - start) / offset, np.where(offset < 0, (lo - start) / offset, np.inf))
    return np.clip(t.min(axis=(-1, -2)), 0.0, 1.0)


def augment_angles(angles_deg: np.ndarray, offsets_deg: np.ndarray) -> np.ndarray:
    """(15, 3) degrees of one pose and (n, 15, 3) synergy offsets -> (n, 15, 3) augmented angles.

    The pose is first moved into the ranges. Each copy then takes its offset or the opposite one
    (equally likely under the Gaussian): whichever its fingers can follow further in total, so
    that neighbouring fingers keep moving the same way; each finger (and the thumb) follows it by
    the largest fraction that stays inside the ranges.
    """
    bounds = range_table()
    lo, hi = bounds[..., 0], bounds[..., 1]
    start = np.clip(angles_deg, lo, hi)
    groups = [list(rows) for rows in synergies.FINGER_GROUPS]
    forward = np.stack([_fraction_inside(start[r], offsets_deg[:, r], lo[r], hi[r]) for r in groups], axis=1)
    backward = np.stack([_fraction_inside(start[r], -offsets_deg[:, r], lo[r], hi[r]) for r in groups], axis=1)
    step = np.where((backward.sum(1) > forward.sum(1))[:, None], -backward, forward)      # (n, groups)
    out = np.repeat(start[None], len(offsets_deg), axis=0)
    for g, r in enumerate(groups):
        out[:, r] = start[r] + step[:, g, None, None] * offsets_deg[:, r]
    return np.clip(out, lo, hi)      # float round-off only


def augmentation_range_violation(angles_deg: np.ndarray) -> np.ndarray:
    """Degrees outside the augmentation ranges, (N, 15, 3)."""
    bounds = range_table()
    return np.maximum(bounds[..., 0] - angles_deg, 0) + np.maximum(angles_deg - bounds[..., 1], 0)


def right_equivalent_angles(model: "HandModel", table: PoseTable, side: str, frames: AnatomicalFrames) -> np.ndarray:
    """Anatomical angles (N, 15, 3) in degrees of one side's hands, left mirrored into right."""
    hand_pose = torch.as_tensor(table.hand(side)["hand_pose"], device=model.device)
    full = model.full_finger_pose(side, hand_pose).double()
    if side == "left":
        full = joint_limits.mirror_pose(full)
    angles = joint_limits.joint_angles(full, AnatomicalFrames(frames.frames.double()))
    return np.rad2deg(angles.cpu().numpy())


def augment_pose_table(model: "HandModel", distinct: PoseTable, n_aug: int, seed: int,
                       basis: SynergyBasis | None = None) -> tuple[PoseTable, dict]:
    """RenderIH's augmentation step for a set of distinct poses; returns the table and statistics.

    Copy ``k`` of pose ``p`` draws both hands' offsets from ``seed_for("augment", seed, p, k)``
    (recorded per row), so a copy depends on its pose alone, not on its batch or shard.
    """
    basis = basis or synergies.basis_for(model)
    frames = AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    angles = {s: right_equivalent_angles(model, distinct, s, frames) for s in ("right", "left")}
    new_angles = {s: [] for s in angles}
    rows = []
    for i, pid in enumerate(distinct.pose_ids):
        for k in range(n_aug):
            row_seed = seed_for("augment", seed, str(pid), k)
            rng = np.random.default_rng(row_seed)
            for side in ("right", "left"):
                new_angles[side].append(augment_angles(angles[side][i], basis.offsets(rng, 1)))
            rows.append({"src": i, "aug_index": k, "seed": row_seed, "pose_id": f"{pid}/aug{k:02d}"})
    rows_df = pd.DataFrame(rows, columns=["src", "aug_index", "seed", "pose_id"])
    out = distinct.take(rows_df["src"].to_numpy(np.int64))
    out.meta["pose_id"] = rows_df["pose_id"].astype("string").to_numpy()
    out.meta["aug_index"] = rows_df["aug_index"].to_numpy(np.int64)
    out.meta["seed"] = rows_df["seed"].to_numpy(np.int64)
    arrays = {}
    for side in ("right", "left"):
        a = np.concatenate(new_angles[side]) if new_angles[side] else np.zeros((0, 15, 3))
        arrays[f"{side}_hand_pose"] = joint_limits.hand_pose_from_angles(model, side, a, frames)
    table = out.with_arrays(**arrays).validate(f"augmented poses ({len(distinct)} distinct)")
    report = augmentation_report(model, table, frames)
    report["coupling_source"] = synergies.coupling_stats(np.concatenate(list(angles.values())))
    report["synergy_basis"] = basis.source
    return table, report


def augmentation_report(model: "HandModel", table: PoseTable, frames: AnatomicalFrames | None = None) -> dict:
    """Anatomical-limit violation statistics (degrees) and finger coupling of a pose table, both hands."""
    frames = frames or AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    angles = {s: right_equivalent_angles(model, table, s, frames) for s in ("right", "left")}
    per_joint, per_pose = [], []
    for a in angles.values():
        v = joint_limits.limit_violation(torch.as_tensor(np.deg2rad(a))).amax(dim=-1).numpy()       # (N, 15)
        per_joint.append(v)
        per_pose.append(v.max(axis=1) if len(v) else np.zeros(0))
    worst = np.maximum(*per_pose) if len(table) else np.zeros(0)
    joint_max = np.maximum(*per_joint).max(axis=0) if len(table) else np.zeros(15)
    both = np.concatenate(list(angles.values()))
    return {
        "per_pose_max_deg": worst,
        "max_violation_deg": {n: round(float(x), 2) for n, x in zip(JOINT_NAMES, joint_max)},
        "share_violating": float((worst > 0.1).mean()) if len(worst) else 0.0,
        "coupling": synergies.coupling_stats(both),
    }


def table_range_violation_deg(model: "HandModel", table: PoseTable) -> np.ndarray:
    """Largest augmentation-range violation per pose (N,), both hands, in degrees."""
    frames = AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    worst = [augmentation_range_violation(right_equivalent_angles(model, table, s, frames)).max(axis=(1, 2), initial=0.0)
             for s in ("right", "left")]
    return np.maximum(*worst) if len(table) else np.zeros(0)
