"""Several worker processes share one run through dagster-dask on a real local Dask cluster;
the stored objects equal those of a single-process run, byte for byte."""

import os
from pathlib import Path

import pytest
from dagster import execute_job, instance_for_test, reconstructable

from tests.scale_out_job import dask_job, single_process_job

distributed = pytest.importorskip("distributed")


def _objects(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(job_fn, run_config: dict) -> set[int]:
    with instance_for_test() as instance:
        with execute_job(reconstructable(job_fn), instance=instance, run_config=run_config) as result:
            assert result.success
            pids = {e.pid for e in result.all_events if e.is_step_success}
    return pids


def test_dask_cluster_run_equals_single_process_run(tmp_path, monkeypatch):
    monkeypatch.setenv("IH_LOCAL_ROOT", str(tmp_path / "single"))   # read by the job factory
    single = _run(single_process_job, {})
    monkeypatch.setenv("IH_LOCAL_ROOT", str(tmp_path / "dask"))     # before the workers start
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask_pids = _run(dask_job,
                         {"execution": {"config": {"cluster": {"existing": {"address": cluster.scheduler_address}}}}})
    assert len(single) == 1 and os.getpid() in single
    assert os.getpid() not in dask_pids and len(dask_pids) >= 2      # steps ran in several worker processes
    a, b = _objects(tmp_path / "single"), _objects(tmp_path / "dask")
    assert a.keys() == b.keys() and len(a) >= 4
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]


def test_two_render_workers_render_blocks_at_the_same_time(hand_model):
    """Six blocks on two worker processes: each block's index records who rendered it and when,
    and a block of one worker was rendering while a block of the other was (intervals overlap)."""
    from handsynth.render.blocks import BlockIndex, index_key, shard_folder
    from handsynth.render.workers import _IDLE, render_shard
    from handsynth.storage import MemoryStore
    from tests.test_render_blocks import render_job, shard_blocks

    _IDLE.close()   # both workers start alike, as in a fresh step (an idle one kept by an earlier test would win)
    _, blocks = shard_blocks(hand_model, 6, 1, seed=5)
    store = MemoryStore()
    result = render_shard(store, shard_folder("p", "shard=00000"), blocks, render_job(hand_model), workers=2,
                          threads=1, gpus=[])
    assert [o.status for o in result.outcomes] == ["rendered"] * 6
    indexes = [BlockIndex.from_json(store.get_bytes(index_key(b.tar_key)), b.tar_key) for b in blocks]
    workers = sorted({i.worker for i in indexes})
    assert len(workers) == 2 and os.getpid() not in {int(w.rsplit(":", 1)[1]) for w in workers}
    first, second = ([i for i in indexes if i.worker == w] for w in workers)
    overlapping = [(a.tar_key, b.tar_key) for a in first for b in second
                   if a.started < b.finished and b.started < a.finished]
    assert overlapping, [(i.worker, i.started, i.finished) for i in indexes]
