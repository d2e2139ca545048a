"""Sensors on object storage, with cursors so nothing is processed twice.

- ``new_interhand_files``: a new ``*_MANO_NeuralAnnot.json`` under ``IH_INTERHAND_WATCH_PREFIX``
  starts the source chain (one run of ``prepare_sources`` per tick that finds new files).
- ``new_library_files``: a new ``.hdr`` / ``.exr`` map or texture under ``library/`` re-materializes
  ``environment_maps`` when ``IH_RERENDER_ON_NEW_LIBRARY`` is true (the nightly schedule then
  re-renders the shards it makes stale); otherwise it only advances its cursor.

The cursor is the sorted list of keys already seen (annotation files and library maps number in
the tens, not millions), stored as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os

from dagster import AssetKey, RunRequest, SensorEvaluationContext, SkipReason, sensor

from resources.storage import StorageResource

SOURCE_JOB = "prepare_sources"
LIBRARY_SUFFIXES = (".hdr", ".exr", ".png", ".jpg")


def _new_keys(context: SensorEvaluationContext, storage: StorageResource, prefix: str, suffixes: tuple[str, ...]) -> tuple[list[str], set[str]]:
    seen = set(json.loads(context.cursor)["seen"]) if context.cursor else set()
    full = "/".join(p.strip("/") for p in (storage.prefix, prefix) if p.strip("/"))
    keys = {k for k in storage.object_store().list_keys(full + "/") if k.endswith(suffixes)}
    return sorted(keys - seen), seen | keys


def _digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


@sensor(job_name=SOURCE_JOB, minimum_interval_seconds=60, description="New InterHand2.6M MANO files start the source chain.")
def new_interhand_files(context: SensorEvaluationContext, storage: StorageResource):
    new, seen = _new_keys(context, storage, os.environ.get("IH_INTERHAND_WATCH_PREFIX", "incoming/interhand"),
                          ("_MANO_NeuralAnnot.json",))
    if not new:
        return SkipReason("no new InterHand2.6M annotation files")
    context.update_cursor(json.dumps({"seen": sorted(seen)}))
    return RunRequest(run_key=f"interhand:{_digest(new)}", tags={"renderih/new_files": ",".join(new)[:1000]})


@sensor(job_name=SOURCE_JOB, minimum_interval_seconds=300,
        description="New HDR maps or textures refresh environment_maps when re-rendering is enabled.")
def new_library_files(context: SensorEvaluationContext, storage: StorageResource):
    new, seen = _new_keys(context, storage, "library", LIBRARY_SUFFIXES)
    if not new:
        return SkipReason("no new library files")
    context.update_cursor(json.dumps({"seen": sorted(seen)}))
    if os.environ.get("IH_RERENDER_ON_NEW_LIBRARY", "").lower() not in ("1", "true", "yes"):
        return SkipReason(f"{len(new)} new library files; re-rendering on library changes is off")
    return RunRequest(run_key=f"library:{_digest(new)}", asset_selection=[AssetKey("environment_maps")])

