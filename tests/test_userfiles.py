"""User folders are read as data: links and special files are refused before anything is uploaded,
and the environment-map library follows the user's folder (a fixed folder repairs the library)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from handsynth import envmaps, userfiles
from handsynth.hand_model import mano_files
from handsynth.hand_model.model import HandModel
from ih_assets.main_job import environment_folder_changed
from ih_assets.rendering import environment_maps
from resources.settings import PipelineSettings
from resources.sources import open_uri
from resources.storage import MemoryStorage, io_manager_for

MAPS = {f"map{i}.hdr": envmaps.write_hdr(envmaps.procedural_envmap(i, 8, 16)) for i in range(2)}


def _folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "maps"
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_links_and_special_files_are_refused_naming_the_path(tmp_path):
    folder = _folder(tmp_path, {"good.hdr": b"data", "notes.txt": b"ignored"})
    (folder / "passwd.hdr").symlink_to("/etc/passwd")
    with pytest.raises(userfiles.UserFileError, match=r"maps/passwd\.hdr: a symbolic link; only regular files"):
        userfiles.list_files(folder, (".hdr",))
    with pytest.raises(userfiles.UserFileError, match=r"passwd\.hdr: a symbolic link"):
        userfiles.read_file(folder / "passwd.hdr")
    (folder / "passwd.hdr").unlink()
    os.mkfifo(folder / "pipe.hdr")   # opening a FIFO for reading would block until a writer comes
    with pytest.raises(userfiles.UserFileError, match=r"pipe\.hdr: a named pipe"):
        userfiles.read_file(folder / "pipe.hdr")
    (folder / "pipe.hdr").unlink()
    (folder / "sub.hdr").mkdir()
    with pytest.raises(userfiles.UserFileError, match=r"sub\.hdr: a folder"):
        userfiles.list_files(folder, (".HDR",))
    (folder / "sub.hdr").rmdir()
    (folder / "link.txt").symlink_to("/etc/passwd")   # not a file the reader wants: never opened
    assert userfiles.list_files(folder, (".hdr",)) == ["good.hdr"]
    assert userfiles.read_files(folder, ["good.hdr"]) == {"good.hdr": b"data"}
    with pytest.raises(userfiles.UserFileError, match=r"nowhere: folder not found"):
        userfiles.list_files(tmp_path / "nowhere", (".hdr",))


def test_folder_digest_follows_every_file_and_matches_the_in_memory_one(tmp_path):
    folder = _folder(tmp_path, MAPS)
    digest = userfiles.folder_digest(folder, (".hdr",))
    assert digest == userfiles.files_digest(MAPS)
    (folder / "map1.hdr").write_bytes(MAPS["map0.hdr"])
    assert userfiles.folder_digest(folder, (".hdr",)) != digest


def test_mano_folder_and_interhand_file_links_are_refused(tmp_path):
    standin = Path(HandModel.standin().identity["source"])
    folder = tmp_path / "mano"
    folder.mkdir()
    (folder / "MANO_RIGHT.npz").write_bytes((standin / "MANO_RIGHT.npz").read_bytes())
    (folder / "MANO_LEFT.npz").symlink_to(standin / "MANO_LEFT.npz")
    with pytest.raises(mano_files.ManoModelError, match=r"mano/MANO_LEFT\.npz: a symbolic link"):
        HandModel.from_mano_folder(folder)
    (tmp_path / "InterHand2.6M_train_MANO_NeuralAnnot.json").symlink_to("/etc/passwd")
    with pytest.raises(FileNotFoundError, match=r"MANO_NeuralAnnot\.json: cannot open the InterHand2\.6M file "
                                                r"\(a symbolic link"):
        with open_uri(str(tmp_path / "InterHand2.6M_train_MANO_NeuralAnnot.json"), None):
            pass


def _materialize(storage: MemoryStorage, folder: Path, instance: DagsterInstance):
    settings = PipelineSettings.from_preset("test", environment_dir=str(folder))
    return materialize([environment_maps], instance=instance, raise_on_error=False,
                       resources={"settings": settings, "storage": storage, "io_manager": io_manager_for(storage)})


def _library(storage: MemoryStorage) -> dict[str, bytes]:
    store = storage.object_store()
    return {k.rsplit("/", 1)[-1]: store.get_bytes(k) for k in store.list_keys("renderih/library/envmaps/")}


def test_a_symlink_in_the_environment_folder_uploads_nothing_and_a_fixed_folder_runs(tmp_path):
    storage = MemoryStorage(name=f"userfiles-{tmp_path.name}", prefix="renderih")
    folder = _folder(tmp_path, MAPS)
    (folder / "passwd.hdr").symlink_to("/etc/passwd")
    instance = DagsterInstance.ephemeral()
    result = _materialize(storage, folder, instance)
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "passwd.hdr: a symbolic link" in failure.event_specific_data.error.cause.message
    assert storage.object_store().list_keys("") == []     # refused before anything was uploaded

    (folder / "passwd.hdr").unlink()
    assert _materialize(storage, folder, instance).success
    assert _library(storage) == MAPS


def test_the_library_follows_the_folder_and_drops_what_it_no_longer_has(tmp_path):
    storage = MemoryStorage(name=f"userfiles-{tmp_path.name}", prefix="renderih")
    # what an older version left: /etc/passwd uploaded into the library before it was rejected
    storage.object_store().put_bytes("renderih/library/envmaps/passwd.hdr", b"root:x:0:0:root:/root:/bin/bash\n")
    folder = _folder(tmp_path, MAPS)
    instance = DagsterInstance.ephemeral()
    assert _materialize(storage, folder, instance).success
    assert _library(storage) == MAPS
    first = instance.get_latest_materialization_event(AssetKey("environment_maps")).asset_materialization
    assert first.metadata["source_digest"].value == userfiles.files_digest(MAPS)

    settings = PipelineSettings.from_preset("test", environment_dir=str(folder))
    assert environment_folder_changed(instance, settings) == []       # the main job skips it
    changed = {"map0.hdr": MAPS["map0.hdr"], "map2.hdr": envmaps.write_hdr(envmaps.procedural_envmap(7, 8, 16))}
    (folder / "map1.hdr").unlink()
    (folder / "map2.hdr").write_bytes(changed["map2.hdr"])
    assert environment_folder_changed(instance, settings) == ["files in IH_ENVIRONMENT_DIR changed"]
    assert _materialize(storage, folder, instance).success
    assert _library(storage) == changed
    second = instance.get_latest_materialization_event(AssetKey("environment_maps")).asset_materialization
    assert (second.metadata["maps_uploaded"].value, second.metadata["maps_removed"].value) == (1, 1)
    assert second.tags["dagster/data_version"] != first.tags["dagster/data_version"]


def test_a_bad_map_in_the_folder_is_refused_before_any_upload(tmp_path):
    storage = MemoryStorage(name=f"userfiles-{tmp_path.name}", prefix="renderih")
    folder = _folder(tmp_path, {**MAPS, "black.hdr": envmaps.write_hdr(np.zeros((8, 16, 3), np.float32))})
    result = _materialize(storage, folder, DagsterInstance.ephemeral())
    assert not result.success and storage.object_store().list_keys("") == []
