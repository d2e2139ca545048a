"""dataset_manifest / dataset_exports refuse incomplete shard sets; the manifest adds up per-shard
summaries; bucket exports stream complete layouts and leave no orphans."""

from __future__ import annotations

import json
import time

import pytest
from dagster import AssetMaterialization, DagsterInstance, SourceAsset, materialize

from handsynth.annotate import annotation_table
from handsynth.storage import LocalStore
from handsynth import shard_summary
from handsynth.training import iter_annotation_tables
from ih_assets.dataset import dataset_exports, dataset_manifest, export_to_store
from resources.codecs import encode
from resources.hand_model import HandModelResource
from resources.partitions import pose_shards
from resources.settings import PipelineSettings
from resources.storage import MemoryStorage, io_manager_for

SHARDS = ["shard=00000", "shard=00001"]
#: The shards' annotation tables, as stored upstream (only their stored objects are read here).
ANNOTATIONS = SourceAsset("annotations", partitions_def=pose_shards)


def _setup(name: str, done: list[str]) -> tuple[DagsterInstance, dict]:
    """Two registered shards; ``done`` have an (empty) annotation table stored and recorded."""
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pose_shards", SHARDS)
    storage = MemoryStorage(name=name, prefix="t")
    store = storage.object_store()
    for shard in done:
        ext, data = encode(annotation_table([]))
        store.put_bytes(f"t/annotations/{shard}{ext}", data)
        instance.report_runless_asset_event(AssetMaterialization(asset_key="annotations", partition=shard))
    resources = {"settings": PipelineSettings.from_preset("test"), "hand_model": HandModelResource(),
                 "storage": storage, "io_manager": io_manager_for(storage)}
    return instance, resources


def _failure(instance, resources, asset) -> str:
    result = materialize([ANNOTATIONS, asset], resources=resources, instance=instance,
                         selection=[asset], raise_on_error=False)
    assert not result.success
    return str(result.get_step_failure_events()[0].event_specific_data.error.message)


def test_manifest_refuses_zero_images():
    instance, resources = _setup("zero-images", SHARDS)
    assert "all 2 pose shards have zero images" in _failure(instance, resources, dataset_manifest)


@pytest.mark.parametrize("asset", [dataset_manifest, dataset_exports])
def test_missing_shard_is_named(asset):
    instance, resources = _setup(f"missing-{asset.key.path[-1]}", SHARDS[:1])
    message = _failure(instance, resources, asset)
    assert "1 of 2 pose shards are not complete" in message
    assert "shard=00001: annotations missing" in message and "shard=00000" not in message


def test_stale_shard_is_named():
    instance, resources = _setup("stale", SHARDS)
    time.sleep(0.01)
    instance.report_runless_asset_event(AssetMaterialization(asset_key="deduped_poses"))
    message = _failure(instance, resources, dataset_manifest)
    assert "shard=00000: annotations older than deduped_poses" in message and "shard=00001" in message


def test_manifest_adds_up_the_shard_summaries():
    instance, resources = _setup("summaries", [])
    store = resources["storage"].object_store()
    summaries = {}
    for i, shard in enumerate(SHARDS):
        summary = {"images": 10 + i, "poses": 2, "distinct_poses": 1, "blocks": 1, "visible_keypoints": 300 + i,
                   "bytes": {"rgb": 1000, "label": 100, "depth": 10}, "image_sizes": {"96x96": 10 + i},
                   "hand_models": {"standin": 10 + i}}
        summaries[shard] = summary
        store.put_bytes(f"t/annotations/{shard}.parquet", b"never read: the summary is recorded")
        instance.report_runless_asset_event(AssetMaterialization(asset_key="annotations", partition=shard,
                                                                 metadata={"summary": summary}))
    result = materialize([ANNOTATIONS, dataset_manifest], resources=resources, instance=instance,
                         selection=[dataset_manifest])
    manifest = result.output_for_node("dataset_manifest")
    assert manifest["images"] == 21 and manifest["images_per_shard"] == {"shard=00000": 10, "shard=00001": 11}
    assert manifest["bytes"] == {"rgb": 2000, "label": 200, "depth": 20, "total": 2220}
    assert manifest["visible_keypoints_mean"] == pytest.approx(601 / 21) and manifest["poses"] == 4
    assert manifest["image_sizes"] == {"96x96": 21}


@pytest.mark.slow
def test_summary_of_a_real_table_matches_its_rows():
    from tests.pipeline_output import PREFIX, pipeline_output

    root, _ = pipeline_output()
    table = next(iter_annotation_tables(LocalStore(root), PREFIX))
    summary = shard_summary.summarize(table)
    assert summary["images"] == len(table) > 0 and summary["poses"] == table["pose_id"].nunique()
    assert summary["bytes"]["rgb"] == table["rgb_bytes"].sum() and summary["blocks"] == table["tar_key"].nunique()
    assert shard_summary.check(json.loads(json.dumps(summary)), "x") == summary


@pytest.mark.slow
def test_bucket_export_with_fewer_images_leaves_no_orphans():
    from tests.pipeline_output import PREFIX, pipeline_output
    from handsynth.exports import pca_inverses
    from handsynth.hand_model.model import HandModel

    root, _ = pipeline_output()
    store = LocalStore(root)
    tables = list(iter_annotation_tables(store, PREFIX))
    n = sum(len(t) for t in tables)
    pca = pca_inverses(HandModel.standin().identity["source"])
    splits = {"train": 1.0, "val": 0.0, "test": 0.0}
    first = export_to_store(store, "again/exports", lambda: iter(tables), n, pca, splits)
    keys_first = set(store.list_keys("again/exports/"))
    second = export_to_store(store, "again/exports", lambda: iter([tables[0].iloc[:2]]), 2, pca, splits)
    keys_second = set(store.list_keys("again/exports/"))
    assert first["intaghand"]["images"]["train"] == n and second["intaghand"]["images"]["train"] == 2
    assert second["intaghand"]["orphans_removed"] > 0 and keys_second < keys_first
    assert len([k for k in keys_second if k.endswith(".pkl")]) == 2
    for name in ("interhand26m", "intaghand"):
        sums = store.get_bytes(f"again/exports/{name}/SHA256SUMS").decode().splitlines()
        listed = {f"again/exports/{name}/{line[66:]}" for line in sums}
        assert listed | {f"again/exports/{name}/SHA256SUMS"} == {k for k in keys_second if f"/{name}/" in k}
        assert all(store.size(f"again/exports/{name}/{line[66:]}") > 0 for line in sums)
    assert len([k for k in keys_second if k.endswith(".jpg") and "/interhand26m/images/" in k]) == 2
