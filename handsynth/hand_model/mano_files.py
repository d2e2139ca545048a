"""Reading and checking MANO model files (``MANO_RIGHT.pkl`` / ``.npz``) without chumpy.

The official pickles store several arrays as chumpy ``Ch`` objects, and chumpy no longer installs
on current Python/numpy. :class:`_ChumpyFreeUnpickler` maps every chumpy class to a placeholder
that keeps the pickled state; :func:`_to_array` then reads the array out of it (``x`` for ``Ch``,
``a``/``r`` for derived nodes).

A pickle can name any importable callable and have it called (``os.system`` in ``__reduce__``),
so the unpickler resolves only an allow-list: numpy's array reconstruction, scipy's sparse
matrices and the chumpy placeholders. Anything else is a :class:`ManoModelError` naming the file
and the refused global; ``.npz`` files are read with ``allow_pickle=False`` for the same reason.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from handsynth import userfiles

#: Arrays a MANO file must hold, with their expected shapes (None = any length on that axis).
MANO_SCHEMA: dict[str, tuple[int | None, ...]] = {
    "v_template": (778, 3),
    "f": (None, 3),
    "J_regressor": (16, 778),
    "weights": (778, 16),
    "posedirs": (778, 3, 135),
    "shapedirs": (778, 3, None),
    "kintree_table": (2, 16),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}


#: Parent of each joint in MANO's kinematic tree (wrist, then index, middle, pinky, ring, thumb chains).
MANO_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])


class ManoModelError(ValueError):
    """A MANO model file is missing, unreadable or holds arrays of the wrong shape."""


class _ChumpyPlaceholder:
    """Stands in for any chumpy class while unpickling; keeps the pickled state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """``(module, name) -> object`` a MANO pickle may refer to, under old and new module names."""
    import codecs
    import copyreg

    import scipy.sparse

    multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray  # numpy 2 / numpy 1
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for fmt in ("csc", "csr"):  # compressed formats: check_format(full_check=True) validates them
        cls = getattr(scipy.sparse, f"{fmt}_matrix")
        for mod in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            allowed[(mod, f"{fmt}_matrix")] = cls
    # protocol-2 pickles encode bytes via _codecs.encode and old-style objects via copy_reg
    allowed[("_codecs", "encode")] = codecs.encode
    for mod in ("copy_reg", "copyreg"):
        allowed[(mod, "_reconstructor")] = copyreg._reconstructor
    for mod in ("__builtin__", "builtins"):  # plain containers chumpy objects keep in their state
        allowed.update({(mod, "object"): object, (mod, "set"): set, (mod, "frozenset"): frozenset})
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a callable outside the allow-list; nothing was called."""


class _ChumpyFreeUnpickler(pickle.Unpickler):
    """Unpickles MANO files resolving only allow-listed globals; chumpy classes become placeholders."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyPlaceholder
        if _ChumpyFreeUnpickler._allowed is None:
            _ChumpyFreeUnpickler._allowed = _allowed_globals()
        found = _ChumpyFreeUnpickler._allowed.get((module, name))
        if found is None:
            raise _RefusedGlobal(f"refused to load global {module}.{name} (only numpy arrays, scipy sparse "
                                 "matrices and chumpy placeholders may appear in a MANO pickle)")
        return found


def _to_array(value: Any, key: str, where: str) -> Any:
    """Turn chumpy placeholders and scipy sparse matrices into numpy arrays."""
    if isinstance(value, _ChumpyPlaceholder):
        state = value.state if isinstance(value.state, dict) else {}
        for field in ("x", "a", "r"):
            if field in state:
                return np.asarray(_to_array(state[field], key, where))
        raise ManoModelError(f"{where}: array {key!r} is a chumpy object without stored values")
    if hasattr(value, "toarray") and "scipy.sparse" in type(value).__module__:
        # the unpickled index arrays are the file's: scipy's C++ densifier trusts them, so an
        # index past the shape would write outside the array. Check every index first.
        try:
            value.check_format(full_check=True)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ManoModelError(f"{where}: sparse array {key!r} is malformed ({exc})") from exc
        return np.asarray(value.toarray())
    return value


