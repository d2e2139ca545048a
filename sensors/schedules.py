"""The nightly backfill: request a run for every pose shard whose outputs are missing or stale.

A shard is stale when its last ``annotations`` materialization is older than the latest
``deduped_poses`` (new distinct poses) or, when re-rendering on library changes is enabled, the
latest ``environment_maps``; it is missing when it has none, or when the main job removed the
shard (and its objects) after it (:mod:`resources.removed_shards`). The run key carries the
storage ids of those upstream materializations, so evaluating the schedule again requests
nothing new: a finished backfill is a no-op. One shard per run (the per-shard IO manager stores
one object per partition, and the assets declare ``BackfillPolicy.multi_run(max_partitions_per_run=1)``);
the number of runs one tick requests is capped so a fresh paper-scale backfill is spread over ticks.
"""

from __future__ import annotations

import os

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from resources.removed_shards import live_materialization

SHARDS = "pose_shards"
SHARD_JOB = "generate_shard"
FINAL_ASSET = AssetKey("annotations")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _latest(instance: DagsterInstance, key: AssetKey):
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=1).records
    return records[0] if records else None


def stale_shard_requests(instance: DagsterInstance, rerender_on_library: bool, max_runs: int) -> list[RunRequest]:
    """Run requests for missing or stale shards (see module docstring), at most ``max_runs``."""
    upstream = [AssetKey("deduped_poses")] + ([AssetKey("environment_maps")] if rerender_on_library else [])
    latest = [r for r in (_latest(instance, k) for k in upstream) if r is not None]
    if not latest:
        return []
    newest = max(r.timestamp for r in latest)
    version = "-".join(str(r.storage_id) for r in latest)
    requests = []
    for shard in instance.get_dynamic_partitions(SHARDS):
        done = live_materialization(instance, FINAL_ASSET, shard)
        if done is None or done.timestamp < newest:
            requests.append(RunRequest(run_key=f"{shard}:{version}", partition_key=shard,
                                       tags={"renderih/reason": "missing" if done is None else "stale"}))
        if len(requests) >= max_runs:
            break
    return requests


@schedule(cron_schedule=os.environ.get("IH_BACKFILL_CRON", "0 2 * * *"), job_name=SHARD_JOB,
          name="nightly_shard_backfill", description=__doc__.splitlines()[0])
def nightly_shard_backfill(context: ScheduleEvaluationContext):
    requests = stale_shard_requests(context.instance, _env_flag("IH_RERENDER_ON_NEW_LIBRARY"),
                                    int(os.environ.get("IH_BACKFILL_MAX_RUNS_PER_TICK", "50")))
    return requests or SkipReason("every pose shard is up to date")
