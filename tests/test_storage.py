"""The storage layer, codecs and the IO manager, on a real SeaweedFS server and on the local /
memory backends (the same tests run on all three through the ``object_store`` fixture); integrity
checks on load and in the main job; the command line on S3 with no AWS variables set."""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from dagster import (
    AssetIn,
    AssetKey,
    DagsterInstance,
    PartitionKeyRange,
    StaticPartitionsDefinition,
    asset,
    build_input_context,
    build_output_context,
    materialize,
)

from handsynth.pose_table import HAND_PARAMS, SIDES, PoseTable, empty_meta, from_hands
from handsynth.training import iter_annotation_tables
from handsynth.storage import (STREAM_BLOCK, IntegrityError, LocalStore, ObjectNotFoundError, S3Settings,
                               S3Store, Store, StorageError, open_store, sha256_hex)
from resources.codecs import CodecError, decode, encode
from resources.io_managers import ObjectStoreIOManager
from resources.storage import LocalStorage, MemoryStorage, S3Storage, io_manager_for
from tests.s3_fixtures import (env_without_aws, fresh_bucket, object_store, s3_storage,  # noqa: F401 (fixtures)
                               seaweed_server)

ROOT = Path(__file__).resolve().parents[1]

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
def test_put_get_exists_delete(object_store: Store) -> None:
    key = "a/b/c.bin"
    assert not object_store.exists(key)
    object_store.put_bytes(key, b"first")
    object_store.put_bytes(key, b"second, longer")
    assert object_store.exists(key)
    assert object_store.get_bytes(key) == b"second, longer"
    object_store.delete(key)
    assert not object_store.exists(key)
    object_store.delete(key)  # deleting a missing key is a no-op, as in S3


def test_missing_key_is_a_key_error_naming_the_key(object_store: Store) -> None:
    with pytest.raises(ObjectNotFoundError, match="nothing/here.json") as info:
        object_store.get_bytes("nothing/here.json")
    assert isinstance(info.value, KeyError) and isinstance(info.value, StorageError)


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a"])
def test_invalid_keys_are_rejected(object_store: Store, bad: str) -> None:
    with pytest.raises(StorageError, match="invalid object key"):
        object_store.put_bytes(bad, b"x")


def test_list_keys_is_a_sorted_string_prefix_match(object_store: Store) -> None:
    keys = ["p/asset/shard=00001.json", "p/asset/shard=00000.json", "p/asset2/all.bin", "p/other/x.bin", "q.bin"]
    for k in keys:
        object_store.put_bytes(k, k.encode())
    assert object_store.list_keys("p/asset/") == ["p/asset/shard=00000.json", "p/asset/shard=00001.json"]
    assert object_store.list_keys("p/asset") == sorted(keys[:3])
    assert object_store.list_keys("p/asset/shard=00001.") == ["p/asset/shard=00001.json"]
    assert object_store.list_keys("") == sorted(keys)
    assert object_store.list_keys("zzz/") == []


def test_local_store_failed_write_keeps_old_object_and_no_temp_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
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
    assert f"127.0.0.1:{port}" in msg and "s3://unreachable-bucket/" in msg and "head_bucket failed" in msg
    assert "\n" not in msg


def test_half_given_credentials_are_a_storage_error() -> None:
    with pytest.raises(StorageError, match="give both the access key and the secret"):
        S3Storage(endpoint_url="http://127.0.0.1:1", bucket="b-x", aws_access_key_id="only-key").object_store()


