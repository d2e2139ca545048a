"""Render blocks (handsynth.render.blocks, handsynth.render.workers): the tar layout and its index,
verified member reads, completeness checks, and a shard rendered by worker processes in which
one block fails while the others are stored."""

import io
import re
import tarfile

import numpy as np
import pytest

from handsynth import envmaps
from handsynth.render import RenderOptions
from handsynth.render.blocks import (Block, BlockIndex, BlockWriter, check_block, index_key,
                                     inputs_digest, plan_blocks, read_member, sample_name, shard_folder, store_index)
from handsynth.render.workers import RenderJob, assign, render_shard
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.storage import IntegrityError, MemoryStore

PNGS = {"rgb": b"\x89PNG rgb" * 70, "label": b"labels", "depth": b"depth" * 200}


def _stored_block(store, key="p/render/shard=00000/d1.tar", digest="abc") -> tuple[Block, list[dict]]:
    writer = BlockWriter(store, key)
    rows = [{"image_id": f"d1/aug{i:02d}/v00", **writer.add(f"d1/aug{i:02d}/v00", PNGS, b'{"i": %d}' % i)}
            for i in range(3)]
    size, sha = writer.commit()
    store_index(store, BlockIndex(key, size, sha, digest, 1.0, 2.0, "host:1", rows))
    return Block(key, "d1", None, digest), rows


def test_a_block_is_a_webdataset_tar_whose_rows_locate_each_member():
    store = MemoryStore()
    block, rows = _stored_block(store)
    with tarfile.open(fileobj=io.BytesIO(store.get_bytes(block.tar_key))) as tar:
        names = [m.name for m in tar.getmembers()]
        assert names[:4] == [f"{sample_name('d1/aug00/v00')}.{s}" for s in ("png", "label.png", "depth.png", "json")]
        assert tar.extractfile(names[3]).read() == b'{"i": 0}'
    for row in rows:
        assert {kind: read_member(store, row, kind) for kind in PNGS} == PNGS
    assert check_block(store, block).state == "current"


def test_sample_names_keep_ids_apart_and_have_no_dot():
    ids = ["a.b/v00", "a~2Eb/v00", "a_b/v00", "a/b/v00"]
    names = [sample_name(i) for i in ids]
    assert len(set(names)) == len(ids) and not any("." in n for n in names)


def test_identical_images_give_identical_tars():
    a, b = MemoryStore(), MemoryStore()
    _stored_block(a)
    _stored_block(b)
    assert a.get_bytes("p/render/shard=00000/d1.tar") == b.get_bytes("p/render/shard=00000/d1.tar")


def test_an_altered_member_raises_an_integrity_error_naming_object_and_figures():
    store = MemoryStore()
    block, rows = _stored_block(store)
    data = bytearray(store.get_bytes(block.tar_key))
    data[rows[1]["depth_offset"]] ^= 0xFF
    store.put_bytes(block.tar_key, bytes(data))
    assert read_member(store, rows[1], "rgb") == PNGS["rgb"]          # other members still read
    with pytest.raises(IntegrityError, match=r"memory://[^/]+/p/render/shard=00000/d1\.tar \(depth image of d1/aug01/v00 at byte "
                                             r"\d+\): stored object corrupted: expected 1000 bytes sha256 [0-9a-f]{64}, "
                                             r"found 1000 bytes sha256 [0-9a-f]{64}"):
        read_member(store, rows[1], "depth")


def test_block_checks_tell_missing_stale_truncated_and_unreadable_blocks():
    store = MemoryStore()
    block, _ = _stored_block(store)
    assert check_block(store, Block("p/render/shard=00000/d2.tar", "d2", None, "abc")).state == "missing"
    assert check_block(store, Block(block.tar_key, "d1", None, "other inputs")).state == "stale"
    store.put_bytes(block.tar_key, store.get_bytes(block.tar_key)[:-512])
    truncated = check_block(store, block)
    assert truncated.state == "corrupt" and "d1.tar: stored object corrupted: expected 20480 bytes" in truncated.reason and "found" in truncated.reason
    store.put_bytes(index_key(block.tar_key), b'{"format": "renderih-render-block/1", "tar_key": 3}')
    unreadable = check_block(store, block)
    assert unreadable.state == "corrupt" and re.match(r"memory://[^/]+/p/render/shard=00000/d1\.index\.json: ", unreadable.reason)


def test_an_aborted_block_leaves_no_object():
    store = MemoryStore()
    writer = BlockWriter(store, "k/x.tar")
    writer.add("x/v00", PNGS, b"{}")
    writer.abort(RuntimeError("renderer crashed"))
    assert store.list_keys("") == []


