"""Real MANO files: chumpy-free pickles, the left-model fix, and clear errors for bad files."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch

from handsynth.hand_model import mano_files, standin
from handsynth.hand_model.model import HandModel
from tests.mano_like import write_chumpy_pickle


@pytest.fixture(scope="module")
def standin_arrays(hand_model):
    folder = hand_model.identity["source"]
    return {s: mano_files.read_mano_file(f"{folder}/MANO_{s.upper()}.npz") for s in ("right", "left")}


def test_chumpy_pickle_reads_into_the_same_arrays(tmp_path, standin_arrays):
    assert "chumpy" not in sys.modules
    write_chumpy_pickle(tmp_path / "MANO_RIGHT.pkl", standin_arrays["right"])
    read = mano_files.read_mano_file(tmp_path / "MANO_RIGHT.pkl")
    for key in mano_files.MANO_SCHEMA:
        assert np.allclose(np.asarray(read[key], dtype=np.float64),
                           np.asarray(standin_arrays["right"][key], dtype=np.float64)), key


def test_mano_folder_of_pickles_poses_like_the_standin(tmp_path, hand_model, standin_arrays):
    left = dict(standin_arrays["left"])
    # the released left model shares shapedirs[:, 0] with the right one: reproduce that bug
    left["shapedirs"] = standin_arrays["left"]["shapedirs"].copy()
    left["shapedirs"][:, 0] = standin_arrays["right"]["shapedirs"][:, 0]
    write_chumpy_pickle(tmp_path / "MANO_RIGHT.pkl", standin_arrays["right"])
    write_chumpy_pickle(tmp_path / "MANO_LEFT.pkl", left)
    mano = HandModel.from_mano_folder(tmp_path)
    assert mano.identity["kind"] == "mano" and mano.identity["left_shapedirs_fixed"] is True
    rng = np.random.default_rng(0)
    params = {"global_orient": rng.normal(size=(3, 3)), "hand_pose": rng.normal(0, 0.3, (3, 45)),
              "betas": rng.normal(size=(3, 10)), "transl": rng.normal(0, 0.1, (3, 3))}
    for side in ("right", "left"):
        a = mano.forward_numpy(side, params).vertices
        b = hand_model.forward_numpy(side, params).vertices
        assert torch.allclose(a, b, atol=1e-6), side


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(mano_files.ManoModelError, match="MANO model folder not found"):
        HandModel.from_mano_folder(tmp_path / "nowhere")
    with pytest.raises(mano_files.ManoModelError, match="no MANO_RIGHT.pkl or MANO_RIGHT.npz"):
        HandModel.from_mano_folder(tmp_path)


def test_wrong_array_shape_names_the_file_and_array(tmp_path, standin_arrays):
    bad = dict(standin_arrays["right"])
    bad["weights"] = bad["weights"][:, :15]
    np.savez(tmp_path / "MANO_RIGHT.npz", **bad)
    with pytest.raises(mano_files.ManoModelError, match=r"MANO_RIGHT.npz: array 'weights' has shape \(778, 15\), expected 778x16"):
        mano_files.read_mano_file(tmp_path / "MANO_RIGHT.npz")


def test_garbage_file_is_reported_as_unreadable(tmp_path):
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(mano_files.ManoModelError, match="not a readable MANO model file"):
        mano_files.read_mano_file(tmp_path / "MANO_RIGHT.pkl")


class _Payload:
    """Unpickling this calls ``os.system`` (what a hostile model file would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, standin_arrays):
    marker = tmp_path / "pwned"
    data = dict(standin_arrays["right"], hands_mean=_Payload(marker))
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    with pytest.raises(mano_files.ManoModelError, match=r"MANO_RIGHT.pkl: .*refused to load global (posix|os)\.system"):
        mano_files.read_mano_file(tmp_path / "MANO_RIGHT.pkl")
    assert not marker.exists()
    # the same through the model folder, as a user's IH_MANO_DIR would be read
    np.savez(tmp_path / "MANO_LEFT.npz", **standin_arrays["left"])
    with pytest.raises(mano_files.ManoModelError, match="refused to load global"):
        HandModel.from_mano_folder(tmp_path)
    assert not marker.exists()


def test_malicious_npz_planted_in_the_standin_cache_is_refused_and_nothing_runs(tmp_path, standin_arrays):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cache" / standin.STANDIN_VERSION
    folder.mkdir(parents=True)
    np.savez(folder / "MANO_RIGHT.npz", **standin_arrays["right"])
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    np.savez(folder / "MANO_LEFT.npz", **dict(standin_arrays["left"], hands_mean=evil))
    with pytest.raises(mano_files.ManoModelError, match=r"MANO_LEFT.npz: not a readable MANO model file.*allow_pickle"):
        HandModel.standin(tmp_path / "cache")
    assert not marker.exists()


def test_left_file_is_validated_and_in_the_digest(tmp_path, hand_model, standin_arrays):
    np.savez(tmp_path / "MANO_RIGHT.npz", **standin_arrays["right"])
    bad = dict(standin_arrays["left"], kintree_table=np.zeros((2, 16), dtype=np.int64))
    np.savez(tmp_path / "MANO_LEFT.npz", **bad)
    with pytest.raises(mano_files.ManoModelError, match=r"MANO_LEFT.npz: array 'kintree_table' row 1"):
        HandModel.from_mano_folder(tmp_path)
    np.savez(tmp_path / "MANO_LEFT.npz", **standin_arrays["left"])
    same = HandModel.from_mano_folder(tmp_path).identity["digest"]
    moved = dict(standin_arrays["left"], v_template=standin_arrays["left"]["v_template"] + 0.001)
    np.savez(tmp_path / "MANO_LEFT.npz", **moved)
    assert HandModel.from_mano_folder(tmp_path).identity["digest"] != same
    assert same == hand_model.identity["digest"]  # same arrays as the stand-in: same identity
