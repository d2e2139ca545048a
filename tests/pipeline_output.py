"""A tiny pipeline run into a local folder (the demo output's layout at test size), made once per
test session and shared by the training and CLI tests."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from dagster import DagsterInstance, materialize

from ih_assets.dataset import dataset_exports, dataset_manifest
from ih_assets.optimization import hand_anchors, optimized_poses, pose_discriminator
from ih_assets.poses import augmented_poses, deduped_poses, raw_poses
from ih_assets.rendering import annotations, environment_maps, rendered_views
from resources.hand_model import HandModelResource
from resources.settings import PipelineSettings
from resources.sources import PoseSourceResource
from resources.storage import LocalStorage, io_manager_for

PREFIX = "renderih"
ASSETS = [raw_poses, deduped_poses, augmented_poses, hand_anchors, pose_discriminator, optimized_poses,
          environment_maps, rendered_views, annotations, dataset_manifest, dataset_exports]
SOURCES = [raw_poses, deduped_poses, hand_anchors, pose_discriminator, environment_maps]
PER_SHARD = [augmented_poses, optimized_poses, rendered_views, annotations]


def tiny_resources(root: str, **overrides) -> dict:
    settings = dict(n_procedural_poses=4, shard_size=2, optimize_iterations=10, n_augmentations=1, n_views=2,
                    image_size=96)
    settings.update(overrides)
    storage = LocalStorage(root_dir=root, prefix=PREFIX)
    return {"settings": PipelineSettings.from_preset("test", **settings), "hand_model": HandModelResource(),
            "pose_source": PoseSourceResource(), "storage": storage, "io_manager": io_manager_for(storage)}


@functools.cache
def pipeline_output() -> tuple[Path, DagsterInstance]:
    """(store root, instance) after sources, every shard, and the manifest and exports."""
    root = Path(tempfile.mkdtemp(prefix="renderih-tiny-"))
    instance = DagsterInstance.ephemeral()
    resources = tiny_resources(str(root))
    assert materialize(ASSETS, resources=resources, instance=instance, selection=SOURCES).success
    for shard in instance.get_dynamic_partitions("pose_shards"):
        assert materialize(ASSETS, resources=resources, instance=instance, partition_key=shard,
                           selection=PER_SHARD).success
    assert materialize(ASSETS, resources=resources, instance=instance,
                       selection=[dataset_manifest, dataset_exports]).success
    return root, instance