def test_inputs_digest_follows_poses_and_context(hand_model):
    poses = generate_interacting_poses(hand_model, 2, seed=3)
    base = inputs_digest(poses, {"n_views": 2})
    assert inputs_digest(poses, {"n_views": 2}) == base
    assert inputs_digest(poses, {"n_views": 3}) != base
    moved = poses.with_arrays(right_transl=poses.arrays["right_transl"] + 1e-6)
    assert inputs_digest(moved, {"n_views": 2}) != base


def test_assignment_balances_images_over_workers():
    blocks = [Block(f"k/{i}.tar", str(i), np.zeros(n), "") for i, n in enumerate([30, 30, 20, 20, 10, 10])]
    lists = assign(blocks, 2)
    assert sorted(sum(len(b.poses) for b in found) for found in lists) == [60, 60]
    assert sorted(b.tar_key for found in lists for b in found) == sorted(b.tar_key for b in blocks)
    assert len(assign(blocks[:1], 4)) == 1


def shard_blocks(model, n_distinct: int, per_distinct: int, seed: int = 0, prefix: str = "p", shard: str = "shard=00000"):
    """``n_distinct`` blocks of ``per_distinct`` procedural poses each, as a shard plans them."""
    poses = generate_interacting_poses(model, n_distinct * per_distinct, seed=seed)
    poses.meta["distinct_pose_id"] = [f"d{i // per_distinct}" for i in range(len(poses))]
    return poses, plan_blocks(poses, prefix, shard, {"test": True})


def render_job(model, n_views: int = 2, size: int = 64) -> RenderJob:
    library = {"a": envmaps.procedural_envmap(0), "b": envmaps.procedural_envmap(1)}
    return RenderJob(model, library, 0, n_views, size, RenderOptions(backend="raster"))


def test_a_failing_block_fails_alone_and_the_rerun_renders_only_it(hand_model):
    poses, blocks = shard_blocks(hand_model, 3, 1)
    broken = poses.with_arrays(left_transl=poses.arrays["left_transl"] + np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0],
                                                                                  [0.0, 0.0, 0.0]]))
    bad_blocks = plan_blocks(broken, "p", "shard=00000", {"test": True})   # hands 50 m apart: no camera sees both
    store = MemoryStore()
    job = render_job(hand_model)
    first = render_shard(store, shard_folder("p", "shard=00000"), bad_blocks, job, workers=2, threads=1, gpus=[])
    status = {o.distinct_pose_id: o.status for o in first.outcomes}
    assert status == {"d0": "rendered", "d1": "failed", "d2": "rendered"}
    [failed] = first.with_status("failed")
    assert "no camera view" in failed.error
    assert not store.exists(bad_blocks[1].tar_key) and len(first.rows) == 2 * 2
    second = render_shard(store, shard_folder("p", "shard=00000"), blocks, job, workers=2, threads=1, gpus=[])
    assert {o.distinct_pose_id: (o.status, o.found) for o in second.outcomes} == {
        "d0": ("skipped", "current"), "d1": ("rendered", "missing"), "d2": ("skipped", "current")}
    assert len(second.rows) == 3 * 2 and all(check_block(store, b).state == "current" for b in blocks)


def _dead(pid: int) -> bool:
    """No such process, or a zombie not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_next_shard_reuses_the_idle_worker_and_a_dead_one_is_replaced(hand_model):
    """A worker that finished its shard waits for the next one of the process (same pid in the
    block indexes, no new interpreter); one that died while idle is replaced, and the shard renders."""
    import os
    import signal
    import time

    from handsynth.render.workers import _IDLE

    def worker_pid(store, blocks) -> int:
        [pid] = {int(BlockIndex.from_json(store.get_bytes(index_key(b.tar_key)), b.tar_key).worker.rsplit(":", 1)[1])
                 for b in blocks}
        return pid

    _IDLE.close()
    job, store = render_job(hand_model), MemoryStore()
    shards = {s: shard_blocks(hand_model, 1, 1, seed=s, shard=f"shard={s:05d}")[1] for s in range(3)}

    def render(s: int) -> int:
        result = render_shard(store, shard_folder("p", f"shard={s:05d}"), shards[s], job, workers=1, threads=1, gpus=[])
        assert [o.status for o in result.outcomes] == ["rendered"]
        return worker_pid(store, shards[s])

    first = render(0)
    assert render(1) == first != os.getpid()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not _dead(first):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert render(2) != first
