"""Dagster IO manager that keeps each asset output as one object in an :class:`ObjectStore`.

Layout: ``<prefix>/<asset key path>/<name><ext>`` with ``name`` = ``all`` for an unpartitioned
asset and the partition key (``shard=00012``) otherwise; ``ext`` names the codec
(``resources.codecs``), so loading finds the object by listing ``<...>/<name>.`` and needs no
type annotation. An output is written with a single PUT, so a killed run leaves the previous
object or the new one, never half of one.
"""

from __future__ import annotations

from typing import Any

from dagster import InputContext, IOManager, MetadataValue, OutputContext

from resources.codecs import CodecError, decode, encode, split_extension
from resources.object_store import ObjectNotFoundError, ObjectStore, StorageError

#: Object name of an unpartitioned output.
UNPARTITIONED = "all"


class ObjectStoreIOManager(IOManager):
    """Store asset outputs in ``store`` under ``prefix``; see the module docstring for the layout."""

    def __init__(self, store: ObjectStore, prefix: str = "") -> None:
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
        context.add_output_metadata(
            {"uri": MetadataValue.path(self.store.uri(key)), "key": key, "bytes": len(data), "format": ext}
        )

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
        values = {n: decode(found[n], self.store.get_bytes(found[n])) for n in names if n in found}
        return values[names[0]] if single else values
