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
