"""The pose stages through Dagster, with in-memory IO managers (project_fully_featured style)."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import DagsterInstance, materialize

from ih_assets.poses import augmented_poses, deduped_poses, raw_poses
from quality.pose_checks import augmentation_ranges, dedup_spacing
from resources.hand_model import HandModelResource
from resources.settings import PipelineSettings
from resources.sources import PoseSourceResource
from resources.storage import MemoryStorage, io_manager_for


@pytest.fixture(scope="module")
def run():
    instance = DagsterInstance.ephemeral()
    resources = {
        "settings": PipelineSettings.from_preset("test", n_procedural_poses=10, shard_size=4),
        "hand_model": HandModelResource(),
        "pose_source": PoseSourceResource(),
        # in-memory object store: values survive between runs of this test and go through the
        # same Parquet / JSON codecs as the S3 deployment
        "io_manager": io_manager_for(MemoryStorage(name="test-assets-poses")),
    }
    first = materialize([raw_poses, deduped_poses, dedup_spacing], resources=resources, instance=instance)
    shards = instance.get_dynamic_partitions("pose_shards")
    second = materialize([raw_poses, deduped_poses, augmented_poses, augmentation_ranges], resources=resources,
                         instance=instance, partition_key=shards[0], selection=[augmented_poses])
    return instance, first, second, shards


def test_raw_to_deduped_registers_one_partition_per_shard(run):
    instance, first, _, shards = run
    assert first.success
    raw = first.output_for_node("raw_poses")
    deduped = first.output_for_node("deduped_poses")
    assert len(raw) == 10 and 1 <= len(deduped) <= 10
    assert shards == sorted(deduped.meta["shard"].unique())
    assert int(deduped.meta["cluster_size"].sum()) == len(raw)
    checks = first.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["dedup_spacing"] and checks[0].passed


def test_augmented_shard_holds_its_distinct_poses_times_n(run):
    _, first, second, shards = run
    deduped = first.output_for_node("deduped_poses")
    in_shard = deduped.meta["shard"] == shards[0]
    augmented = second.output_for_node("augmented_poses")
    assert len(augmented) == int(in_shard.sum()) * 2
    assert set(augmented.meta["distinct_pose_id"]) == set(deduped.meta.loc[in_shard, "pose_id"])
    mat = second.asset_materializations_for_node("augmented_poses")[0]
    assert mat.partition == shards[0]
    checks = second.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)


def test_raw_poses_direct_invocation_is_seeded():
    """Assets are plain functions too: invoking one twice gives the same rows."""
    from dagster import build_asset_context

    kwargs = dict(settings=PipelineSettings.from_preset("test", n_procedural_poses=3),
                  hand_model=HandModelResource(), pose_source=PoseSourceResource())
    a = raw_poses(build_asset_context(), **kwargs).value
    b = raw_poses(build_asset_context(), **kwargs).value
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
