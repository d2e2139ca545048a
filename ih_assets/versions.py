"""What an asset (partition) was made from, and why it must be made again.

Every materialization records three things, so that a re-run can tell a stale object from a
current one without trusting that "it exists":

- **code version** (``code_version=`` on each ``@asset``). Bump rule: bump an asset's code
  version when a change to its body *or to the handsynth code it calls* can change its output
  (new formula, fixed bug, new column); do not bump for logging, metadata or refactors that keep
  outputs byte-identical. Downstream assets are not bumped: they go stale through data versions.
- **settings** it depends on: the fields of :class:`PipelineSettings` listed per asset in
  :data:`SETTINGS_FIELDS`, recorded as metadata ``settings`` (values) and ``settings_digest``.
- **data version**: a hash of the stored bytes (:func:`content_version`), so an upstream that is
  re-made with identical content does not make its consumers stale. Dagster records the input
  data versions of every materialization in its tags (``dagster/input_data_version/<key>``).

:func:`reasons_to_materialize` compares these records with the current code and settings.
Dagster's own stale status (``CachingStaleStatusResolver``) sees code and data versions but not
settings (they are a resource, not an input), so it would call a shard rendered with 1 view
"fresh" after ``IH_N_VIEWS=2`` (``tests/test_rerun.py`` shows it); hence this module.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from typing import Any, Mapping, Sequence

from dagster import AssetCheckKey, AssetExecutionContext, AssetKey, DagsterInstance, DataVersion, MetadataValue
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.data_version import CODE_VERSION_TAG, DATA_VERSION_TAG, DataProvenance
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.execution.context.invocation import BaseDirectExecutionContext
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from handsynth import verify
from handsynth.storage import IntegrityError, ObjectNotFoundError, Store
from resources.codecs import decode, encode
from resources.io_managers import latest_materialization, recorded_object, written_objects
from resources.settings import PipelineSettings

#: Settings fields each asset's output depends on (``fnmatch`` patterns, so fields other branches
#: add, such as ``renderer`` or ``cycles_samples``, are covered when they appear). A field missing
#: from the settings is ignored; a field no asset lists fails ``tests/test_rerun.py``.
SETTINGS_FIELDS: dict[str, tuple[str, ...]] = {
    "raw_poses": ("seed", "n_procedural_poses", "interhand_*"),
    "deduped_poses": ("dedup_threshold_mm", "shard_size"),
    "augmented_poses": ("seed", "n_augmentations", "augment_*"),
    "hand_anchors": ("seed", "n_anchors_per_hand"),
    "pose_discriminator": ("seed", "discriminator_*"),
    "optimized_poses": ("seed", "optimize_*"),
    "environment_maps": ("seed", "n_environment_maps", "environment_dir", "envmap_*"),
    "rendered_views": ("seed", "n_views", "image_size", "renderer", "render_*", "denoise", "cycles_*", "camera_*",
                       "depth_of_field", "forearms", "sleeve_*", "accessory_*"),
    "annotations": (),
    "dataset_manifest": ("*",),   # it records the whole configuration
    "dataset_exports": ("export_*",),
}
#: Assets whose stored table locates images in render blocks (``handsynth.render.blocks``): when
#: one would be skipped, the blocks its table references are checked as well.
BLOCK_TABLES = ("rendered_views",)
#: Damaged blocks named per asset and shard in the main job's plan line (the rest are counted).
SHOWN_PROBLEMS = 3
#: Fields that change no output: the preset only names a set of values; the number of render
#: workers only decides how many blocks render at once.
UNVERSIONED_SETTINGS = ("preset", "render_workers")


def relevant_settings(settings: PipelineSettings, asset: str) -> dict[str, Any]:
    """The values of the settings fields ``asset`` depends on (see :data:`SETTINGS_FIELDS`)."""
    patterns = SETTINGS_FIELDS.get(asset, ())
    values = settings.record()
    return {name: values[name] for name in sorted(values)
            if name not in UNVERSIONED_SETTINGS and any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def settings_digest(values: Mapping[str, Any]) -> str:
    """A short stable hash of settings values (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def content_version(value: Any) -> DataVersion:
    """A data version from the bytes the IO manager stores (the codecs are deterministic)."""
    return DataVersion(hashlib.sha256(encode(value)[1]).hexdigest()[:16])


def record(context: AssetExecutionContext, value: Any, settings: PipelineSettings | None = None) -> None:
    """Record on the materialization being made: the content hash as its data version and,
    with ``settings``, the values and digest of the settings this asset depends on. A direct
    call of the asset function (``build_asset_context()``) stores nothing, so it gets no version."""
    if not isinstance(context, BaseDirectExecutionContext):
        context.set_data_version(context.asset_key, content_version(value))
    if settings is not None:
        used = relevant_settings(settings, context.asset_key.to_user_string())
        context.add_output_metadata({"settings": MetadataValue.json(used), "settings_digest": settings_digest(used)})


def recorded_settings(instance: DagsterInstance, key: AssetKey, partitions: Sequence[str | None]) -> dict[str | None, dict]:
    """The settings each partition of ``key`` was actually made with (from its latest
    materialization); for manifests that must describe what was made, not the current env."""
    out = {}
    for partition in partitions:
        rec = latest_materialization(instance, key, partition)
        if rec is not None and "settings" in rec.asset_materialization.metadata:
            out[partition] = dict(rec.asset_materialization.metadata["settings"].value)
    return out


def _failed_blocking_checks(instance: DagsterInstance, checks: Sequence[AssetCheckKey], partition: str | None) -> list[str]:
    if not checks:
        return []
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        list(checks), partition_filter=PartitionKeyFilter(key=partition))
    return [f"blocking check {c.name} {'never ran' if c not in latest else 'did not pass'}"
            for c in checks if c not in latest or latest[c].status != AssetCheckExecutionRecordStatus.SUCCEEDED]


