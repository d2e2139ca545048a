"""Rendering and annotation stages end to end on one tiny shard, in memory."""

import numpy as np
from dagster import DagsterInstance, materialize

import io

from handsynth.annotate import stack
from handsynth.keypoints import to_ih26m_42
from handsynth.render.raster import decode_png
from handsynth.sources.interhand import load_interhand_joints, load_interhand_mano
from ih_assets.optimization import hand_anchors, optimized_poses, pose_discriminator
from ih_assets.poses import augmented_poses, deduped_poses, raw_poses
from ih_assets.dataset import dataset_exports, dataset_manifest
from ih_assets.rendering import annotations, environment_maps, rendered_views
from quality.rendering_checks import (annotation_expectations, keypoints_inside_image, keypoints_reproject,
                                      masks_match_projected_mesh)
from resources.hand_model import HandModelResource
from resources.settings import PipelineSettings
from resources.sources import PoseSourceResource
from resources.storage import MemoryStorage, io_manager_for


def test_shard_renders_annotated_images_that_pass_their_checks():
    instance = DagsterInstance.ephemeral()
    storage = MemoryStorage(name="test-assets-rendering", prefix="t")
    resources = {
        "settings": PipelineSettings.from_preset("test", n_procedural_poses=2, shard_size=2, optimize_iterations=10,
                                                 n_augmentations=1, n_views=2, image_size=96),
        "hand_model": HandModelResource(), "pose_source": PoseSourceResource(),
        "storage": storage, "io_manager": io_manager_for(storage),
    }
    assets = [raw_poses, deduped_poses, augmented_poses, hand_anchors, pose_discriminator, optimized_poses,
              environment_maps, rendered_views, annotations, dataset_manifest, dataset_exports]
    checks = [annotation_expectations, keypoints_inside_image, keypoints_reproject, masks_match_projected_mesh]
    assert materialize(assets, resources=resources, instance=instance,
                       selection=[raw_poses, deduped_poses, hand_anchors, pose_discriminator, environment_maps]).success
    shard = instance.get_dynamic_partitions("pose_shards")[0]
    run = materialize([*assets, *checks], resources=resources, instance=instance, partition_key=shard,
                      selection=[augmented_poses, optimized_poses, rendered_views, annotations], raise_on_error=False)
    manifest = run.output_for_node("rendered_views")
    table = run.output_for_node("annotations")
    kept = int(run.output_for_node("optimized_poses").meta["kept"].sum())
    assert len(manifest) == len(table) == kept * 2
    evaluations = {c.check_name: c.passed for c in run.get_asset_check_evaluations()}
    assert kept >= 1  # seeded: this shard keeps a pose, so the checks below see real images
    assert evaluations == {"annotation_expectations": True, "keypoints_inside_image": True,
                           "keypoints_reproject": True, "masks_match_projected_mesh": True}
    store = storage.object_store()
    rgb = decode_png(store.get_bytes(table["rgb_key"].iloc[0]))
    labels = decode_png(store.get_bytes(table["label_key"].iloc[0]))
    depth = decode_png(store.get_bytes(table["depth_key"].iloc[0]))
    assert rgb.shape == (96, 96, 3) and labels.shape == (96, 96) and depth.dtype == np.uint16
    assert ((labels > 0) == (depth > 0)).mean() > 0.99
    final = materialize(assets, resources=resources, instance=instance, selection=[dataset_manifest, dataset_exports],
                        run_config={"ops": {"dataset_exports": {"config": {"splits": "train=1.0"}}}})
    assert final.output_for_node("dataset_manifest")["images"] == len(table)
    # the IH2.6M export, read back with the IH2.6M loader, gives the same 3D keypoints and MANO poses
    paths = final.output_for_node("dataset_exports")["interhand26m"]["paths"]["train"]
    joints = load_interhand_joints(io.BytesIO(store.get_bytes(paths["joint_3d"])), name="joint_3d.json")
    world = stack(table, "keypoints3d_world_mm", (2, 21, 3))
    expected = to_ih26m_42(world[:, 0], world[:, 1])
    assert joints.world_mm.shape[0] == table["pose_id"].nunique()
    assert abs(joints.world_mm[0] - expected[0]).max() < 1e-3
    mano = load_interhand_mano(io.BytesIO(store.get_bytes(paths["MANO_NeuralAnnot"])), name="mano.json")
    assert abs(mano.arrays["right_hand_pose"][0] - stack(table, "right_mano_pose", (48,))[0, 3:]).max() < 1e-5
