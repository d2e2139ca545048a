"""Checks on optimized poses: limits and penetration of kept poses (independent audit), retention."""

import numpy as np
import torch
from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from handsynth import joint_limits, optimize, penetration
from handsynth.pose_table import PoseTable
from resources.hand_model import HandModelResource
from resources.partitions import pose_shards

#: The audit's depth bound (mm), against the whole closed surface: kept poses may touch, not overlap.
AUDIT_MAX_DEPTH_MM = 1.0
RETENTION_WARNING = 0.85
#: Largest share of kept fingers whose DIP bend is more than 20 degrees from 2/3 of the PIP bend
#: (source poses: ~0; independent joint offsets gave 40%, the claw-like fingers).
MAX_UNCOUPLED_SHARE = 0.10


def _kept(table: PoseTable) -> PoseTable:
    return table.take(table.meta["kept"].to_numpy(dtype=bool))


@asset_check(asset="optimized_poses", blocking=True, partitions_def=pose_shards,
             description="Kept poses have no joint-limit violation above 0.1 degree (recomputed from the table).")
def kept_poses_within_joint_limits(hand_model: HandModelResource, optimized_poses: PoseTable) -> AssetCheckResult:
    model = hand_model.get()
    kept = _kept(optimized_poses)
    frames = joint_limits.AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    worst = np.zeros(len(kept))
    for side in ("right", "left"):
        full = model.full_finger_pose(side, torch.as_tensor(kept.hand(side)["hand_pose"], device=model.device))
        if side == "left":
            full = joint_limits.mirror_pose(full)
        worst = np.maximum(worst, joint_limits.max_violation_deg(full, frames).cpu().numpy())
    bad = np.flatnonzero(worst > optimize.MAX_VIOLATION_DEG)
    return AssetCheckResult(passed=len(bad) == 0, metadata={
        "kept_poses": len(kept), "violating": len(bad), "worst_deg": float(worst.max()) if len(worst) else 0.0})


@asset_check(asset="optimized_poses", blocking=True, partitions_def=pose_shards,
             description="Independent audit: trimesh containment and trimesh signed distance of each kept "
                         "pose's vertices in the other hand's WHOLE closed surface (not the part meshes, whose "
                         "closing caps lie inside the hand and make deep points look shallow).")
def kept_poses_do_not_interpenetrate(hand_model: HandModelResource, optimized_poses: PoseTable) -> AssetCheckResult:
    model = hand_model.get()
    kept = _kept(optimized_poses)
    verts = {s: model.forward_numpy(s, kept.hand(s)).vertices.cpu().numpy() for s in ("right", "left")}
    worst_depth, worst_pose = 0.0, ""
    for i in range(len(kept)):   # from the stored parameters, not the optimizer's statistics
        depth = penetration.whole_surface_depth_mm(model, {s: verts[s][i] for s in verts})
        if depth > worst_depth:
            worst_depth, worst_pose = depth, str(kept.pose_ids[i])
    return AssetCheckResult(passed=worst_depth <= AUDIT_MAX_DEPTH_MM, metadata={
        "kept_poses": len(kept), "worst_depth_mm": round(worst_depth, 3), "worst_pose": worst_pose,
        "bound_mm": AUDIT_MAX_DEPTH_MM})


@asset_check(asset="optimized_poses", partitions_def=pose_shards,
             description="Share of poses kept after optimization (paper: 93%); warns below 85%.")
def optimization_retention(optimized_poses: PoseTable) -> AssetCheckResult:
    kept = optimized_poses.meta["kept"].to_numpy(dtype=bool)
    rate = float(kept.mean()) if len(kept) else 0.0
    reasons = optimized_poses.meta.loc[~kept, "drop_reason"].value_counts().to_dict()
    return AssetCheckResult(passed=rate >= RETENTION_WARNING, severity=AssetCheckSeverity.WARN,
                            metadata={"retention": rate, "dropped_by_reason": {k: int(v) for k, v in reasons.items()}})


@asset_check(asset="optimized_poses", blocking=True, partitions_def=pose_shards,
             description="Kept fingers stay coupled: at most 10% have |DIP - 2/3 PIP| > 20 degrees "
                         "(recomputed from the stored parameters).")
def kept_fingers_coupled(hand_model: HandModelResource, optimized_poses: PoseTable) -> AssetCheckResult:
    report = optimize.pose_report(hand_model.get(), _kept(optimized_poses))["coupling"]
    return AssetCheckResult(passed=report["share_over_20deg"] <= MAX_UNCOUPLED_SHARE,
                            metadata={**report, "max_share": MAX_UNCOUPLED_SHARE})
