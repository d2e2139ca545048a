"""Sensors on a real SeaweedFS bucket: a new file is requested once, counted as done only when its
run succeeded, and retried under a new run key when its run failed."""

import uuid

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, build_sensor_context

from handsynth.envmaps import LIBRARY_EXTENSIONS
from sensors.s3_sensors import RUN_KEY_TAG, SOURCE_JOB, new_interhand_files, new_library_files
from tests.s3_fixtures import s3_storage, seaweed_server  # noqa: F401  (fixture)


def _tick(sensor_def, storage, cursor, instance):
    result = sensor_def(build_sensor_context(cursor=cursor, resources={"storage": storage}, instance=instance))
    return result, result.cursor


def _finish(instance, run_key: str, status: DagsterRunStatus) -> None:
    """Record a run of ``run_key`` that ended with ``status`` (what the daemon would launch)."""
    instance.add_run(DagsterRun(job_name=SOURCE_JOB, run_id=str(uuid.uuid4()), tags={RUN_KEY_TAG: run_key}, status=status))


def test_new_annotation_file_counts_once_its_run_succeeded(seaweed_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("IH_INTERHAND_WATCH_PREFIX", "incoming/interhand")
    instance = DagsterInstance.ephemeral()
    storage = s3_storage(seaweed_server, prefix="p")
    store = storage.object_store()
    result, cursor = _tick(new_interhand_files, storage, None, instance)
    assert result.run_requests == [] and "no new" in result.skip_reason.skip_message
    store.put_bytes("p/incoming/interhand/InterHand2.6M_train_MANO_NeuralAnnot.json", b"{}")
    store.put_bytes("p/incoming/interhand/notes.txt", b"not an annotation file")
    result, cursor = _tick(new_interhand_files, storage, cursor, instance)
    [first] = result.run_requests
    assert first.run_key.startswith("interhand:") and "notes.txt" not in first.tags["renderih/new_files"]
    pending, cursor = _tick(new_interhand_files, storage, cursor, instance)   # run not finished: no second request
    assert pending.run_requests == []

    _finish(instance, first.run_key, DagsterRunStatus.FAILURE)                 # failed: retried under a new key
    retry_result, cursor = _tick(new_interhand_files, storage, cursor, instance)
    [retry] = retry_result.run_requests
    assert retry.run_key != first.run_key and retry.tags == first.tags

    _finish(instance, retry.run_key, DagsterRunStatus.SUCCESS)                 # succeeded: done, nothing more
    done, cursor = _tick(new_interhand_files, storage, cursor, instance)
    assert done.run_requests == [] and "InterHand2.6M_train_MANO_NeuralAnnot.json" in cursor
    store.put_bytes("p/incoming/interhand/InterHand2.6M_val_MANO_NeuralAnnot.json", b"{}")
    third, _ = _tick(new_interhand_files, storage, cursor, instance)
    [request] = third.run_requests
    assert request.tags["renderih/new_files"] == "p/incoming/interhand/InterHand2.6M_val_MANO_NeuralAnnot.json"


@pytest.mark.parametrize("rerender", ["false", "true"])
def test_library_sensor_rerenders_only_when_configured(seaweed_server, monkeypatch, rerender):  # noqa: F811
    monkeypatch.setenv("IH_RERENDER_ON_NEW_LIBRARY", rerender)
    instance = DagsterInstance.ephemeral()
    storage = s3_storage(seaweed_server, prefix="p")
    assert LIBRARY_EXTENSIONS == (".hdr", ".exr")   # the extensions environment_maps reads
    for name in ("studio.hdr", "forest.exr", "preview.png"):
        storage.object_store().put_bytes(f"p/library/envmaps/{name}", b"#?RADIANCE\n")
    result, cursor = _tick(new_library_files, storage, None, instance)
    if rerender == "true":
        [request] = result.run_requests
        assert [k.to_user_string() for k in request.asset_selection] == ["environment_maps"]
        _finish(instance, request.run_key, DagsterRunStatus.SUCCESS)
    else:
        assert result.run_requests == [] and "off" in result.skip_reason.skip_message
    second, cursor = _tick(new_library_files, storage, cursor, instance)
    assert second.run_requests == []
    assert "studio.hdr" in cursor and "forest.exr" in cursor and "preview.png" not in cursor
