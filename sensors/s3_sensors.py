"""Sensors on object storage, with cursors that count a file as processed only once its run succeeded.

- ``new_interhand_files``: a new ``*_MANO_NeuralAnnot.json`` under ``IH_INTERHAND_WATCH_PREFIX``
  starts the source chain (one run of ``prepare_sources`` per tick that finds new files).
- ``new_library_files``: a new environment map (``handsynth.envmaps.LIBRARY_EXTENSIONS``) under
  ``library/`` re-materializes ``environment_maps`` when ``IH_RERENDER_ON_NEW_LIBRARY`` is true
  (the nightly schedule then re-renders the shards it makes stale); otherwise the files are
  only recorded as seen.

The cursor (JSON) holds ``done``, the sorted keys whose run succeeded (annotation files and
library maps number in the tens, not millions), and ``pending``, run key -> keys of runs
requested but not finished. Each tick looks the pending runs up by their run key: a success moves
their keys to ``done``; a failure or cancellation returns them to "new", so the next request
retries them under a fresh run key (Dagster never launches two runs with one key).
"""

from __future__ import annotations

import hashlib
import json
import os

from dagster import (AssetKey, DagsterInstance, DagsterRunStatus, RunRequest, RunsFilter, SensorEvaluationContext,
                     SensorResult, sensor)

from handsynth.envmaps import LIBRARY_EXTENSIONS
from resources.storage import StorageResource

SOURCE_JOB = "prepare_sources"
RUN_KEY_TAG = "dagster/run_key"
_FAILED = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def _run_status(instance: DagsterInstance, run_key: str) -> DagsterRunStatus | None:
    runs = instance.get_runs(filters=RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
    return runs[0].status if runs else None


def _settle(context: SensorEvaluationContext, state: dict) -> list[str]:
    """Apply the outcome of finished runs to ``state``; returns a line per change for the tick log."""
    notes = []
    for run_key, keys in list(state["pending"].items()):
        status = _run_status(context.instance, run_key)
        if status == DagsterRunStatus.SUCCESS:
            state["done"] = sorted(set(state["done"]) | set(keys))
            del state["pending"][run_key]
        elif status in _FAILED:
            del state["pending"][run_key]
            notes.append(f"run {run_key} ended {status.value}: {len(keys)} files will be retried")
    return notes


def _scan(context: SensorEvaluationContext, storage: StorageResource, prefix: str,
          suffixes: tuple[str, ...]) -> tuple[dict, list[str], list[str]]:
    """``(state, new keys, notes)``: keys under ``prefix`` neither done nor in a pending run."""
    state = json.loads(context.cursor) if context.cursor else {}
    state = {"done": state.get("done", []), "pending": state.get("pending", {}), "requests": state.get("requests", 0)}
    notes = _settle(context, state)
    full = "/".join(p.strip("/") for p in (storage.prefix, prefix) if p.strip("/"))
    keys = {k for k in storage.object_store().list_keys(full + "/") if k.endswith(suffixes)}
    in_flight = {k for ks in state["pending"].values() for k in ks}
    return state, sorted(keys - set(state["done"]) - in_flight), notes


def _request(kind: str, new: list[str], state: dict, **request_args) -> RunRequest:
    """A run request for ``new`` under a run key never used before; recorded as pending."""
    state["requests"] += 1
    digest = hashlib.sha256("\n".join(new).encode()).hexdigest()[:16]
    run_key = f"{kind}:{digest}:{state['requests']}"
    state["pending"][run_key] = new
    return RunRequest(run_key=run_key, **request_args)


def _result(state: dict, requests: list[RunRequest], skip: str, notes: list[str]) -> SensorResult:
    return SensorResult(run_requests=requests, cursor=json.dumps(state, sort_keys=True),
                        skip_reason=None if requests else "; ".join([*notes, skip]))


@sensor(job_name=SOURCE_JOB, minimum_interval_seconds=60, description="New InterHand2.6M MANO files start the source chain.")
def new_interhand_files(context: SensorEvaluationContext, storage: StorageResource):
    state, new, notes = _scan(context, storage, os.environ.get("IH_INTERHAND_WATCH_PREFIX", "incoming/interhand"),
                              ("_MANO_NeuralAnnot.json",))
    if not new:
        return _result(state, [], "no new InterHand2.6M annotation files", notes)
    return _result(state, [_request("interhand", new, state, tags={"renderih/new_files": ",".join(new)[:1000]})], "", notes)


@sensor(job_name=SOURCE_JOB, minimum_interval_seconds=300,
        description="New environment maps refresh environment_maps when re-rendering is enabled.")
def new_library_files(context: SensorEvaluationContext, storage: StorageResource):
    state, new, notes = _scan(context, storage, "library", LIBRARY_EXTENSIONS)
    if not new:
        return _result(state, [], "no new library files", notes)
    if os.environ.get("IH_RERENDER_ON_NEW_LIBRARY", "").lower() not in ("1", "true", "yes"):
        state["done"] = sorted(set(state["done"]) | set(new))  # nothing to run: seen is done
        return _result(state, [], f"{len(new)} new library files; re-rendering on library changes is off", notes)
    return _result(state, [_request("library", new, state, asset_selection=[AssetKey("environment_maps")])], "", notes)
