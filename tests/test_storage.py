"""Object stores, codecs and the IO manager, on a real SeaweedFS server and on the local / memory
backends (the same tests run on all three through the ``object_store`` fixture)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dagster import (
    AssetIn,
    AssetKey,
    PartitionKeyRange,
    StaticPartitionsDefinition,
    asset,
    build_input_context,
    build_output_context,
    materialize,
)

from handsynth.pose_table import HAND_PARAMS, SIDES, PoseTable, empty_meta, from_hands
from resources.codecs import CodecError, decode, encode
from resources.io_managers import ObjectStoreIOManager
from resources.object_store import LocalObjectStore, ObjectNotFoundError, ObjectStore, StorageError
from resources.storage import LocalStorage, MemoryStorage, S3Storage, io_manager_for
from tests.s3_fixtures import object_store, s3_storage, seaweed_server  # noqa: F401 (fixtures)

SHARDS = StaticPartitionsDefinition(["shard=00000", "shard=00001", "shard=00002"])
POSES = AssetKey(["poses", "deduped"])


def random_pose_table(n: int, seed: int) -> PoseTable:
    rng = np.random.default_rng(seed)
    meta = empty_meta(n)
    meta["pose_id"] = pd.array([f"s{seed}_p{i:03d}" for i in range(n)], dtype="string")
    meta["source"] = pd.array(["ih26m"] * n, dtype="string")
    meta["source_ref"] = pd.array([f"capture{i % 3}/frame{i}" for i in range(n)], dtype="string")
    meta["seed"] = rng.integers(0, 2**62, size=n, dtype=np.int64)
    hands = {s: {p: rng.normal(size=(n, k)) for p, k in HAND_PARAMS.items()} for s in SIDES}
    return from_hands(meta, hands)


def assert_same_poses(got: PoseTable, want: PoseTable) -> None:
    assert isinstance(got, PoseTable)
    # Values and column kinds; the string dtype's NA flavour is PoseTable's Parquet business.
    pd.testing.assert_frame_equal(got.meta, want.meta, check_dtype=False)
    assert got.meta["seed"].dtype == np.int64
    assert set(got.arrays) == set(want.arrays)
    for name, arr in want.arrays.items():
        assert got.arrays[name].dtype == np.float32
        np.testing.assert_array_equal(got.arrays[name], arr)


def store_output(io: ObjectStoreIOManager, value, key: AssetKey = POSES, partition: str | None = None) -> dict:
    """Hand ``value`` to the IO manager as asset ``key`` (one shard of it); returns the metadata."""
    with build_output_context(
        asset_key=key, partition_key=partition, asset_partitions_def=SHARDS if partition else None
    ) as ctx:
        io.handle_output(ctx, value)
        return ctx.consume_logged_metadata()


def load(io: ObjectStoreIOManager, key: AssetKey = POSES, partition: str | None = None,
         key_range: PartitionKeyRange | None = None, metadata: dict | None = None):
    """Load asset ``key`` as an input of a consumer run for ``partition`` (None = unpartitioned
    consumer); ``key_range`` = the upstream shards mapped to it, if the upstream is partitioned."""
    partitioned = partition is not None or key_range is not None
    with build_output_context(asset_key=key) as upstream, build_input_context(
        asset_key=key, asset_partitions_def=SHARDS if partitioned else None, partition_key=partition,
        asset_partition_key_range=key_range, definition_metadata=metadata, upstream_output=upstream,
    ) as ctx:
        return io.load_input(ctx)


# ---- object stores ------------------------------------------------------------------------------
def test_put_get_exists_delete(object_store: ObjectStore) -> None:
    key = "a/b/c.bin"
    assert not object_store.exists(key)
    object_store.put_bytes(key, b"first")
    object_store.put_bytes(key, b"second, longer")
    assert object_store.exists(key)
    assert object_store.get_bytes(key) == b"second, longer"
    object_store.delete(key)
    assert not object_store.exists(key)
    object_store.delete(key)  # deleting a missing key is a no-op, as in S3


def test_missing_key_is_a_key_error_naming_the_key(object_store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError, match="nothing/here.json") as info:
        object_store.get_bytes("nothing/here.json")
    assert isinstance(info.value, KeyError) and isinstance(info.value, StorageError)


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a"])
def test_invalid_keys_are_rejected(object_store: ObjectStore, bad: str) -> None:
    with pytest.raises(StorageError, match="invalid object key"):
        object_store.put_bytes(bad, b"x")


def test_list_keys_is_a_sorted_string_prefix_match(object_store: ObjectStore) -> None:
    keys = ["p/asset/shard=00001.json", "p/asset/shard=00000.json", "p/asset2/all.bin", "p/other/x.bin", "q.bin"]
    for k in keys:
        object_store.put_bytes(k, k.encode())
    assert object_store.list_keys("p/asset/") == ["p/asset/shard=00000.json", "p/asset/shard=00001.json"]
    assert object_store.list_keys("p/asset") == sorted(keys[:3])
    assert object_store.list_keys("p/asset/shard=00001.") == ["p/asset/shard=00001.json"]
    assert object_store.list_keys("") == sorted(keys)
    assert object_store.list_keys("zzz/") == []


def test_s3_listing_follows_pages(seaweed_server) -> None:  # noqa: F811
    storage = s3_storage(seaweed_server)
    store = type(storage.object_store())(storage.client(), storage.bucket, page_size=7)
    keys = [f"many/{i:03d}.bin" for i in range(23)]  # 4 pages of at most 7
    for k in keys:
        store.put_bytes(k, b"x")
    assert store.list_keys("many/") == keys


def test_local_store_failed_write_keeps_old_object_and_no_temp_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("d/k.bin", b"old")
    with pytest.raises(TypeError):
        store.put_bytes("d/k.bin", "not bytes")  # fails inside the write, after the temp file exists
    assert store.get_bytes("d/k.bin") == b"old"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["k.bin"]


def test_unreachable_endpoint_fails_fast_with_one_clear_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = S3Storage(endpoint_url=f"http://127.0.0.1:{port}", bucket="unreachable-bucket",
                        aws_access_key_id="k", aws_secret_access_key="s")
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.object_store().put_bytes("a/b.bin", b"x")
    assert time.monotonic() - start < 10
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg and "unreachable-bucket" in msg and "head_bucket" in msg


def test_half_given_credentials_are_a_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot create client"):
        S3Storage(endpoint_url="http://127.0.0.1:1", bucket="b-x", aws_access_key_id="only-key").object_store()


# ---- codecs -------------------------------------------------------------------------------------
def test_codecs_pick_extension_and_json_bytes_are_deterministic() -> None:
    assert encode(random_pose_table(2, 0))[0] == ".posetable.parquet"
    assert encode(pd.DataFrame({"a": [1]}))[0] == ".parquet"
    assert encode({"w": torch.zeros(2)})[0] == ".safetensors"
    assert encode(b"raw")[0] == ".bin"
    assert encode({}) == (".json", b"{}")  # an empty dict is JSON, not an empty state dict
    assert encode({"b": np.int64(2), "a": [1.5, None]}) == (".json", b'{"a":[1.5,null],"b":2}')
    assert encode({"a": 1, "b": 2})[1] == encode({"b": 2, "a": 1})[1]


def test_codec_errors_name_the_type_or_key() -> None:
    with pytest.raises(CodecError, match="builtins.set"):
        encode({1, 2})
    with pytest.raises(CodecError, match="not JSON-serialisable"):
        encode({"a": object()}, where="asset x")
    with pytest.raises(CodecError, match="k/all.json: cannot decode .json"):
        decode("k/all.json", b"{not json")
    with pytest.raises(CodecError, match="k/all.posetable.parquet"):
        decode("k/all.posetable.parquet", b"not parquet")
    with pytest.raises(CodecError, match="unknown extension"):
        decode("k/all.pkl", b"")


# ---- IO manager ---------------------------------------------------------------------------------
def test_pose_table_round_trip(object_store: ObjectStore) -> None:
    io = ObjectStoreIOManager(object_store, prefix="run1")
    table = random_pose_table(17, seed=3)
    meta = store_output(io, table)
    key = "run1/poses/deduped/all.posetable.parquet"
    assert object_store.list_keys("run1/") == [key]
    assert meta["key"].value == key and meta["bytes"].value == len(object_store.get_bytes(key))
    assert meta["uri"].value == object_store.uri(key)
    loaded = load(io)
    assert_same_poses(loaded, table)


@pytest.mark.parametrize(
    "value",
    [
        pd.DataFrame({"pose_id": ["a", "b"], "loss": [0.25, 1.5], "n": np.array([3, 4], dtype=np.int32)},
                     index=pd.Index([10, 20], name="row")),
        {"accepted": 12, "ratios": [0.5, 0.25], "nested": {"z": None, "a": "text"}},
        {"disc.weight": torch.randn(4, 3), "disc.bias": torch.arange(4, dtype=torch.float64),
         "steps": torch.tensor([7], dtype=torch.int64)},
        b"\x00\x01raw bytes\xff",
    ],
    ids=["dataframe", "json", "safetensors", "bytes"],
)
def test_value_round_trips(object_store: ObjectStore, value) -> None:
    io = ObjectStoreIOManager(object_store)
    key = AssetKey(["stats"])
    store_output(io, value, key=key)
    loaded = load(io, key)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, value)
    elif isinstance(value, dict) and isinstance(next(iter(value.values())), torch.Tensor):
        assert loaded.keys() == value.keys()
        for k, t in value.items():
            assert loaded[k].dtype == t.dtype and torch.equal(loaded[k], t)
    else:
        assert loaded == value


def test_type_change_replaces_the_old_format(object_store: ObjectStore) -> None:
    io = ObjectStoreIOManager(object_store)
    key = AssetKey(["stats"])
    store_output(io, {"v": 1}, key=key)
    store_output(io, pd.DataFrame({"v": [1]}), key=key)
    assert object_store.list_keys("stats/") == ["stats/all.parquet"]
    loaded = load(io, key)
    assert isinstance(loaded, pd.DataFrame)


def test_partitions_load_as_value_or_dict(object_store: ObjectStore) -> None:
    io = ObjectStoreIOManager(object_store, prefix="p")
    tables = {k: random_pose_table(3, seed=i) for i, k in enumerate(SHARDS.get_partition_keys())}
    for k, t in tables.items():
        store_output(io, t, partition=k)
    assert object_store.list_keys("p/poses/deduped/") == [f"p/poses/deduped/{k}.posetable.parquet" for k in tables]

    # A partitioned consumer mapped to one upstream shard gets that shard's table.
    assert_same_poses(load(io, partition="shard=00001"), tables["shard=00001"])

    # An unpartitioned consumer gets partition key -> table, even for a range of one shard.
    everything = load(io, key_range=PartitionKeyRange("shard=00000", "shard=00002"))
    assert set(everything) == set(tables)
    for k, t in tables.items():
        assert_same_poses(everything[k], t)
    one = load(io, key_range=PartitionKeyRange("shard=00002", "shard=00002"))
    assert list(one) == ["shard=00002"]


def test_missing_partitions_are_named_unless_allowed(object_store: ObjectStore) -> None:
    io = ObjectStoreIOManager(object_store)
    store_output(io, random_pose_table(2, 0), partition="shard=00000")
    all_shards = PartitionKeyRange("shard=00000", "shard=00002")
    with pytest.raises(ObjectNotFoundError, match="shard=00001") as info:
        load(io, key_range=all_shards)
    assert "poses/deduped" in str(info.value)
    with pytest.raises(ObjectNotFoundError, match="shard=00002"):
        load(io, partition="shard=00002")
    partial = load(io, key_range=all_shards, metadata={"allow_missing_partitions": True})
    assert list(partial) == ["shard=00000"]


def test_materialize_on_seaweed_with_s3_storage(seaweed_server) -> None:  # noqa: F811
    """End to end through Dagster: partitioned producer, unpartitioned fan-in consumer."""

    @asset(partitions_def=SHARDS, key=POSES)
    def poses(context) -> PoseTable:
        return random_pose_table(4, seed=int(context.partition_key.split("=")[1]))

    @asset(ins={"poses": AssetIn(key=POSES)})
    def pose_count(poses: dict) -> dict:
        return {k: len(t) for k, t in poses.items()}

    storage = s3_storage(seaweed_server, prefix="renderih")
    resources = {"io_manager": io_manager_for(storage)}
    for k in SHARDS.get_partition_keys():
        result = materialize([poses], partition_key=k, resources=resources)
        meta = result.asset_materializations_for_node("poses__deduped")[0].metadata
        assert meta["key"].value == f"renderih/poses/deduped/{k}.posetable.parquet"
    result = materialize([poses, pose_count], selection=[pose_count], resources=resources)
    assert result.output_for_node("pose_count") == {k: 4 for k in SHARDS.get_partition_keys()}
    store = storage.object_store()
    assert decode("x.json", store.get_bytes("renderih/pose_count/all.json")) == {
        k: 4 for k in SHARDS.get_partition_keys()
    }


@pytest.mark.parametrize("storage_cls", [LocalStorage, MemoryStorage])
def test_other_storage_resources_share_the_io_manager(storage_cls, tmp_path: Path) -> None:
    storage = storage_cls(root_dir=str(tmp_path)) if storage_cls is LocalStorage else storage_cls(name=str(tmp_path))

    @asset
    def table() -> PoseTable:
        return random_pose_table(5, seed=9)

    @asset
    def n_rows(table: PoseTable) -> list:
        return [len(table)]

    resources = {"io_manager": io_manager_for(storage)}
    materialize([table], resources=resources)
    result = materialize([table, n_rows], selection=[n_rows], resources=resources)  # a second run loads it
    assert result.output_for_node("n_rows") == [5]
    assert storage.object_store().list_keys("") == ["n_rows/all.json", "table/all.posetable.parquet"]
