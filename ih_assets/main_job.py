"""The main job: materialize the unpartitioned assets, then every pose shard; resumable.

``python -m ih_assets.main_job`` runs against the persistent instance in ``DAGSTER_HOME`` (the
one ``dagster dev`` shows). What is already materialized is skipped, so a killed run is finished
by running the command again; ``--refresh`` re-materializes everything. At the end it prints the
bucket and the object keys the run wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

from dagster import AssetKey, AssetRecordsFilter, BetaWarning, DagsterInstance, PreviewWarning

from ih_assets.definitions import FINAL_JOB, PARTITIONED_JOB, UNPARTITIONED_JOB, defs
from resources.partitions import POSE_SHARDS_NAME


def _missing_unpartitioned(instance: DagsterInstance, keys: list[AssetKey], refresh: bool) -> list[AssetKey]:
    if refresh:
        return keys
    return [k for k in keys if instance.get_latest_materialization_event(k) is None]


def _missing_in_shard(instance: DagsterInstance, keys: list[AssetKey], shard: str, refresh: bool) -> list[AssetKey]:
    if refresh:
        return keys
    return [k for k in keys if shard not in instance.get_materialized_partitions(k)]


def _print_optimization_summary(instance: DagsterInstance) -> None:
    """Before/after figures of the optimization, per shard, from the materialization metadata."""
    key = AssetKey("optimized_poses")
    for shard in sorted(instance.get_materialized_partitions(key)):
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[shard]), limit=1).records
        if records:
            meta = records[0].asset_materialization.metadata
            print(f"[main] optimization {shard}: {meta['summary'].value}")


def run(refresh: bool = False, shards: list[str] | None = None) -> int:
    instance = DagsterInstance.get()
    storage = defs.resources["storage"].process_config_and_initialize()  # resolves EnvVar settings
    store = storage.object_store()
    before = set(store.list_keys(storage.prefix))
    started = time.monotonic()

    unpart = defs.get_job_def(UNPARTITIONED_JOB)
    todo = _missing_unpartitioned(instance, sorted(unpart.asset_layer.executable_asset_keys), refresh)
    if todo:
        print(f"[main] materializing {', '.join(k.to_user_string() for k in todo)}", flush=True)
        unpart.execute_in_process(instance=instance, asset_selection=todo)
    else:
        print("[main] unpartitioned assets already materialized (use --refresh to redo)", flush=True)

    part = defs.get_job_def(PARTITIONED_JOB)
    part_keys = sorted(part.asset_layer.executable_asset_keys)
    all_shards = instance.get_dynamic_partitions(POSE_SHARDS_NAME)
    failed = []
    for i, shard in enumerate(shards or all_shards, 1):
        todo = _missing_in_shard(instance, part_keys, shard, refresh)
        if not todo:
            continue
        print(f"[main] shard {shard} ({i}/{len(all_shards)}): {', '.join(k.to_user_string() for k in todo)}", flush=True)
        result = part.execute_in_process(instance=instance, partition_key=shard, asset_selection=todo,
                                         raise_on_error=False)
        if not result.success:
            failed.append(shard)
    final = defs.get_job_def(FINAL_JOB)
    print("[main] finalizing: dataset manifest", flush=True)
    if not final.execute_in_process(instance=instance, raise_on_error=False).success:
        failed.append("dataset_manifest")
    _print_optimization_summary(instance)
    keys = sorted(store.list_keys(storage.prefix))
    bucket = getattr(storage, "bucket", None) or storage.__class__.__name__
    manifest_key = next((k for k in keys if "/dataset_manifest/all." in f"/{k}"), None)
    images = json.loads(store.get_bytes(manifest_key))["images"] if manifest_key else 0
    print(f"[main] done in {time.monotonic() - started:.0f} s; bucket {bucket!r} holds {len(keys)} objects under "
          f"prefix {storage.prefix!r} ({len(set(keys) - before)} new in this run, {images} annotated images):")
    for key in keys:
        print(f"  {store.uri(key)}{'' if key in before else '  (new)'}")
    if failed:
        print(f"[main] FAILED shards: {', '.join(failed)} (see the runs in the Dagster UI)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    # backfill policies and partitioned checks are marked beta/preview: say so once, not per step
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    parser = argparse.ArgumentParser(prog="python -m ih_assets.main_job", description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true", help="re-materialize assets that already exist")
    parser.add_argument("--shard", action="append", help="only this shard (repeatable)")
    args = parser.parse_args(argv)
    return run(args.refresh, args.shard)


if __name__ == "__main__":
    sys.exit(main())
