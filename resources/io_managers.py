"""Dagster IO manager that keeps each asset output as one object in a :class:`Store`.

Layout: ``<prefix>/<asset key path>/<name><ext>`` with ``name`` = ``all`` for an unpartitioned
asset and the partition key (``shard=00012``) otherwise; ``ext`` names the codec
(``resources.codecs``), so loading finds the object by listing ``<...>/<name>.`` and needs no
type annotation. An output is written atomically (one PUT on S3, temp file + rename locally), so
a killed run leaves the previous object or the new one, never half of one.

Integrity: every stored output's ``key``, ``bytes`` and ``sha256`` go into its materialization
metadata, and loading checks the object against the latest materialization of that asset
(partition) when the run has an instance: a truncated or altered object fails with one line
naming it (:class:`IntegrityError`) instead of a decoder's traceback, and the main job uses the
same record to re-make exactly the objects that are missing or corrupted.

Why not Dagster's ``UPathIOManager``: it fixes one extension per IO manager and builds paths
without looking, while here the codec (and so the extension) follows the value's type and a
load finds it by listing; it hands an unpartitioned consumer of one upstream shard a bare value
where this pipeline's consumers always get ``{partition: value}``; it writes through fsspec
files, which complete an upload even when the write fails part way; and it has no place to check
content against records. Overriding all of that would leave nothing of the base class.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from dagster import (AssetKey, AssetRecordsFilter, DagsterInstance, DagsterInvariantViolationError, InputContext,
                     IOManager, MetadataValue, OutputContext)

from handsynth.storage import ObjectNotFoundError, Store, StorageError, sha256_hex
from handsynth.verify import Record
from resources.codecs import CodecError, decode, encode, split_extension
from resources.removed_shards import live_materialization

#: Object name of an unpartitioned output.
UNPARTITIONED = "all"


def recorded_object(metadata: Mapping[str, Any]) -> tuple[str, int, str] | None:
    """``(key, bytes, sha256)`` of the object a materialization's metadata records, or None when
    it records none (a materialization made before hashes were recorded, or by another IO manager)."""
    values = {k: getattr(metadata.get(k), "value", metadata.get(k)) for k in ("key", "bytes", "sha256")}
    if not all(isinstance(values[k], t) for k, t in (("key", str), ("bytes", int), ("sha256", str))):
        return None
    return values["key"], values["bytes"], values["sha256"]


#: Metadata of a materialization naming the objects its asset wrote besides its output (such as
#: the environment-map library), ``{key: {"bytes": n, "sha256": hex}}``: they are verified like
#: the output (by ``ih-pipeline verify`` and before the main job skips the asset).
WRITTEN_OBJECTS = "written_objects"


def written_objects(metadata: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    """``(key, bytes, sha256)`` of each object :data:`WRITTEN_OBJECTS` records (none when absent)."""
    value = getattr(metadata.get(WRITTEN_OBJECTS), "value", None)
    if not isinstance(value, dict):
        return []
    return [(key, rec["bytes"], rec["sha256"]) for key, rec in sorted(value.items())
            if isinstance(rec, dict) and isinstance(rec.get("bytes"), int) and isinstance(rec.get("sha256"), str)]


def latest_materialization(instance: DagsterInstance, key: AssetKey, partition: str | None):
    """The newest materialization record of ``key`` (in ``partition``), or None."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    return records[0] if records else None


def recorded_objects(instance: DagsterInstance, store: Store) -> Iterator[Record]:
    """The objects each asset (partition) records last, its output and those it wrote besides
    (:data:`WRITTEN_OBJECTS`), for every output stored in ``store`` (its recorded ``uri`` names
    this store); partitions of removed shards are left out. One record at a time: a data set of
    many shards is never held whole."""
    for asset in sorted(instance.get_asset_keys(), key=lambda k: k.to_user_string()):
        partitions = sorted(instance.get_materialized_partitions(asset))
        for partition in partitions or [None]:
            rec = (live_materialization(instance, asset, partition) if partition is not None
                   else latest_materialization(instance, asset, None))
            meta = rec.asset_materialization.metadata if rec is not None else {}
            found = recorded_object(meta)
            uri = getattr(meta.get("uri"), "value", None)
            if found is not None and uri == store.uri(found[0]):
                what = asset.to_user_string() + (f"[{partition}]" if partition else "")
                yield Record(what, *found)
                for written in written_objects(meta):
                    yield Record(f"{what}, written besides its output", *written)


