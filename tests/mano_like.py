"""A MANO-like TEST model: generated, written like the official MANO pickles, never shipped as MANO.

Tests that only ever run on the stand-in hold partly by its construction: its ``hands_mean`` is
built in the joint-limit frames (pure bends, no twist or splay), its shape directions are clean
skeletal edits and its tips ride one bone. Real MANO has none of that, so this model keeps the
stand-in's surface but, like MANO:

- dense pose correctives: the stand-in's plus a smooth random field on every vertex (tips
  included) and every pose feature, a few millimetres per unit feature;
- a ``hands_mean`` that is a data-like relaxed pose in the model's raw axes (the stand-in's plus
  noise on all 45 components), so it carries twist and splay in the anatomical frames;
- shape directions with smooth random, asymmetric displacements on top of the skeletal edits;
- the left file with ``shapedirs[:, 0]`` equal to the right one's (the released MANO_LEFT's bug);
- chumpy ``Ch`` objects around the big arrays and a scipy sparse ``J_regressor`` in a protocol-2
  pickle, read through :func:`handsynth.hand_model.mano_files.read_mano_file`.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from handsynth.hand_model import mano_files, standin


def write_chumpy_pickle(path: Path, arrays: dict) -> None:
    """Pickle like the official MANO files: big arrays inside chumpy ``Ch`` objects.

    chumpy is not installed: a throwaway module named ``chumpy.ch`` provides the class for
    pickling and is removed again, so the reader must cope without it.
    """
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:  # what chumpy.ch.Ch pickles: an object whose state dict holds the values in 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, ch
    try:
        data = dict(arrays)
        for key in ("v_template", "weights", "posedirs", "shapedirs"):
            data[key] = Ch(np.asarray(arrays[key]))
        data["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
        data["f"] = np.asarray(arrays["f"]).astype(np.uint32)
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def _smooth_noise(rng: np.random.Generator, faces: np.ndarray, shape: tuple[int, ...], passes: int = 6) -> np.ndarray:
    """Random values (778, ...) averaged over mesh neighbours: smooth over the surface, unit RMS."""
    x = rng.normal(size=shape)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    edges = np.concatenate([edges, edges[:, ::-1]])
    degree = np.bincount(edges[:, 0], minlength=shape[0])
    for _ in range(passes):
        summed = np.zeros_like(x)
        np.add.at(summed, edges[:, 0], x[edges[:, 1]])
        x = 0.5 * x + 0.5 * summed / degree.reshape((-1,) + (1,) * (x.ndim - 1))
    return x / np.sqrt((x ** 2).mean())


def mano_like_arrays(standin_right: dict, seed: int = 0) -> dict[str, dict]:
    """Right and left arrays of the MANO-like model from the stand-in's right-hand arrays."""
    rng = np.random.default_rng(seed)
    faces = np.asarray(standin_right["f"], dtype=np.int64)
    right = {k: np.array(v, copy=True) for k, v in standin_right.items() if k != "standin_version"}
    right["posedirs"] = right["posedirs"] + 2e-4 * _smooth_noise(rng, faces, (778, 3, 135))
    right["hands_mean"] = right["hands_mean"] + rng.normal(0.0, 0.05, 45)
    right["shapedirs"] = right["shapedirs"] + 1e-3 * _smooth_noise(rng, faces, (778, 3, 10))
    left = standin.mirror_model(right)
    left["shapedirs"] = left["shapedirs"].copy()
    left["shapedirs"][:, 0] = right["shapedirs"][:, 0]
    for side, arrays in (("right", right), ("left", left)):
        mano_files.validate_mano_arrays(arrays, f"MANO-like {side}")
    return {"right": right, "left": left}


def write_mano_like_folder(folder: Path, standin_right: dict) -> Path:
    """``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl`` of the MANO-like model in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for side, arrays in mano_like_arrays(standin_right).items():
        write_chumpy_pickle(folder / f"MANO_{side.upper()}.pkl", arrays)
    return folder
