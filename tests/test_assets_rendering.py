"""Rendering and annotation stages end to end on one tiny shard, in memory: render blocks are
WebDataset tars whose members the rows locate; a re-run skips current blocks and repairs a
truncated one; blocks of poses the shard no longer keeps are deleted."""

import io
import json
import tarfile

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from handsynth.render.blocks import BlockIndex, index_key, read_member, sample_name
from handsynth.render.raster import decode_png
from handsynth.render.workers import look_from_row
from ih_assets.optimization import hand_anchors, optimized_poses, pose_discriminator
from ih_assets.poses import augmented_poses, deduped_poses, raw_poses
from ih_assets.rendering import annotations, environment_maps, rendered_views
from ih_assets.versions import content_version
from quality.rendering_checks import (accessories_labelled, annotation_expectations, forearms_present_and_clear,
                                      image_keys_unique, keypoints_inside_image, keypoints_reproject,
                                      masks_match_projected_mesh)
from resources.hand_model import HandModelResource
from resources.settings import PipelineSettings
from resources.sources import PoseSourceResource
from resources.storage import MemoryStorage, io_manager_for

ASSETS = [raw_poses, deduped_poses, augmented_poses, hand_anchors, pose_discriminator, optimized_poses,
          environment_maps, rendered_views, annotations]
CHECKS = [annotation_expectations, image_keys_unique, keypoints_inside_image, keypoints_reproject,
          masks_match_projected_mesh, forearms_present_and_clear, accessories_labelled]


@pytest.fixture(scope="module")
def shard_run():
    """One shard rendered from scratch (2 distinct poses x 2 augmentations x 2 views, 1 worker), every
    hand wearing what fits of a wrist piece and a ring (so the re-render below covers them too)."""
    instance = DagsterInstance.ephemeral()
    storage = MemoryStorage(name="test-assets-rendering", prefix="t")
    resources = {
        "settings": PipelineSettings.from_preset("test", n_procedural_poses=2, shard_size=2, optimize_iterations=10,
                                                 n_augmentations=2, n_views=2, image_size=96, render_workers=1,
                                                 accessory_share=1.0),
        "hand_model": HandModelResource(), "pose_source": PoseSourceResource(),
        "storage": storage, "io_manager": io_manager_for(storage),
    }
    assert materialize(ASSETS, resources=resources, instance=instance,
                       selection=[raw_poses, deduped_poses, hand_anchors, pose_discriminator, environment_maps]).success
    shard = instance.get_dynamic_partitions("pose_shards")[0]
    run = materialize([*ASSETS, *CHECKS], resources=resources, instance=instance, partition_key=shard,
                      selection=[augmented_poses, optimized_poses, rendered_views, annotations], raise_on_error=False)
    return instance, storage, resources, shard, run


def _render_again(shard_run):
    instance, _, resources, shard, _ = shard_run
    run = materialize([*ASSETS, *CHECKS], resources=resources, instance=instance, partition_key=shard,
                      selection=[rendered_views])
    [mat] = [e.materialization for e in run.get_asset_materialization_events()]
    return run.output_for_node("rendered_views"), {k: v.value for k, v in mat.metadata.items()}


