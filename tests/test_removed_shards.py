"""A shard that no longer exists loses its objects (only its own folders are listed) and its
Dagster records: nothing reads it as materialized any more, and registered again it is missing."""

from __future__ import annotations

from dagster import AssetKey, AssetMaterialization, DynamicPartitionsDefinition, asset, instance_for_test, materialize

from ih_assets.main_job import remove_shards
from resources.removed_shards import live_materialization
from resources.storage import MemoryStorage
from sensors.schedules import stale_shard_requests

SHARDS = ["shard=00000", "shard=00001", "shard=00002"]
pose_shards = DynamicPartitionsDefinition(name="pose_shards")


@asset(partitions_def=pose_shards)
def augmented_poses() -> int:
    return 1


@asset(partitions_def=pose_shards)
def annotations() -> int:
    return 1


KEYS = [augmented_poses.key, annotations.key]


class ListingRecorder:
    """A store that records the prefix of every listing."""

    def __init__(self, store) -> None:
        self.store, self.listed = store, []

    def list_keys(self, prefix: str = "") -> list[str]:
        self.listed.append(prefix)
        return self.store.list_keys(prefix)

    def delete(self, key: str) -> None:
        self.store.delete(key)


def _live_shards(instance) -> dict[str, set[str]]:
    return {k.to_user_string(): {s for s in instance.get_materialized_partitions(k)
                                 if live_materialization(instance, k, s) is not None} for k in KEYS}


def test_removed_shard_loses_objects_and_records_and_comes_back_missing(tmp_path):
    memory = MemoryStorage(name=f"removed-{tmp_path.name}").object_store()
    for shard in SHARDS:
        memory.put_bytes(f"p/augmented_poses/{shard}.posetable.parquet", b"table")
        memory.put_bytes(f"p/annotations/{shard}.parquet", b"table")
        memory.put_bytes(f"p/render/{shard}/pose_a.tar", b"images")
    memory.put_bytes("p/render/shard=000020/pose_b.tar", b"a longer shard key that starts alike")
    store = ListingRecorder(memory)
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("pose_shards", SHARDS)
        for shard in SHARDS:
            assert materialize([augmented_poses, annotations], instance=instance, partition_key=shard).success
        instance.delete_dynamic_partition("pose_shards", "shard=00002")
        current = set(SHARDS[:2])

        assert remove_shards(instance, store, "p", KEYS, current) == {"shard=00002": 3}
        left = set(memory.list_keys("p/"))
        assert not any("shard=00002/" in k or "shard=00002." in k for k in left)
        assert "p/render/shard=000020/pose_b.tar" in left and "p/annotations/shard=00001.parquet" in left
        assert store.listed and all("/shard=00002" in prefix for prefix in store.listed)  # no bucket-wide listing
        assert set(instance.get_materialized_partitions(annotations.key)) == set(SHARDS)   # Dagster alone keeps it
        assert _live_shards(instance) == {"augmented_poses": current, "annotations": current}

        store.listed.clear()
        assert remove_shards(instance, store, "p", KEYS, current) == {} and store.listed == []   # done once

        instance.add_dynamic_partitions("pose_shards", ["shard=00002"])   # more poses again: the shard returns
        instance.report_runless_asset_event(AssetMaterialization(asset_key=AssetKey("deduped_poses")))
        requests = {r.partition_key: r.tags["renderih/reason"] for r in stale_shard_requests(instance, False, 10)}
        assert requests["shard=00002"] == "missing"
        assert materialize([augmented_poses, annotations], instance=instance, partition_key="shard=00002").success
        assert _live_shards(instance)["annotations"] == set(SHARDS)