# ---- streams, ranges, integrity ------------------------------------------------------------------
def _pattern(n: int) -> bytes:
    """``n`` bytes in which every 4-byte word differs, so a misplaced part or range shows."""
    return np.arange((n + 3) // 4, dtype="<u4").tobytes()[:n]


def test_streaming_write_of_several_blocks_then_streamed_and_ranged_reads(object_store: Store) -> None:
    data = _pattern(2 * STREAM_BLOCK + 12345)  # two full parts and a short last one on S3
    with object_store.open("big/blob.bin", "wb") as out:
        for i in range(0, len(data), 1_000_003):  # writes that do not line up with the parts
            out.write(data[i:i + 1_000_003])
        assert not object_store.exists("big/blob.bin")  # nothing visible before the close
    assert object_store.size("big/blob.bin") == len(data)
    with object_store.open("big/blob.bin", "rb") as stream:
        assert stream.read(10) == data[:10]
        stream.seek(STREAM_BLOCK - 3)
        assert stream.read(6) == data[STREAM_BLOCK - 3:STREAM_BLOCK + 3]
    start = 2 * STREAM_BLOCK - 7  # across the boundary of the second and third part
    assert object_store.read_range("big/blob.bin", start, 100) == data[start:start + 100]
    assert hashlib.sha256(object_store.get_bytes("big/blob.bin")).hexdigest() == sha256_hex(data)


def test_a_failed_streaming_write_keeps_the_previous_object(object_store: Store) -> None:
    object_store.put_bytes("k/obj.bin", b"previous")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        with object_store.open("k/obj.bin", "wb") as out:
            out.write(_pattern(STREAM_BLOCK + 1))
            raise RuntimeError("renderer crashed")
    assert object_store.get_bytes("k/obj.bin") == b"previous"
    assert object_store.list_keys("k/") == ["k/obj.bin"]
    abandoned = object_store.open("k/new.bin", "wb")  # dropped without close: as if the step died
    abandoned.write(_pattern(STREAM_BLOCK + 1))
    del abandoned
    assert not object_store.exists("k/new.bin") and object_store.list_keys("k/") == ["k/obj.bin"]


_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from handsynth.storage import STREAM_BLOCK, open_store
    store, _ = open_store(sys.argv[1])
    out = store.open("killed/blob.bin", "wb")
    out.write(b"x" * (2 * STREAM_BLOCK + 5))  # the first parts are on their way or stored
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_a_killed_streaming_write_leaves_nothing_visible(backend: str, tmp_path: Path, request) -> None:
    if backend == "s3":
        server, bucket = request.getfixturevalue("seaweed_server"), fresh_bucket()
        uri, env = f"s3://{bucket}", env_without_aws(IH_S3_ENDPOINT=server.endpoint_url)
        store: Store = S3Store(bucket, S3Settings(endpoint_url=server.endpoint_url, anonymous=True))
    else:
        uri, env, store = str(tmp_path), env_without_aws(), LocalStore(tmp_path)
    store.put_bytes("killed/other.bin", b"kept")
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, uri], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "written" in proc.stdout, proc.stderr
    assert not store.exists("killed/blob.bin")
    assert store.list_keys("killed/") == ["killed/other.bin"]
    if backend == "s3":  # the parts did reach the server: an upload was begun and never completed
        uploads = store.fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
        assert [u["Key"] for u in uploads] == ["killed/blob.bin"]
    else:
        leftovers = [p.name for p in (tmp_path / "killed").iterdir()]
        assert "blob.bin" not in leftovers and all(n.startswith(".tmp-") or n == "other.bin" for n in leftovers)


def test_verified_reads_name_the_object_and_both_sizes_and_hashes(object_store: Store) -> None:
    data = b"recorded content"
    object_store.put_bytes("v/obj.bin", data)
    assert object_store.get_verified("v/obj.bin", len(data), sha256_hex(data)) == data
    object_store.verify("v/obj.bin", len(data), sha256_hex(data))
    object_store.put_bytes("v/obj.bin", data[:-3])  # truncated
    with pytest.raises(IntegrityError) as info:
        object_store.get_verified("v/obj.bin", len(data), sha256_hex(data))
    message = str(info.value)
    assert object_store.uri("v/obj.bin") in message and f"expected {len(data)} bytes sha256 {sha256_hex(data)}" in message
    assert f"found {len(data) - 3} bytes sha256 {sha256_hex(data[:-3])}" in message and "\n" not in message
    with pytest.raises(IntegrityError, match=f"found {len(data) - 3} bytes"):
        object_store.verify("v/obj.bin", len(data), sha256_hex(data))
    altered = b"Recorded content"  # same size, other bytes: only the hash can tell
    object_store.put_bytes("v/obj.bin", altered)
    with pytest.raises(IntegrityError, match=f"found {len(data)} bytes sha256 {sha256_hex(altered)}"):
        object_store.verify("v/obj.bin", len(data), sha256_hex(data))
    with pytest.raises(IntegrityError, match=r"\[10:30\]"):
        object_store.read_range("v/obj.bin", 10, 20)  # the object is shorter than the record promised
    with pytest.raises(ObjectNotFoundError):
        object_store.verify("v/none.bin", 1, "0" * 64)


def test_open_store_reaches_s3_with_the_pipeline_defaults_and_no_aws_variables(seaweed_server, monkeypatch) -> None:  # noqa: F811
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IH_S3_ENDPOINT", seaweed_server.endpoint_url)
    bucket = fresh_bucket()
    store, prefix = open_store(f"s3://{bucket}/renderih/")
    assert isinstance(store, S3Store) and prefix == "renderih" and store.settings.anonymous
    store.put_bytes("renderih/x.json", b"{}")
    assert store.list_keys("renderih/") == ["renderih/x.json"] and store.uri("renderih/x.json") == f"s3://{bucket}/renderih/x.json"


