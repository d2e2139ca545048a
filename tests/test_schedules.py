"""The nightly backfill requests exactly the missing or stale shards, and nothing twice."""

import time

from dagster import AssetMaterialization, build_schedule_context, instance_for_test

from sensors.schedules import nightly_shard_backfill


def _materialize(instance, key, partition=None):
    instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=partition))
    time.sleep(0.01)  # distinct timestamps


def _keys(result):
    return sorted(r.partition_key for r in result) if isinstance(result, list) else []


def test_schedule_requests_missing_and_stale_shards_only():
    with instance_for_test() as instance:  # schedules need a persistent (temp-dir) instance
        _check_backfill(instance)


def _check_backfill(instance):
    instance.add_dynamic_partitions("pose_shards", ["shard=00000", "shard=00001", "shard=00002"])
    assert not isinstance(nightly_shard_backfill(build_schedule_context(instance=instance)), list)  # no dedup yet
    _materialize(instance, "deduped_poses")
    _materialize(instance, "annotations", "shard=00000")
    first = nightly_shard_backfill(build_schedule_context(instance=instance))
    assert _keys(first) == ["shard=00001", "shard=00002"]
    again = nightly_shard_backfill(build_schedule_context(instance=instance))
    assert [r.run_key for r in again] == [r.run_key for r in first]   # same keys: dagster runs them once
    for shard in ("shard=00001", "shard=00002"):
        _materialize(instance, "annotations", shard)
    done = nightly_shard_backfill(build_schedule_context(instance=instance))
    assert not isinstance(done, list)                                 # a finished backfill is a no-op
    _materialize(instance, "deduped_poses")                           # new distinct poses: all stale
    stale = nightly_shard_backfill(build_schedule_context(instance=instance))
    assert _keys(stale) == ["shard=00000", "shard=00001", "shard=00002"]
    assert {r.run_key for r in stale}.isdisjoint({r.run_key for r in first})