def read_mano_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``MANO_*.pkl`` (chumpy-free) or ``MANO_*.npz`` into a dict of numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise ManoModelError(f"{path}: MANO model file not found")
    try:
        data = userfiles.read_file(path)  # a link or special file is refused, not followed
    except userfiles.UserFileError as exc:
        raise ManoModelError(str(exc)) from None
    try:
        if path.suffix == ".npz":
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                raw = {k: npz[k] for k in npz.files}
        else:
            raw = _ChumpyFreeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # any decoding failure is a bad file, named as such
        raise ManoModelError(f"{path}: not a readable MANO model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, Mapping):
        raise ManoModelError(f"{path}: expected a dict of arrays, found {type(raw).__name__}")
    arrays = {k: _to_array(v, k, str(path)) for k, v in raw.items()}
    validate_mano_arrays(arrays, str(path))
    return arrays


def validate_mano_arrays(arrays: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ManoModelError` naming the array whose shape or values are wrong."""
    for key, shape in MANO_SCHEMA.items():
        if key not in arrays:
            raise ManoModelError(f"{where}: missing array {key!r}")
        arr = np.asarray(arrays[key])
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "x".join("N" if s is None else str(s) for s in shape)
            raise ManoModelError(f"{where}: array {key!r} has shape {arr.shape}, expected {want}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ManoModelError(f"{where}: array {key!r} holds NaN or inf")
    for key in MANO_SCHEMA:
        if np.asarray(arrays[key]).dtype.kind not in "biuf":
            raise ManoModelError(f"{where}: array {key!r} has dtype {np.asarray(arrays[key]).dtype}, expected numbers")
    faces = np.asarray(arrays["f"])
    if faces.min() < 0 or faces.max() >= 778:
        raise ManoModelError(f"{where}: array 'f' indexes vertices outside 0..777")
    _validate_kinematic_tree(np.asarray(arrays["kintree_table"]), where)
    weights = np.asarray(arrays["weights"], dtype=np.float64)
    sums = weights.sum(axis=1)
    if weights.min() < -1e-6 or np.abs(sums - 1.0).max() > 1e-3:
        v = int(np.argmax(np.abs(sums - 1.0) + (weights.min(axis=1) < -1e-6)))
        raise ManoModelError(f"{where}: array 'weights' row {v} sums to {sums[v]:.4f} or is negative; "
                             "skinning weights must be >= 0 and sum to 1")


def _validate_kinematic_tree(kintree: np.ndarray, where: str) -> None:
    """Row 1 must number the joints 0..15 and row 0 give MANO's parents (the root's entry is free).

    smplx accepts any table, e.g. an all-zero one, and then poses a broken skeleton silently;
    the fingertip keypoints (``model.TIP_PARENT_JOINTS``) also assume MANO's tree.
    """
    if not np.array_equal(kintree[1], np.arange(16)):
        raise ManoModelError(f"{where}: array 'kintree_table' row 1 is {kintree[1].tolist()}, expected joints 0..15")
    parents = kintree[0, 1:].astype(np.int64)
    bad = np.flatnonzero(parents != MANO_PARENTS[1:])
    if len(bad):
        j = int(bad[0]) + 1
        raise ManoModelError(f"{where}: array 'kintree_table' gives joint {j} the parent {int(parents[j - 1])}, "
                             f"MANO's kinematic tree has {int(MANO_PARENTS[j])}")


def fix_left_shapedirs(left: dict[str, Any], right: Mapping[str, Any]) -> bool:
    """Apply the known MANO left-model fix; return whether it was needed.

    The released ``MANO_LEFT`` shares ``shapedirs[:, 0]`` with the right model instead of its
    mirror, so shape changes move the left hand's vertices the wrong way along x. When the two
    are (nearly) equal rather than opposite, negate the left one.
    """
    l0 = np.asarray(left["shapedirs"])[:, 0]
    r0 = np.asarray(right["shapedirs"])[:, 0]
    if np.abs(l0 - r0).sum() < 1.0:
        shapedirs = np.array(left["shapedirs"], dtype=np.float64, copy=True)
        shapedirs[:, 0] *= -1
        left["shapedirs"] = shapedirs
        return True
    return False


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """Write a model dict as ``.npz`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
