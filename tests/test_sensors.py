"""Sensors on a real SeaweedFS bucket: cursors make every new file count exactly once."""

import pytest
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

from sensors.s3_sensors import new_interhand_files, new_library_files
from tests.s3_fixtures import s3_storage, seaweed_server  # noqa: F401  (fixture)


def _tick(sensor_def, storage, cursor):
    ctx = build_sensor_context(cursor=cursor, resources={"storage": storage}, instance=DagsterInstance.ephemeral())
    result = sensor_def(ctx)
    return result, ctx.cursor


def test_new_annotation_file_yields_one_run_then_none(seaweed_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("IH_INTERHAND_WATCH_PREFIX", "incoming/interhand")
    storage = s3_storage(seaweed_server, prefix="p")
    store = storage.object_store()
    result, cursor = _tick(new_interhand_files, storage, None)
    assert isinstance(result, SkipReason)
    store.put_bytes("p/incoming/interhand/InterHand2.6M_train_MANO_NeuralAnnot.json", b"{}")
    store.put_bytes("p/incoming/interhand/notes.txt", b"not an annotation file")
    result, cursor = _tick(new_interhand_files, storage, cursor)
    assert isinstance(result, RunRequest) and result.run_key.startswith("interhand:")
    again, cursor2 = _tick(new_interhand_files, storage, cursor)
    assert isinstance(again, SkipReason) and cursor2 == cursor
    store.put_bytes("p/incoming/interhand/InterHand2.6M_val_MANO_NeuralAnnot.json", b"{}")
    third, _ = _tick(new_interhand_files, storage, cursor)
    assert isinstance(third, RunRequest) and third.run_key != result.run_key


@pytest.mark.parametrize("rerender", ["false", "true"])
def test_library_sensor_rerenders_only_when_configured(seaweed_server, monkeypatch, rerender):  # noqa: F811
    monkeypatch.setenv("IH_RERENDER_ON_NEW_LIBRARY", rerender)
    storage = s3_storage(seaweed_server, prefix="p")
    storage.object_store().put_bytes("p/library/envmaps/studio.hdr", b"#?RADIANCE\n")
    result, cursor = _tick(new_library_files, storage, None)
    if rerender == "true":
        assert isinstance(result, RunRequest) and [k.to_user_string() for k in result.asset_selection] == ["environment_maps"]
    else:
        assert isinstance(result, SkipReason) and "off" in result.skip_message
    assert "studio.hdr" in cursor  # the cursor advances either way
    second, _ = _tick(new_library_files, storage, cursor)
    assert isinstance(second, SkipReason)