class ObjectStoreIOManager(IOManager):
    """Store asset outputs in ``store`` under ``prefix``; see the module docstring for the layout."""

    def __init__(self, store: Store, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix.strip("/")

    # ---- paths -------------------------------------------------------------------------------
    def folder(self, context: InputContext | OutputContext) -> str:
        """``<prefix>/<asset key path>``; for plain op outputs ``<prefix>/<run id>/<step>/<output>``."""
        if context.has_asset_key:
            parts = list(context.asset_key.path)
        else:
            parts = list(context.upstream_output.get_identifier() if isinstance(context, InputContext)
                         else context.get_identifier())
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _find(self, folder: str, names: list[str]) -> dict[str, str]:
        """Stored key per wanted object name. One LIST: of ``<folder>/<name>.`` for one name,
        of the whole folder for several (a fan-in over all shards costs one paginated LIST)."""
        wanted = set(names)
        prefix = f"{folder}/{names[0]}." if len(names) == 1 else f"{folder}/"
        found: dict[str, str] = {}
        for key in self.store.list_keys(prefix):
            try:
                name = split_extension(key[len(folder) + 1:])[0]
            except CodecError:
                continue  # a foreign file next to ours: not one of our objects
            if name not in wanted:
                continue
            if name in found:
                raise StorageError(
                    f"{self.store.uri(found[name])} and {self.store.uri(key)}: two formats stored for one "
                    "output (a write was interrupted after a type change); delete the stale one or re-materialize"
                )
            found[name] = key
        return found

    # ---- IOManager ---------------------------------------------------------------------------
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        """PUT the encoded value, then delete a copy in another format left by an older type."""
        folder = self.folder(context)
        if context.has_asset_key and context.has_asset_partitions:
            keys = context.asset_partition_keys
            if len(keys) != 1:
                raise StorageError(
                    f"{self.store.uri(folder)}: one output for {len(keys)} partitions ({keys[0]} .. {keys[-1]}); "
                    "this IO manager stores one object per partition: launch the backfill as one run per partition"
                )
            name = str(keys[0])
        else:
            name = UNPARTITIONED
        ext, data = encode(obj, where=f"{self.store.uri(folder)}/{name}")
        key = f"{folder}/{name}{ext}"
        stale = [k for k in self._find(folder, [name]).values() if k != key]
        self.store.put_bytes(key, data)
        for old in stale:
            self.store.delete(old)
        context.add_output_metadata({"uri": MetadataValue.path(self.store.uri(key)), "key": key, "bytes": len(data),
                                     "sha256": sha256_hex(data), "format": ext})

    def load_input(self, context: InputContext) -> Any:
        """The stored value; for several upstream partitions a dict ``partition key -> value``.

        A single value is returned only when this run is partitioned and maps to exactly one
        upstream partition; an unpartitioned consumer always gets a dict, even of one shard, so
        its code does not change with the number of shards. Input metadata
        ``allow_missing_partitions=True`` skips partitions that were never stored.
        """
        folder = self.folder(context)
        if context.has_asset_key and context.has_asset_partitions:
            names = [str(k) for k in context.asset_partition_keys]
            single = context.has_partition_key and len(names) == 1
        else:
            names, single = [UNPARTITIONED], True
        if not names:
            return {}
        found = self._find(folder, names)
        missing = [n for n in names if n not in found]
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions", False))
        if missing and (single or not allow_missing):
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ObjectNotFoundError(
                f"{self.store.uri(folder)}: nothing stored for {shown} (materialize the upstream asset first)"
            )
        records = self._records(context, [n for n in names if n in found])
        values = {n: decode(found[n], self._read(found[n], records.get(n))) for n in names if n in found}
        return values[names[0]] if single else values

    def _records(self, context: InputContext, names: list[str]) -> dict[str, tuple[str, int, str]]:
        """The recorded object per name, from the instance's latest materializations (none when
        the context has no instance, e.g. a direct ``build_input_context``)."""
        try:
            instance = context.instance
        except DagsterInvariantViolationError:
            return {}
        if not context.has_asset_key:
            return {}
        partitioned = context.has_asset_partitions
        out = {}
        for name in names:
            rec = latest_materialization(instance, context.asset_key, name if partitioned else None)
            found = recorded_object(rec.asset_materialization.metadata) if rec is not None else None
            if found is not None:
                out[name] = found
        return out

    def _read(self, key: str, record: tuple[str, int, str] | None) -> bytes:
        """The stored bytes, verified against ``record`` when it describes this key."""
        if record is None or record[0] != key:
            return self.store.get_bytes(key)
        return self.store.get_verified(key, record[1], record[2])