def _settings_change(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    changed = [f"{k} {recorded.get(k, '(unset)')!r} -> {current.get(k, '(unset)')!r}"
               for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    return "settings changed: " + ", ".join(changed)


def _as_input_version(version: str, partitioned: bool) -> str:
    """The input data version Dagster records for ``version``: for a partitioned input it is the
    SHA-256 of the concatenated versions of the partitions read (here one, the same shard)."""
    return hashlib.sha256(version.encode()).hexdigest() if partitioned else version


def stored_object_problem(store: Store, metadata: Mapping[str, Any]) -> str | None:
    """Why the objects a materialization recorded cannot be trusted (its output or one it wrote
    besides, :data:`resources.io_managers.WRITTEN_OBJECTS`, is missing or differs in size or
    SHA-256 from its record), or None when they match or none was recorded. Costs a HEAD per
    object and, when the size matches, a streamed GET."""
    recorded = recorded_object(metadata)
    for key, size, sha256 in ([recorded] if recorded else []) + written_objects(metadata):
        try:
            store.verify(key, size, sha256)
        except ObjectNotFoundError:
            return f"stored object missing ({store.uri(key)})"
        except IntegrityError as exc:
            return f"stored object corrupted ({exc.short()}: {exc.uri})"
    return None


def stored_blocks_problem(store: Store, metadata: Mapping[str, Any]) -> str | None:
    """Why the render blocks a materialization's stored table references cannot be trusted (a
    block missing, a tar of another size or SHA-256 than its index records, a row that does not
    match the block's index; :func:`handsynth.verify.table_block_problems`), or None. Reads the
    table and every block it references."""
    recorded = recorded_object(metadata)
    if recorded is None:
        return None
    key, size, sha256 = recorded
    first: dict[str, str] = {}   # tar key -> its first problem (the images' follow from the tar's)
    for tar_key, problem in verify.table_block_problems(store, decode(key, store.get_verified(key, size, sha256)),
                                                        verify.Tally()):
        first.setdefault(tar_key, problem)
    if not first:
        return None
    more = f"; and {len(first) - SHOWN_PROBLEMS} more blocks" if len(first) > SHOWN_PROBLEMS else ""
    return f"render blocks damaged: {'; '.join(list(first.values())[:SHOWN_PROBLEMS])}{more}"


def reasons_to_materialize(instance: DagsterInstance, graph: AssetGraph, keys: Sequence[AssetKey],
                           partition: str | None, settings: PipelineSettings | None,
                           store: Store | None = None) -> dict[AssetKey, list[str]]:
    """For each of ``keys`` (same partitioning, any order) the reasons it must be materialized
    again, in topological order; assets without reasons are left out.

    Reasons: never materialized; a blocking check that did not pass on it; code version changed;
    settings it depends on changed; an input whose data version differs from the one it was made
    from; an upstream among ``keys`` that is re-materialized now (whose new version is unknown yet);
    with ``store``, the stored object of an asset that would be skipped is missing or corrupted,
    and for :data:`BLOCK_TABLES` so is a render block its table references (only skipped assets
    are read: a hash costs a GET).
    """
    order = [k for k in graph.toposorted_asset_keys if k in set(keys)]
    plan: dict[AssetKey, list[str]] = {}
    for key in order:
        node = graph.get(key)
        part = partition if node.is_partitioned else None
        rec = latest_materialization(instance, key, part)
        if rec is None:
            plan[key] = ["never materialized"]
            continue
        reasons = []
        blocking = [c for c in node.check_keys if graph.get_check_spec(c).blocking]
        reasons += _failed_blocking_checks(instance, blocking, part)
        tags = rec.asset_materialization.tags or {}
        if node.code_version is not None and tags.get(CODE_VERSION_TAG) != node.code_version:
            reasons.append(f"code version {tags.get(CODE_VERSION_TAG)} -> {node.code_version}")
        meta = rec.asset_materialization.metadata
        if settings is not None:
            current = relevant_settings(settings, key.to_user_string())
            recorded = meta["settings"].value if "settings" in meta else None
            if recorded is None and current:
                reasons.append("no settings recorded")
            elif recorded is not None and settings_digest(recorded) != settings_digest(current):
                reasons.append(_settings_change(recorded, current))
        provenance = DataProvenance.from_tags(tags)
        for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
            if parent in plan:
                reasons.append(f"upstream {parent.to_user_string()} is re-materialized")
                continue
            if not graph.has(parent) or (graph.get(parent).is_partitioned and not node.is_partitioned):
                continue  # fan-in over all shards: the caller always re-runs such summaries
            parent_partitioned = graph.get(parent).is_partitioned
            parent_rec = latest_materialization(instance, parent, partition if parent_partitioned else None)
            now = (parent_rec.asset_materialization.tags or {}).get(DATA_VERSION_TAG) if parent_rec else None
            used = provenance.input_data_versions.get(parent) if provenance else None
            if now is not None and (used is None or used.value != _as_input_version(now, parent_partitioned)):
                reasons.append(f"upstream {parent.to_user_string()} changed")
        if not reasons and store is not None:
            problem = stored_object_problem(store, meta)
            if problem is None and key.to_user_string() in BLOCK_TABLES:
                problem = stored_blocks_problem(store, meta)
            reasons += [problem] if problem else []
        if reasons:
            plan[key] = reasons
    return plan
