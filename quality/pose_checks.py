"""Checks on the pose stages: dedup spacing and augmentation ranges."""


import numpy as np
from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from handsynth import augment, dedup
from handsynth.pose_table import PoseTable
from resources.hand_model import HandModelResource
from resources.partitions import pose_shards
from resources.settings import PipelineSettings


@asset_check(asset="deduped_poses", blocking=True,
             description="No two kept poses are closer than the dedup threshold (independent k-d tree check).")
def dedup_spacing(settings: PipelineSettings, hand_model: HandModelResource, deduped_poses: PoseTable) -> AssetCheckResult:
    features = dedup.pose_features(hand_model.get(), deduped_poses)
    ok, min_distance, pair = dedup.check_min_spacing(features, settings.dedup_threshold_mm)
    ids = deduped_poses.pose_ids
    closest = [str(ids[i]) for i in pair] if pair is not None else []
    return AssetCheckResult(passed=bool(ok), metadata={
        "min_distance_mm": float(min_distance) if np.isfinite(min_distance) else -1.0,
        "threshold_mm": settings.dedup_threshold_mm, "closest_pair": ", ".join(closest)})


@asset_check(asset="augmented_poses", blocking=True, partitions_def=pose_shards,
             description="Every augmented finger bend and splay lies inside the augmentation ranges.")
def augmentation_ranges(hand_model: HandModelResource, augmented_poses: PoseTable) -> AssetCheckResult:
    worst = augment.table_range_violation_deg(hand_model.get(), augmented_poses)  # (N,)
    bad = np.flatnonzero(worst > augment.RANGE_TOLERANCE_DEG)
    return AssetCheckResult(
        passed=len(bad) == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={"poses": len(worst), "outside_range": int(len(bad)),
                  "worst_deg": float(worst.max()) if len(worst) else 0.0,
                  "first_bad": str(augmented_poses.pose_ids[bad[0]]) if len(bad) else ""})