def test_shard_renders_blocks_whose_rows_locate_verified_images(shard_run):
    _, storage, _, shard, run = shard_run
    manifest = run.output_for_node("rendered_views")
    table = run.output_for_node("annotations")
    kept = run.output_for_node("optimized_poses").meta
    kept = kept[kept["kept"]]
    assert len(kept) >= 2 and kept["distinct_pose_id"].nunique() == 2   # seeded: both poses keep augmentations
    assert len(manifest) == len(table) == len(kept) * 2
    assert {c.check_name: c.passed for c in run.get_asset_check_evaluations()} == {s.name: True for c in CHECKS for s in c.check_specs}
    store = storage.object_store()
    # one tar and one index per distinct pose, nothing else
    tars = sorted(table["tar_key"].unique())
    assert sorted(store.list_keys(f"t/render/{shard}/")) == sorted(tars + [index_key(k) for k in tars])
    row = table.iloc[0]
    rgb, labels, depth = (decode_png(read_member(store, row, kind)) for kind in ("rgb", "label", "depth"))
    assert rgb.shape == (96, 96, 3) and labels.shape == (96, 96) and depth.dtype == np.uint16
    assert ((labels > 0) == (depth > 0)).mean() > 0.99
    # the tar is a WebDataset shard: members named <sample>.<ext>, the rows' offsets point at them
    with tarfile.open(fileobj=io.BytesIO(store.get_bytes(row["tar_key"]))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        name = sample_name(row["image_id"])
        assert members[f"{name}.png"].offset_data == row["rgb_offset"]
        assert members[f"{name}.depth.png"].offset_data == row["depth_offset"]
        targets = json.load(tar.extractfile(f"{name}.json"))
    assert len(members) == 4 * int((table["tar_key"] == row["tar_key"]).sum())
    assert targets["image_id"] == row["image_id"]
    assert np.allclose(targets["keypoints2d_px"], np.asarray(row["keypoints2d_px"]).reshape(42, 2))
    # the settings' camera look (on in every preset): each row records its lens and effects
    looks = [look_from_row(r) for r in manifest.to_dict("records")]
    assert all(lens.f_number > 0 and lens.focus_distance_m > 0 for lens, _ in looks)
    assert len({effects.noise_seed for _, effects in looks}) > 1
    summary = run.asset_materializations_for_node("rendered_views")[0].metadata["camera_look"].value
    assert summary["depth_of_field"] == 1.0 and summary["background_blur_px_median"] > 0
    # accessories: recorded per row (through the stored table) and labelled 37-40
    worn = [json.loads(w) for w in manifest["accessories"]]
    assert all(worn) and {p["kind"] for w in worn for p in w} >= {"ring"}
    assert sum(int(np.sum(p)) for p in manifest["accessory_pixels"]) > 0


def test_rerun_skips_current_blocks_and_repairs_a_truncated_one(shard_run):
    instance, storage, _, shard, run = shard_run
    first = run.output_for_node("rendered_views")
    store = storage.object_store()
    tars = sorted(first["tar_key"].unique())
    original = {k: store.get_bytes(k) for k in tars}
    same, meta = _render_again(shard_run)
    assert meta["blocks_skipped"] == len(tars) and meta["blocks_rendered"] == 0 and meta["images_rendered"] == 0
    assert content_version(same) == content_version(first)
    # a data version from the same bytes: a skipped shard does not make annotations stale
    versions = [r.asset_materialization.tags["dagster/data_version"] for r in instance.fetch_materializations(
        AssetKey("rendered_views"), limit=2).records]
    assert versions[0] == versions[1]

    store.put_bytes(tars[1], original[tars[1]][:-1000])                       # truncated
    stray = f"t/render/{shard}/gone.tar"
    store.put_bytes(stray, b"a block of a pose the shard no longer keeps")
    store.put_bytes(index_key(stray), b"{}")
    repaired, meta = _render_again(shard_run)
    assert meta["blocks_rendered"] == 1 and meta["blocks_skipped"] == len(tars) - 1
    assert meta["images_rendered"] == int((first["tar_key"] == tars[1]).sum())
    [(pose, why)] = meta["replaced"].items()
    assert tars[1].endswith(f"{pose}.tar".replace("/", "_")) and why.startswith("corrupt:") and "found" in why
    assert meta["objects_removed"] == 2 and not store.exists(stray) and not store.exists(index_key(stray))
    assert {k: store.get_bytes(k) for k in tars} == original                 # re-rendered byte for byte
    assert content_version(repaired) == content_version(first)


def test_a_stored_index_names_its_tar_inputs_and_render_interval(shard_run):
    _, storage, _, _, run = shard_run
    store = storage.object_store()
    key = run.output_for_node("rendered_views")["tar_key"].iloc[0]
    index = BlockIndex.from_json(store.get_bytes(index_key(key)), index_key(key))
    assert index.tar_key == key and index.tar_bytes == len(store.get_bytes(key))
    assert len(index.inputs_digest) == 64 and index.started <= index.finished
    assert [r["image_id"] for r in index.rows] == [r for r in run.output_for_node("rendered_views")["image_id"]
                                                   if r in {x["image_id"] for x in index.rows}]


def test_the_camera_look_switches_are_in_every_blocks_inputs(hand_model):
    """Turning the lens or the camera effects on or off changes the block inputs digest (so the
    stored blocks go stale and are rendered again); the other switch's value stays in it too."""
    from handsynth.render import RenderOptions
    from handsynth.render.blocks import inputs_digest
    from ih_assets.rendering import _block_inputs
    from handsynth.sources.procedural import generate_interacting_poses

    poses = generate_interacting_poses(hand_model, 1, seed=0)
    digests = {(dof, fx): inputs_digest(poses, _block_inputs(
        PipelineSettings.from_preset("test", depth_of_field=dof, camera_effects=fx), RenderOptions(), hand_model, {}))
        for dof in (True, False) for fx in (True, False)}
    assert len(set(digests.values())) == 4