def test_open_store_for_memory_and_local_folders(tmp_path: Path) -> None:
    MemoryStorage(name="shared-with-uri").object_store().put_bytes("p/a.bin", b"a")
    store, prefix = open_store("memory://shared-with-uri/p")
    assert prefix == "p" and store.get_bytes("p/a.bin") == b"a" and store.uri("p/a.bin") == "memory://shared-with-uri/p/a.bin"
    (tmp_path / "renderih").mkdir()
    local, prefix = open_store(str(tmp_path))  # a store's root: the pipeline's prefix folder is used
    assert isinstance(local, LocalStore) and prefix == "renderih" and local.local_path("k") == tmp_path / "k"
    assert open_store(str(tmp_path / "renderih"))[1] == ""  # the prefix folder itself
    with pytest.raises(FileNotFoundError, match="no such folder"):
        open_store(str(tmp_path / "missing"))


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
def test_pose_table_round_trip(object_store: Store) -> None:
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
def test_value_round_trips(object_store: Store, value) -> None:
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


def test_type_change_replaces_the_old_format(object_store: Store) -> None:
    io = ObjectStoreIOManager(object_store)
    key = AssetKey(["stats"])
    store_output(io, {"v": 1}, key=key)
    store_output(io, pd.DataFrame({"v": [1]}), key=key)
    assert object_store.list_keys("stats/") == ["stats/all.parquet"]
    loaded = load(io, key)
    assert isinstance(loaded, pd.DataFrame)


def test_partitions_load_as_value_or_dict(object_store: Store) -> None:
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


def test_missing_partitions_are_named_unless_allowed(object_store: Store) -> None:
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


