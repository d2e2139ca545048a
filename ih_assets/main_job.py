"""The main job: materialize the unpartitioned assets, then every pose shard; resumable.

``python -m ih_assets.main_job`` runs against the persistent instance in ``DAGSTER_HOME`` (the
one ``dagster dev`` shows). Per asset (and shard) it re-materializes exactly what is missing or
stale (:func:`ih_assets.versions.reasons_to_materialize`: a blocking check that did not pass,
a changed code version or setting, a changed input) plus what depends on it, and prints why;
the rest is skipped, so a killed run is finished by running the command again. On start it marks
runs of a main job whose process is gone as failed and frees their pool slots. Objects of shards
that no longer exist are deleted. ``--refresh`` re-materializes everything. At the end it prints
the bucket and the object keys the run wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
import warnings

from dagster import (AssetKey, AssetRecordsFilter, BetaWarning, DagsterInstance, DagsterRunStatus, PreviewWarning,
                     RunsFilter)

from handsynth.storage import Store
from ih_assets import versions
from ih_assets.definitions import FINAL_JOB, PARTITIONED_JOB, UNPARTITIONED_JOB, defs
from resources.partitions import POSE_SHARDS_NAME

#: Run tags naming the process that executes a main-job run, so a later start can tell a run
#: whose process was killed (status stays STARTED forever, holding its pool slot) from a live one.
TAG_HOST, TAG_PID, TAG_PID_START = "renderih/host", "renderih/pid", "renderih/pid_start"
_UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
               DagsterRunStatus.CANCELING]
_SHARD_SEGMENT = re.compile(r"(?:^|/)(shard=[^/.]+)")


def _process_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot (tells a reused pid apart); '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _process_alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _process_start(pid) in ("", start)


def run_tags() -> dict[str, str]:
    """Tags of every run this process executes (see :data:`TAG_PID`)."""
    pid = os.getpid()
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(pid), TAG_PID_START: _process_start(pid)}


def fail_runs_of_dead_processes(instance: DagsterInstance) -> list[str]:
    """Mark unfinished main-job runs on this host whose process is gone as failed and free the
    pool slots they hold (a SIGKILLed job cannot do it itself); returns their run ids."""
    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=_UNFINISHED, tags={TAG_HOST: host})):
        pid = int(run.tags.get(TAG_PID, "0"))
        if pid and _process_alive(pid, run.tags.get(TAG_PID_START, "")):
            continue
        instance.report_run_failed(run, message=f"the main-job process {pid} on {host} is gone (killed); "
                                                 "marked failed by the next main job")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed


def remove_orphans(store: Store, prefix: str, shards: set[str]) -> list[str]:
    """Delete every object under ``prefix`` in a ``shard=…`` folder or file of a shard that no
    longer exists (tables of per-shard assets, rendered images): no orphans after fewer shards."""
    stale = []
    for key in store.list_keys(f"{prefix}/" if prefix else ""):
        match = _SHARD_SEGMENT.search(key[len(prefix):])
        if match and match.group(1) not in shards:
            stale.append(key)
    for key in stale:
        store.delete(key)
    return stale


def _plan(instance: DagsterInstance, store: Store, keys: list[AssetKey], partition: str | None,
          refresh: bool) -> dict[AssetKey, list[str]]:
    graph = defs.resolve_asset_graph()
    if refresh:
        return {k: ["--refresh"] for k in graph.toposorted_asset_keys if k in set(keys)}
    return versions.reasons_to_materialize(instance, graph, keys, partition, defs.resources["settings"], store)


def _explain(plan: dict[AssetKey, list[str]]) -> str:
    return "; ".join(f"{k.to_user_string()} ({', '.join(r)})" for k, r in plan.items())


def unfinalizable_shards(instance: DagsterInstance, keys: list[AssetKey], shards: list[str]) -> list[str]:
    """Shards whose stored outputs were made with other settings than the current ones (a shard
    that failed after a settings change): a manifest over them would describe data that was
    not made, so the main job does not finalize while any remain."""
    settings = defs.resources["settings"]
    problems = []
    for key in keys:
        current = versions.relevant_settings(settings, key.to_user_string())
        for shard, recorded in versions.recorded_settings(instance, key, shards).items():
            if versions.settings_digest(recorded) != versions.settings_digest(current):
                problems.append(f"{key.to_user_string()}[{shard}] made with {recorded}, current {current}")
    return problems


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
    tags = run_tags()
    for run_id in fail_runs_of_dead_processes(instance):
        print(f"[main] run {run_id} of a killed main job marked failed; its pool slots are free", flush=True)

    unpart = defs.get_job_def(UNPARTITIONED_JOB)
    todo = _plan(instance, store, sorted(unpart.asset_layer.executable_asset_keys), None, refresh)
    if todo:
        print(f"[main] materializing {_explain(todo)}", flush=True)
        if not unpart.execute_in_process(instance=instance, asset_selection=list(todo), tags=tags,
                                         raise_on_error=False).success:
            print("[main] FAILED: the unpartitioned assets (see the run in the Dagster UI); shards not started",
                  file=sys.stderr)
            return 1
    else:
        print("[main] unpartitioned assets up to date (use --refresh to redo)", flush=True)

    all_shards = instance.get_dynamic_partitions(POSE_SHARDS_NAME)
    orphans = remove_orphans(store, storage.prefix, set(all_shards))
    if orphans:
        print(f"[main] removed {len(orphans)} objects of shards that no longer exist", flush=True)

    part = defs.get_job_def(PARTITIONED_JOB)
    part_keys = sorted(part.asset_layer.executable_asset_keys)
    selected = shards or all_shards
    failed, done_seconds = [], []
    for i, shard in enumerate(selected, 1):
        todo = _plan(instance, store, part_keys, shard, refresh)
        if not todo:
            continue
        eta = (f", ETA {sum(done_seconds) / len(done_seconds) * (len(selected) - i + 1):.0f} s for the rest"
               if done_seconds else "")
        print(f"[main] shard {shard} ({i}/{len(selected)}{eta}): {_explain(todo)}", flush=True)
        t0 = time.monotonic()
        result = part.execute_in_process(instance=instance, partition_key=shard, asset_selection=list(todo),
                                         tags=tags, raise_on_error=False)
        done_seconds.append(time.monotonic() - t0)
        print(f"[main] shard {shard} {'done' if result.success else 'FAILED'} in {done_seconds[-1]:.0f} s", flush=True)
        if not result.success:
            failed.append(shard)
    mismatched = unfinalizable_shards(instance, part_keys, all_shards)
    if mismatched:
        print("[main] not finalizing, the manifest would describe data that was not made: "
              + "; ".join(mismatched), file=sys.stderr)
        failed.append("dataset_manifest")
    else:
        final = defs.get_job_def(FINAL_JOB)
        print("[main] finalizing: dataset manifest", flush=True)
        if not final.execute_in_process(instance=instance, tags=tags, raise_on_error=False).success:
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
        print(f"[main] FAILED: {', '.join(failed)} (see the runs in the Dagster UI)", file=sys.stderr)
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
