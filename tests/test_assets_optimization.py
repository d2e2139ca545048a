"""The optimization stage through Dagster with the in-memory object store."""

from dagster import DagsterInstance, materialize

from ih_assets.optimization import hand_anchors, optimized_poses, pose_discriminator
from ih_assets.poses import augmented_poses, deduped_poses, raw_poses
from quality.optimization_checks import (kept_fingers_coupled, kept_poses_do_not_interpenetrate,
                                         kept_poses_within_joint_limits, optimization_retention)
from resources.hand_model import HandModelResource
from resources.settings import PipelineSettings
from resources.sources import PoseSourceResource
from resources.storage import MemoryStorage, io_manager_for


def test_optimized_shard_marks_kept_poses_and_passes_its_checks():
    instance = DagsterInstance.ephemeral()
    resources = {
        "settings": PipelineSettings.from_preset("test", n_procedural_poses=4, shard_size=4, optimize_iterations=30),
        "hand_model": HandModelResource(), "pose_source": PoseSourceResource(),
        "io_manager": io_manager_for(MemoryStorage(name="test-assets-optimization")),
    }
    assets = [raw_poses, deduped_poses, augmented_poses, hand_anchors, pose_discriminator, optimized_poses]
    first = materialize(assets, resources=resources, instance=instance,
                        selection=[raw_poses, deduped_poses, hand_anchors, pose_discriminator])
    assert first.success
    shard = instance.get_dynamic_partitions("pose_shards")[0]
    checks = [kept_poses_within_joint_limits, kept_poses_do_not_interpenetrate, optimization_retention, kept_fingers_coupled]
    second = materialize([*assets, *checks], resources=resources, instance=instance, partition_key=shard,
                         selection=[augmented_poses, optimized_poses], raise_on_error=False)
    table = second.output_for_node("optimized_poses")
    assert {"kept", "drop_reason", "max_depth_mm_after", "penetration_before"} <= set(table.meta.columns)
    assert (table.meta.loc[table.meta["kept"], "drop_reason"] == "").all()
    evaluations = {c.check_name: c for c in second.get_asset_check_evaluations()}
    assert evaluations["kept_poses_within_joint_limits"].passed
    assert evaluations["kept_poses_do_not_interpenetrate"].passed
    assert "optimization_retention" in evaluations
    coupled = evaluations["kept_fingers_coupled"]
    assert coupled.passed and coupled.metadata["share_over_20deg"].value <= 0.10
    meta = second.asset_materializations_for_node("optimized_poses")[0].metadata
    assert "loss_curves" in meta and meta["retention"].value == table.meta["kept"].mean()
    assert set(meta["kept_twist_std_deg"].value) == set(meta["kept_splay_std_deg"].value) and len(meta["kept_twist_std_deg"].value) == 15
    assert "share_over_20deg" in meta["kept_coupling"].value
    augmented = second.asset_materializations_for_node("augmented_poses")[0].metadata
    assert {"coupling_source", "coupling_augmented", "synergy_basis"} <= set(augmented)