# ---- integrity on load and in the main job --------------------------------------------------------
def _producer_and_consumer():
    @asset(partitions_def=SHARDS, key=POSES)
    def poses(context) -> PoseTable:
        return random_pose_table(6, seed=int(context.partition_key.split("=")[1]))

    @asset(partitions_def=SHARDS, ins={"poses": AssetIn(key=POSES)})
    def pose_count(poses: PoseTable) -> dict:
        return {"n": len(poses)}

    return poses, pose_count


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_loading_a_corrupted_output_fails_naming_the_object(damage: str, tmp_path: Path) -> None:
    poses, pose_count = _producer_and_consumer()
    storage = LocalStorage(root_dir=str(tmp_path), prefix="p")
    resources, instance = {"io_manager": io_manager_for(storage)}, DagsterInstance.ephemeral()
    made = materialize([poses], partition_key="shard=00001", resources=resources, instance=instance)
    meta = made.asset_materializations_for_node("poses__deduped")[0].metadata
    store, key = storage.object_store(), "p/poses/deduped/shard=00001.posetable.parquet"
    data = store.get_bytes(key)
    assert meta["sha256"].value == sha256_hex(data) and meta["bytes"].value == len(data)
    assert materialize([poses, pose_count], selection=[pose_count], partition_key="shard=00001",
                       resources=resources, instance=instance).output_for_node("pose_count") == {"n": 6}

    store.put_bytes(key, data[: len(data) // 2] if damage == "truncated" else data[:-1] + bytes([data[-1] ^ 1]))
    result = materialize([poses, pose_count], selection=[pose_count], partition_key="shard=00001",
                         resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    cause = failure.step_failure_data.error.cause
    assert cause.cls_name == "IntegrityError" and "\n" not in cause.message.strip()
    assert f"{store.uri(key)}: stored object corrupted: expected {len(data)} bytes sha256 {sha256_hex(data)}" in cause.message


def test_without_a_record_a_damaged_table_is_still_one_line_naming_the_key(object_store: Store) -> None:
    io = ObjectStoreIOManager(object_store, prefix="p")
    store_output(io, random_pose_table(4, seed=1))
    key = "p/poses/deduped/all.posetable.parquet"
    object_store.put_bytes(key, object_store.get_bytes(key)[:100])
    with pytest.raises(CodecError, match=re.escape(key)):
        load(io)  # a context without an instance: no record to check, the decoder names the key


def _main_job(env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", "ih_assets.main_job"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_main_job_remakes_exactly_the_corrupted_objects_and_what_depends_on_them(tmp_path: Path) -> None:
    """On local storage (no server): truncate one shard's optimized pose table and alter one
    byte of the anchors; the re-run re-makes those two, the shard's later stages, nothing else."""
    from tests.test_main_job import main_job_env, shard_lines

    no_server = SimpleNamespace(endpoint_url="http://127.0.0.1:1")  # IH_LOCAL_ROOT replaces S3
    env = {**main_job_env(no_server, tmp_path / "home", "unused", IH_N_PROCEDURAL_POSES="4"),
           "IH_LOCAL_ROOT": str(tmp_path / "objects"), "PYTHONPATH": str(ROOT)}
    first = _main_job(env)
    assert set(shard_lines(first)) == {"shard=00000", "shard=00001"}
    store = LocalStore(tmp_path / "objects")
    table_key, anchors_key = "renderih/optimized_poses/shard=00001.posetable.parquet", "renderih/hand_anchors/all.json"
    table, anchors = store.get_bytes(table_key), store.get_bytes(anchors_key)
    store.put_bytes(table_key, table[: len(table) // 2])
    store.put_bytes(anchors_key, anchors.replace(b"1", b"2", 1))  # same size: only the hash tells

    second = _main_job(env)
    assert re.search(r"\[main\] materializing hand_anchors \(stored object corrupted \(sha256 \w+…, recorded \w+…: "
                     + re.escape(store.uri(anchors_key)) + r"\)\)\n", second), second
    plans = shard_lines(second)
    assert list(plans) == ["shard=00001"], plans
    line = plans["shard=00001"]
    assert line.startswith(f"optimized_poses (stored object corrupted ({len(table) // 2} bytes, recorded {len(table)}: "
                           f"{store.uri(table_key)})); rendered_views (upstream optimized_poses is re-materialized)"), line
    assert "augmented_poses" not in line
    assert store.get_bytes(table_key) == table and store.get_bytes(anchors_key) == anchors  # byte-identical again
    assert shard_lines(_main_job(env)) == {}


# ---- the command line on S3 with the pipeline's defaults -----------------------------------------
def _readme_result_commands() -> list[list[str]]:
    """The ``ih-pipeline`` lines of README's "Where the results are" block, split as a shell would."""
    import shlex

    section = (ROOT / "README.md").read_text().split("### Where the results are", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("ih-pipeline ")]


@pytest.mark.slow
def test_readme_result_commands_work_against_a_server_with_no_aws_variables(seaweed_server, tmp_path: Path) -> None:  # noqa: F811
    """README's ``ih-pipeline preview`` and ``export`` lines, exactly as written (bucket
    ``renderih``, prefix ``renderih``, relative output paths), run from a folder against a server
    that accepts anonymous requests, with no AWS variable in the environment; they write the
    contact sheet and complete export folders with JPEG images and SHA256SUMS."""
    from tests.pipeline_output import PREFIX, pipeline_output

    commands = _readme_result_commands()
    assert [c[1] for c in commands] == ["preview", "export"] and all("s3://renderih/renderih" in c for c in commands)
    local = LocalStore(pipeline_output()[0])
    s3 = S3Store("renderih", S3Settings(endpoint_url=seaweed_server.endpoint_url, anonymous=True))
    for key in local.list_keys(f"{PREFIX}/"):
        s3.put_bytes(key, local.get_bytes(key))
    env = env_without_aws(IH_S3_ENDPOINT=seaweed_server.endpoint_url, PYTHONPATH=str(ROOT))
    for command in commands:  # ``ih-pipeline`` is the entry point of ih_assets.cli:main (tests/test_cli.py)
        done = subprocess.run([sys.executable, "-m", "ih_assets.cli", *command[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / ".local/results/contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n_rows = sum(len(t) for t in iter_annotation_tables(local, PREFIX))
    exports = tmp_path / ".local/results/exports"
    images = sorted((exports / "interhand26m" / "images").rglob("*.jpg"))
    assert n_rows > 0 and len(images) == n_rows and all(p.read_bytes()[:2] == b"\xff\xd8" for p in images)  # JPEG
    sums = (exports / "interhand26m" / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == n_rows + 1 + 12  # the images, skeleton.txt, 4 annotation files x 3 splits
    assert len(list((exports / "intaghand").rglob("anno/*.pkl"))) == n_rows
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=exports / "intaghand").returncode == 0


def test_pipeline_and_command_line_share_the_s3_defaults(monkeypatch) -> None:
    from handsynth.storage import DEFAULT_S3_ENDPOINT
    from resources.environments import storage_for

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "IH_S3_ENDPOINT", "IH_LOCAL_ROOT", "IH_ENV"):
        monkeypatch.delenv(name, raising=False)
    pipeline = storage_for("local").object_store().settings
    cli = S3Settings.from_env()
    assert pipeline.endpoint_url == cli.endpoint_url == DEFAULT_S3_ENDPOINT
    assert pipeline.anonymous and cli.anonymous and cli.key is None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    pipeline = storage_for("local").process_config_and_initialize().object_store().settings
    cli = S3Settings.from_env()
    assert (pipeline.key, pipeline.secret, pipeline.anonymous) == (cli.key, cli.secret, cli.anonymous) == ("id", "secret", False)
    assert S3Settings.from_env(environment="cluster").endpoint_url is None  # AWS, default credential chain
