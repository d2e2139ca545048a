"""Dagster records of removed pose shards.

When a shard stops existing (fewer poses after a settings change or ``--refresh``, a dynamic
partition deleted in the UI), the main job deletes its objects. Dagster's records should follow,
but its open-source event-log storages cannot wipe one partition's history
(``DagsterInstance.wipe_asset_partitions`` raises ``NotImplementedError`` on SQLite and Postgres),
and the UI merely hides a deleted dynamic partition: registered again later, the shard would show
(and plan) as materialized although its objects are gone. So the main job records each removal as
a runless observation tagged :data:`REMOVED_TAG` on every per-shard asset, and every reader of shard
records asks :func:`live_materialization`, which ignores a materialization older than a removal.
"""

from __future__ import annotations

from typing import Iterable

from dagster import AssetKey, AssetObservation, AssetRecordsFilter, DagsterInstance, EventLogRecord

REMOVED_TAG = "renderih/removed"


def record_removal(instance: DagsterInstance, keys: Iterable[AssetKey], shard: str, objects_deleted: int) -> None:
    """Mark ``shard`` of each of ``keys`` as removed (visible in the asset's event list in the UI)."""
    for key in keys:
        instance.report_runless_asset_event(AssetObservation(
            asset_key=key, partition=shard, tags={REMOVED_TAG: "true"},
            description="the shard no longer exists: the main job deleted its objects",
            metadata={"objects_deleted": objects_deleted}))


def live_materialization(instance: DagsterInstance, key: AssetKey, shard: str) -> EventLogRecord | None:
    """The newest materialization of ``key`` in ``shard``, or None when there is none or a
    removal was recorded after it."""
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[shard]), limit=1).records
    if not records:
        return None
    later = instance.fetch_observations(AssetRecordsFilter(asset_key=key, asset_partitions=[shard],
                                                           after_storage_id=records[0].storage_id), limit=100).records
    removed = any((r.asset_observation.tags or {}).get(REMOVED_TAG) for r in later)
    return None if removed else records[0]
