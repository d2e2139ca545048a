"""The main job: materialize the unpartitioned assets, then every pose shard; resumable.

``python -m ih_assets.main_job`` runs against the persistent instance in ``DAGSTER_HOME`` (the
one ``dagster dev`` shows). Per asset (and shard) it re-materializes exactly what is missing or
stale (:func:`ih_assets.versions.reasons_to_materialize`: a blocking check that did not pass,
a changed code version or setting, a changed input, a stored table or render block that is
missing or damaged; here also files changed in ``IH_ENVIRONMENT_DIR`` and shards whose objects
were deleted) plus what depends on it, and prints why; the rest is skipped, so a killed run is
finished, and a damaged bucket repaired, by running the command again.

Before any work it refuses, in one line naming the variable, settings and inputs that would fail
a run (:func:`check_inputs`), and it refuses to run beside another main job on the same instance
or bucket (:mod:`ih_assets.job_lock`; ``--wait`` queues instead). On start it marks runs of a
main job whose process is gone as failed and frees their pool slots. Shards that no longer exist
lose their objects (only their folders are listed, never the whole bucket) and their Dagster
records are marked removed (:mod:`resources.removed_shards`). It ends with a short summary.
``--refresh`` re-materializes everything; ``--debug`` shows tracebacks instead of one-line errors.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections import Counter
from typing import Any

from dagster import AssetKey, BetaWarning, DagsterInstance, DagsterRunStatus, PreviewWarning, RunsFilter

from handsynth import cli_errors, envmaps, userfiles
from handsynth.storage import Store
from handsynth.processes import process_alive, process_start
from ih_assets import versions
from ih_assets.job_lock import JobLockedError, bucket_lease, instance_lock
from resources import removed_shards
from resources.partitions import POSE_SHARDS_NAME

PROG = "python -m ih_assets.main_job"
#: Run tags naming the process that executes a main-job run, so a later start can tell a run
#: whose process was killed (status stays STARTED forever, holding its pool slot) from a live one.
TAG_HOST, TAG_PID, TAG_PID_START = "renderih/host", "renderih/pid", "renderih/pid_start"
_UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
               DagsterRunStatus.CANCELING]
#: Folders under the prefix, besides the per-shard assets' own, that hold a shard's objects as
#: ``<folder>/<shard>/...`` or ``<folder>/<shard>.<ext>``: the render blocks.
SHARD_FOLDERS = ("render",)
#: Exit code when another main job holds the instance lock or the bucket lease.
EXIT_LOCKED = 3


def log(message: str) -> None:
    print(f"[main] {message}", flush=True)


def run_tags() -> dict[str, str]:
    """Tags of every run this process executes (see :data:`TAG_PID`)."""
    pid = os.getpid()
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(pid), TAG_PID_START: process_start(pid)}


def fail_runs_of_dead_processes(instance: DagsterInstance) -> list[str]:
    """Mark unfinished main-job runs on this host whose process is gone as failed and free the
    pool slots they hold (a SIGKILLed job cannot do it itself); returns their run ids."""
    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=_UNFINISHED, tags={TAG_HOST: host})):
        pid = int(run.tags.get(TAG_PID, "0"))
        if pid and process_alive(pid, run.tags.get(TAG_PID_START, "")):
            continue
        instance.report_run_failed(run, message=f"the main-job process {pid} on {host} is gone (killed); "
                                                 "marked failed by the next main job")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed


def _environment_dir_refused(exc: Exception) -> ValueError:
    return ValueError(f"IH_ENVIRONMENT_DIR: {exc}; allowed: a folder of valid equirectangular "
                      f"{'/'.join(envmaps.LIBRARY_EXTENSIONS)} maps, regular files only")


def check_inputs(resources: dict[str, Any]) -> None:
    """Refuse, before any run starts, the inputs a run would otherwise fail on after minutes, with
    one line naming the variable, the value and what is allowed. (Settings are refused when
    ``ih_assets.definitions`` is imported; the maps' content by :func:`check_environment_maps`.)"""
    settings, hand, source = resources["settings"], resources["hand_model"], resources["pose_source"]
    if settings.environment_dir:
        try:
            if not userfiles.list_files(settings.environment_dir, envmaps.LIBRARY_EXTENSIONS):
                raise envmaps.EnvironmentMapError(f"{settings.environment_dir}: no maps in it")
        except ValueError as exc:
            raise _environment_dir_refused(exc) from None
    if hand.source == "mano":
        try:
            hand.get()   # loaded and validated once; the runs of this process reuse it
        except ValueError as exc:
            raise ValueError(f"IH_MANO_DIR: {exc}; allowed: a folder holding MANO_RIGHT and "
                             "MANO_LEFT (.pkl or .npz)") from None
    for uri in source.interhand_mano_files:
        if not uri.startswith("s3://"):
            try:
                userfiles.open_file(uri).close()
            except userfiles.UserFileError as exc:
                raise ValueError(f"IH_INTERHAND_MANO_FILES: {exc}; allowed: comma-separated regular files or "
                                 "s3://bucket/key URIs") from None


def check_environment_maps(settings: Any) -> None:
    """Decode every map of ``IH_ENVIRONMENT_DIR`` (a one-line refusal naming a bad one); done only
    when ``environment_maps`` is about to copy them, as decoding large maps takes a while."""
    try:
        envmaps.read_map_folder(settings.environment_dir)
    except ValueError as exc:
        raise _environment_dir_refused(exc) from None


def environment_folder_changed(instance: DagsterInstance, settings: Any) -> list[str]:
    """``["files in IH_ENVIRONMENT_DIR changed"]`` when the folder's digest differs from the one
    ``environment_maps`` recorded: the library follows the folder, not just its path."""
    rec = versions.latest_materialization(instance, AssetKey("environment_maps"), None)
    if not settings.environment_dir or rec is None:
        return []
    recorded = rec.asset_materialization.metadata.get("source_digest")
    now = userfiles.folder_digest(settings.environment_dir, envmaps.LIBRARY_EXTENSIONS)
    return [] if recorded is not None and recorded.value == now else ["files in IH_ENVIRONMENT_DIR changed"]


def _plan(defs: Any, instance: DagsterInstance, store: Store, keys: list[AssetKey], partition: str | None,
          refresh: bool) -> dict[AssetKey, list[str]]:
    graph = defs.resolve_asset_graph()
    ordered = [k for k in graph.toposorted_asset_keys if k in set(keys)]
    if refresh:
        return {k: ["--refresh"] for k in ordered}
    if partition is not None and any(removed_shards.live_materialization(instance, k, partition) is None
                                     and versions.latest_materialization(instance, k, partition) is not None
                                     for k in ordered):
        return {k: ["its objects were deleted when the shard was removed"] for k in ordered}
    plan = versions.reasons_to_materialize(instance, graph, keys, partition, defs.resources["settings"], store)
    maps = AssetKey("environment_maps")
    changed = environment_folder_changed(instance, defs.resources["settings"]) if maps in keys and maps not in plan else []
    return {**plan, maps: changed} if changed else plan


def _explain(plan: dict[AssetKey, list[str]]) -> str:
    return "; ".join(f"{k.to_user_string()} ({', '.join(r)})" for k, r in plan.items())


def _failure(result: Any) -> str:
    """One line per failed step: the step and its innermost error's first line (the full error
    and traceback are in Dagster's log above and in the UI)."""
    lines = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None and error.cause is not None:
            error = error.cause
        message = error.message.strip().splitlines()[0] if error is not None and error.message.strip() else "?"
        lines.append(f"{event.step_key}: {message}")
    return "; ".join(lines) or "see the run in the Dagster UI"


def shard_objects(store: Any, prefix: str, folders: list[str], shard: str) -> list[str]:
    """Keys of ``shard``'s objects: ``<prefix>/<folder>/<shard>/...`` and ``<folder>/<shard>.<ext>``
    for each folder; one LIST per form and folder, never of the whole bucket."""
    keys = []
    for folder in folders:
        base = "/".join(p for p in (prefix, folder, shard) if p)
        keys += store.list_keys(base + "/") + store.list_keys(base + ".")
    return keys


def remove_shards(instance: DagsterInstance, store: Any, prefix: str, part_keys: list[AssetKey],
                  current: set[str]) -> dict[str, int]:
    """Delete the objects of shards that no longer exist and mark their records removed;
    ``shard -> objects deleted``. Candidates: shards with a live materialization of a per-shard
    asset that are not registered, and those ``deduped_poses`` last unregistered (their images
    may exist without a materialization when a render was killed)."""
    dedup = versions.latest_materialization(instance, AssetKey("deduped_poses"), None)
    unregistered = set(dedup.asset_materialization.metadata["removed_shards"].value) if dedup and \
        "removed_shards" in dedup.asset_materialization.metadata else set()
    recorded = {s for k in part_keys for s in instance.get_materialized_partitions(k)}
    folders = ["/".join(k.path) for k in part_keys] + list(SHARD_FOLDERS)
    removed = {}
    for shard in sorted((recorded | unregistered) - current):
        live = [k for k in part_keys if removed_shards.live_materialization(instance, k, shard) is not None]
        if not live and shard not in unregistered:
            continue   # removed by an earlier run
        keys = shard_objects(store, prefix, folders, shard)
        for key in keys:
            store.delete(key)
        removed_shards.record_removal(instance, live, shard, len(keys))
        if keys or live:
            removed[shard] = len(keys)
    return removed


def unfinalizable_shards(defs: Any, instance: DagsterInstance, keys: list[AssetKey], shards: list[str]) -> list[str]:
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


def _print_optimization_summary(instance: DagsterInstance, shards: list[str]) -> None:
    """Before/after figures of the optimization, per shard, from the materialization metadata."""
    key = AssetKey("optimized_poses")
    for shard in shards:
        rec = removed_shards.live_materialization(instance, key, shard)
        if rec is not None and "summary" in rec.asset_materialization.metadata:
            log(f"optimization {shard}: {rec.asset_materialization.metadata['summary'].value}")


def _dataset_line(instance: DagsterInstance) -> str:
    rec = versions.latest_materialization(instance, AssetKey("dataset_manifest"), None)
    if rec is None:
        return "no dataset manifest yet"
    meta = rec.asset_materialization.metadata
    where = meta["uri"].value if "uri" in meta else "?"
    return f"{meta['images'].value if 'images' in meta else '?'} annotated images, manifest {where}"


def run(refresh: bool = False, shards: list[str] | None = None, wait: bool = False) -> int:
    home = os.environ.get("DAGSTER_HOME") or DagsterInstance.get().root_directory   # unset: Dagster's own error
    # the lock comes first: a second job is refused in seconds, and two jobs never create a fresh
    # instance's SQLite databases at the same time
    with instance_lock(home, wait, log):
        instance = DagsterInstance.get()
        from ih_assets.definitions import FINAL_JOB, PARTITIONED_JOB, UNPARTITIONED_JOB, defs  # reads the settings

        check_inputs(defs.resources)
        storage = defs.resources["storage"].process_config_and_initialize()  # resolves EnvVar settings
        store = storage.object_store()
        unpart = defs.resolve_job_def(UNPARTITIONED_JOB)
        todo = _plan(defs, instance, store, sorted(unpart.asset_layer.executable_asset_keys), None, refresh)
        if AssetKey("environment_maps") in todo and defs.resources["settings"].environment_dir:
            check_environment_maps(defs.resources["settings"])
        with bucket_lease(store, storage.prefix, wait, log):
            return _run(defs, instance, store, storage, refresh, shards, todo, (UNPARTITIONED_JOB, PARTITIONED_JOB, FINAL_JOB))


def _run(defs: Any, instance: DagsterInstance, store: Any, storage: Any, refresh: bool, shards: list[str] | None,
         todo: dict[AssetKey, list[str]], jobs: tuple[str, str, str]) -> int:
    """The three jobs in order; ``todo`` is the plan of the unpartitioned assets."""
    started = time.monotonic()
    tags = run_tags()
    made: Counter[str] = Counter()
    for run_id in fail_runs_of_dead_processes(instance):
        log(f"run {run_id} of a killed main job marked failed; its pool slots are free")

    unpart = defs.resolve_job_def(jobs[0])
    if todo:
        log(f"materializing {_explain(todo)}")
        result = unpart.execute_in_process(instance=instance, asset_selection=list(todo), tags=tags, raise_on_error=False)
        made.update(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())
        if not result.success:
            print(f"[main] FAILED: the unpartitioned assets, shards not started: {_failure(result)}", file=sys.stderr)
            return 1
    else:
        log("unpartitioned assets up to date (use --refresh to redo)")

    all_shards = instance.get_dynamic_partitions(POSE_SHARDS_NAME)
    part = defs.resolve_job_def(jobs[1])
    part_keys = sorted(part.asset_layer.executable_asset_keys)
    removed = remove_shards(instance, store, storage.prefix, part_keys, set(all_shards))
    if removed:
        log(f"removed {sum(removed.values())} objects of shards that no longer exist ({', '.join(removed)}); "
            "their Dagster records are marked removed")

    selected = shards or all_shards
    failed, done_seconds = [], []
    for i, shard in enumerate(selected, 1):
        todo = _plan(defs, instance, store, part_keys, shard, refresh)
        if not todo:
            continue
        eta = (f", ETA {sum(done_seconds) / len(done_seconds) * (len(selected) - i + 1):.0f} s for the rest"
               if done_seconds else "")
        log(f"shard {shard} ({i}/{len(selected)}{eta}): {_explain(todo)}")
        t0 = time.monotonic()
        result = part.execute_in_process(instance=instance, partition_key=shard, asset_selection=list(todo),
                                         tags=tags, raise_on_error=False)
        made.update(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())
        done_seconds.append(time.monotonic() - t0)
        log(f"shard {shard} {'done' if result.success else 'FAILED'} in {done_seconds[-1]:.0f} s")
        if not result.success:
            print(f"[main] FAILED: shard {shard}: {_failure(result)}", file=sys.stderr)
            failed.append(shard)
    mismatched = unfinalizable_shards(defs, instance, part_keys, all_shards)
    if mismatched:
        print("[main] not finalizing, the manifest would describe data that was not made: "
              + "; ".join(mismatched), file=sys.stderr)
        failed.append("dataset_manifest")
    else:
        log("finalizing: dataset manifest")
        result = defs.resolve_job_def(jobs[2]).execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        made.update(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())
        if not result.success:
            print(f"[main] FAILED: finalizing: {_failure(result)}", file=sys.stderr)
            failed.append("dataset_manifest")
    _print_optimization_summary(instance, all_shards)
    summary = ", ".join(f"{name} x{n}" for name, n in sorted(made.items())) or "nothing"
    bucket = getattr(storage, "bucket", None) or type(storage).__name__
    log(f"done in {time.monotonic() - started:.0f} s; {len(all_shards)} shards in bucket {bucket!r} under prefix "
        f"{storage.prefix!r}; materialized in this run: {summary}; {_dataset_line(instance)}")
    if failed:
        print(f"[main] FAILED: {', '.join(failed)} (see the runs in the Dagster UI)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    # backfill policies and partitioned checks are marked beta/preview: say so once, not per step
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    debug, argv = cli_errors.debug_requested(sys.argv[1:] if argv is None else list(argv))
    parser = cli_errors.OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true", help="re-materialize assets that already exist")
    parser.add_argument("--shard", action="append", help="only this shard (repeatable)")
    parser.add_argument("--wait", action="store_true",
                        help="wait for a main job already running on this instance or bucket instead of refusing")
    parser.add_argument(cli_errors.DEBUG_FLAG, action="store_true", help="tracebacks instead of one-line errors "
                                                                         f"(also {cli_errors.DEBUG_ENV}=1)")
    args = parser.parse_args(argv)

    def body() -> int:
        try:
            return run(args.refresh, args.shard, args.wait)
        except JobLockedError as exc:
            print(f"{PROG}: refused: {exc}", file=sys.stderr)
            return EXIT_LOCKED

    return cli_errors.run_reporting(body, PROG, debug)


if __name__ == "__main__":
    sys.exit(main())
