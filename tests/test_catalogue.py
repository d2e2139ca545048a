"""The bad-input catalogue: every kind of bad input we know of, each refused with a named error.

Each entry builds one bad input in ``tmp_path`` and says what the error must name (file, record,
field). Asset-level entries run the asset that reads the input (``raw_poses`` for hand-model and
InterHand2.6M files, ``environment_maps`` for HDR maps) on an ephemeral instance with in-memory
storage and assert the run failed with that message and recorded no materialization. Library-level
entries call the reader, the settings loader, the metrics CLI or the check directly.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from handsynth import envmaps, metrics_cli
from handsynth.hand_model import mano_files
from handsynth.hand_model.model import HandModel
from handsynth.hand_model.standin import STANDIN_VERSION
from handsynth.pose_table import PoseTable
from handsynth.sources.interhand import load_interhand_cameras, load_interhand_joints
from ih_assets.poses import raw_poses
from ih_assets.rendering import environment_maps
from quality.rendering_checks import image_keys_unique
from resources.hand_model import HandModelResource
from resources.settings import PipelineSettings, settings_from_env
from resources.sources import PoseSourceResource
from resources.storage import MemoryStorage, io_manager_for
from tests.s3_fixtures import s3_storage, seaweed_server  # noqa: F401 (fixture)

MANO_JSON = "InterHand2.6M_train_MANO_NeuralAnnot.json"
MARKER = "catalogue-code-ran"


@dataclass
class Kind:
    name: str
    match: str  # regex the error message must contain (names file / record / field)
    build: Callable[[Path], Any]  # -> a zero-argument callable (library) or an asset input spec
    asset: str | None = None  # "raw_poses" (hand model / IH2.6M files) or "environment_maps" (HDR)


KINDS: list[Kind] = []


def kind(name: str, match: str, asset: str | None = None):
    def register(fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
        KINDS.append(Kind(name, match, fn, asset))
        return fn
    return register


class Refused(Exception):
    """A command or check refused its input without raising (exit code, failed check)."""


# ---- shared inputs -----------------------------------------------------------------------------

_STANDIN: dict[str, dict[str, np.ndarray]] = {}


def standin_arrays() -> dict[str, dict[str, np.ndarray]]:
    """Both stand-in hands' arrays (valid MANO-schema files to break one thing in)."""
    if not _STANDIN:
        folder = HandModel.standin().identity["source"]
        for side in ("right", "left"):
            _STANDIN[side] = mano_files.read_mano_file(f"{folder}/MANO_{side.upper()}.npz")
    return {s: dict(a) for s, a in _STANDIN.items()}


def mano_folder(tmp: Path, right: dict | bytes | None = None, left: dict | bytes | None = None,
                ext: str = ".npz") -> dict:
    """A MANO folder with the stand-in's arrays, one side replaced by ``right`` / ``left``."""
    arrays = standin_arrays()
    folder = tmp / "mano"
    folder.mkdir(exist_ok=True)
    for side, given in (("right", right), ("left", left)):
        path = folder / f"MANO_{side.upper()}{ext if given is not None else '.npz'}"
        value = arrays[side] if given is None else given
        if isinstance(value, bytes):
            path.write_bytes(value)
        elif path.suffix == ".pkl":
            path.write_bytes(pickle.dumps(value, protocol=2))
        else:
            np.savez(path, **value)
    return {"mano_folder": str(folder)}


class _Run:
    """Unpickling this calls a function that would leave ``MARKER`` behind (a hostile model file)."""

    def __init__(self, how: str, path: str):
        self.how, self.path = how, path

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch {self.path}",)
        if self.how == "eval":
            return eval, (f"open({self.path!r}, 'w').close()",)
        return subprocess.Popen, (["touch", self.path],)


def hand(rng: np.random.Generator) -> dict:
    return {"pose": rng.normal(size=48).tolist(), "shape": rng.normal(size=10).tolist(),
            "trans": rng.normal(size=3).tolist()}


def mano_doc(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"0": {"10": {"right": hand(rng), "left": hand(rng)}, "11": {"right": hand(rng), "left": None}},
            "7": {"501": {"right": hand(rng), "left": hand(rng)}}}


def ih_file(tmp: Path, doc: Any = None, raw: bytes | None = None) -> dict:
    path = tmp / MANO_JSON
    path.write_bytes(raw if raw is not None else json.dumps(doc).encode())
    return {"files": [str(path)]}


def mutated(fn: Callable[[dict], Any]) -> dict:
    doc = mano_doc()
    fn(doc)
    return doc


def hdr_rle(env: np.ndarray) -> bytes:
    """Encode ``env`` as new-style RLE scanlines (literal runs only), as most .hdr files are."""
    flat = envmaps.write_hdr(env)
    h, w, _ = env.shape
    header_end = flat.index(b"+X") + len(f"+X {w}\n".encode())
    rgbe = np.frombuffer(flat[header_end:], np.uint8).reshape(h, w, 4)
    out = bytearray(flat[:header_end])
    for y in range(h):
        out += bytes([2, 2, w >> 8, w & 255])
        for ch in range(4):
            for x0 in range(0, w, 128):
                chunk = rgbe[y, x0:x0 + 128, ch]
                out += bytes([len(chunk)]) + chunk.tobytes()
    return bytes(out)


ENV = envmaps.procedural_envmap(3, 8, 16)


def hdr_with_size(size_line: str, pixels: bytes | None = None) -> bytes:
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + size_line.encode() + b"\n" + (pixels or bytes(4 * 8 * 16))


def library(data: bytes) -> dict:
    """An HDR library whose broken map sorts first (the previews read the first 8 maps)."""
    return {"maps": {"aaa_broken": data, "good": envmaps.write_hdr(ENV)}}


def joints_doc() -> dict:
    rng = np.random.default_rng(1)
    return {"0": {"1": {"world_coord": rng.normal(size=(42, 3)).tolist(), "joint_valid": [[1]] * 42,
                        "hand_type": "interacting", "hand_type_valid": True}}}


def cameras_doc() -> dict:
    return {"0": {"campos": {"400": [1.0, 2.0, 3.0]}, "camrot": {"400": np.eye(3).tolist()},
                  "focal": {"400": [1000.0, 1000.0]}, "princpt": {"400": [256.0, 256.0]}}}


def reader(load: Callable, tmp: Path, name: str, doc: Any) -> Callable[[], Any]:
    path = tmp / name
    path.write_text(json.dumps(doc))
    return lambda: load(str(path))


def cli(tmp: Path, pred: Any, gt: Any, *extra: str) -> Callable[[], Any]:
    """Run the metrics CLI on ``pred`` / ``gt`` (arrays -> .npz, else a path); refusal = exit 2."""
    paths = []
    for label, value in (("pred", pred), ("gt", gt)):
        if isinstance(value, (str, Path)):
            paths.append(str(value))
            continue
        path = tmp / f"{label}.npz"
        np.savez(path, **(value if isinstance(value, dict) else {"joints": value}))
        paths.append(str(path))

    def run() -> None:
        err = io.StringIO()
        old, sys.stderr = sys.stderr, err
        try:
            rc = metrics_cli.main(["--pred", paths[0], "--gt", paths[1], *extra])
        finally:
            sys.stderr = old
        if rc != 0:
            raise Refused(f"exit {rc}: {err.getvalue()}")
    return run


JOINTS = np.random.default_rng(2).normal(size=(3, 42, 3)) * 50


def settings(**env: str) -> Callable[[], Any]:
    return lambda: settings_from_env({f"IH_{k.upper()}": v for k, v in env.items()})


def check(result) -> None:
    if not result.passed:
        raise Refused(f"check failed: {result.metadata}")


# ---- hand-model files (through raw_poses: the hand model loads before anything is written) ----

@kind("mano folder missing", r"nowhere: MANO model folder not found", "raw_poses")
def _(tmp): return {"mano_folder": str(tmp / "nowhere")}
@kind("mano folder without right file", r"no MANO_RIGHT\.pkl or MANO_RIGHT\.npz", "raw_poses")
def _(tmp): (tmp / "empty").mkdir(); return {"mano_folder": str(tmp / "empty")}
@kind("mano pickle calling os.system", r"MANO_RIGHT\.pkl: .*refused to load global (posix|os)\.system", "raw_poses")
def _(tmp): return mano_folder(tmp, right=dict(standin_arrays()["right"], f=_Run("system", str(tmp / MARKER))), ext=".pkl")
@kind("mano pickle calling eval", r"MANO_LEFT\.pkl: .*refused to load global (__builtin__|builtins)\.eval", "raw_poses")
def _(tmp): return mano_folder(tmp, left=dict(standin_arrays()["left"], f=_Run("eval", str(tmp / MARKER))), ext=".pkl")
@kind("mano pickle calling subprocess.Popen", r"MANO_RIGHT\.pkl: .*refused to load global (subprocess|commands)\.Popen", "raw_poses")
def _(tmp): return mano_folder(tmp, right={"x": _Run("popen", str(tmp / MARKER))}, ext=".pkl")
@kind("mano pickle that is not a dict", r"MANO_RIGHT\.pkl: expected a dict of arrays, found list", "raw_poses")
def _(tmp): return mano_folder(tmp, right=pickle.dumps([1, 2, 3]), ext=".pkl")
@kind("mano pickle of garbage bytes", r"MANO_RIGHT\.pkl: not a readable MANO model file", "raw_poses")
def _(tmp): return mano_folder(tmp, right=b"not a pickle at all", ext=".pkl")
@kind("mano pickle truncated", r"MANO_RIGHT\.pkl: not a readable MANO model file", "raw_poses")
def _(tmp): return mano_folder(tmp, right=pickle.dumps(standin_arrays()["right"], protocol=2)[:5000], ext=".pkl")
@kind("mano npz with a pickled object array", r"MANO_LEFT\.npz: not a readable MANO model file.*allow_pickle", "raw_poses")
def _(tmp):
    evil = np.empty(1, dtype=object)
    evil[0] = _Run("system", str(tmp / MARKER))
    return mano_folder(tmp, left=dict(standin_arrays()["left"], hands_mean=evil))
@kind("mano npz truncated", r"MANO_RIGHT\.npz: not a readable MANO model file", "raw_poses")
def _(tmp):
    buf = io.BytesIO()
    np.savez(buf, **standin_arrays()["right"])
    return mano_folder(tmp, right=buf.getvalue()[:20000])
@kind("mano array missing", r"MANO_RIGHT\.npz: missing array 'posedirs'", "raw_poses")
def _(tmp): a = standin_arrays()["right"]; a.pop("posedirs"); return mano_folder(tmp, right=a)
@kind("mano array of the wrong shape", r"MANO_LEFT\.npz: array 'weights' has shape \(778, 15\), expected 778x16", "raw_poses")
def _(tmp): a = standin_arrays()["left"]; a["weights"] = a["weights"][:, :15]; return mano_folder(tmp, left=a)
@kind("mano array with NaN", r"MANO_RIGHT\.npz: array 'v_template' holds NaN or inf", "raw_poses")
def _(tmp): a = standin_arrays()["right"]; a["v_template"] = a["v_template"].copy(); a["v_template"][5, 1] = np.nan; return mano_folder(tmp, right=a)
@kind("mano array with inf", r"MANO_RIGHT\.npz: array 'shapedirs' holds NaN or inf", "raw_poses")
def _(tmp): a = standin_arrays()["right"]; a["shapedirs"] = a["shapedirs"].copy(); a["shapedirs"][0, 0, 0] = np.inf; return mano_folder(tmp, right=a)
@kind("mano array of strings", r"MANO_RIGHT\.npz: array 'hands_mean' has dtype <U", "raw_poses")
def _(tmp): a = standin_arrays()["right"]; a["hands_mean"] = np.array(["x"] * 45); return mano_folder(tmp, right=a)
@kind("mano faces beyond the vertices", r"MANO_RIGHT\.npz: array 'f' indexes vertices outside 0\.\.777", "raw_poses")
def _(tmp): a = standin_arrays()["right"]; a["f"] = a["f"].copy(); a["f"][0, 0] = 778; return mano_folder(tmp, right=a)
@kind("mano negative face index", r"MANO_LEFT\.npz: array 'f' indexes vertices outside 0\.\.777", "raw_poses")
def _(tmp): a = standin_arrays()["left"]; a["f"] = a["f"].astype(np.int64); a["f"][3, 2] = -1; return mano_folder(tmp, left=a)
@kind("mano left kintree_table all zero", r"MANO_LEFT\.npz: array 'kintree_table' row 1", "raw_poses")
def _(tmp): a = standin_arrays()["left"]; a["kintree_table"] = np.zeros((2, 16), np.int64); return mano_folder(tmp, left=a)
@kind("mano kintree_table with a wrong parent", r"MANO_RIGHT\.npz: array 'kintree_table' gives joint 5 the parent 3", "raw_poses")
def _(tmp): a = standin_arrays()["right"]; a["kintree_table"] = a["kintree_table"].copy(); a["kintree_table"][0, 5] = 3; return mano_folder(tmp, right=a)
@kind("mano skinning weights not summing to 1", r"MANO_RIGHT\.npz: array 'weights' row 0 sums to 2\.0000", "raw_poses")
def _(tmp): a = standin_arrays()["right"]; a["weights"] = a["weights"].copy(); a["weights"][0] *= 2; return mano_folder(tmp, right=a)
@kind("mano negative skinning weight", r"MANO_LEFT\.npz: array 'weights' row 9 .*must be >= 0", "raw_poses")
def _(tmp):
    a = standin_arrays()["left"]
    w = a["weights"].copy()
    w[9] = 0.0
    w[9, 0], w[9, 1] = 1.5, -0.5
    a["weights"] = w
    return mano_folder(tmp, left=a)
@kind("mano chumpy object without values", r"MANO_RIGHT\.pkl: array 'v_template' is a chumpy object without stored values", "raw_poses")
def _(tmp):
    import types
    ch = types.ModuleType("chumpy.ch")  # chumpy is not installed: a throwaway class to pickle with

    class Ch:
        def __init__(self):
            self._dirty_vars = set()  # a Ch whose state lost its values ('x')

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), ch
    try:
        body = pickle.dumps(dict(standin_arrays()["right"], v_template=Ch()), protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    return mano_folder(tmp, right=body, ext=".pkl")


@kind("mano sparse J_regressor with indices past its shape", r"MANO_RIGHT\.pkl: sparse array 'J_regressor' is malformed \(indices must be < 16\)", "raw_poses")
def _(tmp):
    import scipy.sparse
    a = standin_arrays()["right"]
    jreg = scipy.sparse.csc_matrix(a["J_regressor"])
    jreg.indices = jreg.indices.copy()
    jreg.indices[0] = 10_000_000  # scipy's densifier would write far outside the array
    return mano_folder(tmp, right=pickle.dumps(dict(a, J_regressor=jreg), protocol=2), ext=".pkl")


@kind("stand-in cache with a planted object array", r"MANO_LEFT\.npz: not a readable MANO model file.*allow_pickle")
def _(tmp):
    folder = tmp / "cache" / STANDIN_VERSION
    folder.mkdir(parents=True)
    arrays = standin_arrays()
    np.savez(folder / "MANO_RIGHT.npz", **arrays["right"])
    evil = np.empty(1, dtype=object)
    evil[0] = _Run("system", str(tmp / MARKER))
    np.savez(folder / "MANO_LEFT.npz", **dict(arrays["left"], hands_mean=evil))
    return lambda: HandModel.standin(tmp / "cache")


# ---- InterHand2.6M MANO annotations (through raw_poses) ------------------------------------------

IH = "raw_poses"
AT = re.escape(MANO_JSON) + r": "


@kind("ih2.6m file missing", r"nope\.json: cannot open the InterHand2\.6M file", IH)
def _(tmp): return {"files": [str(tmp / "nope.json")]}
@kind("ih2.6m source without files", r"pose source 'interhand' found no files", IH)
def _(tmp): return {"files": []}
@kind("ih2.6m empty file", AT + r"invalid or truncated JSON", IH)
def _(tmp): return ih_file(tmp, raw=b"")
@kind("ih2.6m binary garbage", AT + r"invalid or truncated JSON", IH)
def _(tmp): return ih_file(tmp, raw=gzip.compress(b"{}"))
@kind("ih2.6m truncated JSON", AT + r"invalid or truncated JSON after capture '7'", IH)
def _(tmp): return ih_file(tmp, raw=json.dumps(mano_doc()).encode()[:-40])
@kind("ih2.6m top level is a list", AT + r"the top level must be an object of captures", IH)
def _(tmp): return ih_file(tmp, [1, 2])
@kind("ih2.6m capture is not an object", AT + r"capture '0' must be an object of frames", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d.update({"0": [1]})))
@kind("ih2.6m frame is not an object", AT + r"capture '0' frame '10' must be an object", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"].update({"10": 3})))
@kind("ih2.6m hand is not an object", AT + r"capture '7' frame '501' hand 'left' must be an object or null", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["7"]["501"].update(left=[0.0])))
@kind("ih2.6m field missing", AT + r"capture '0' frame '10' hand 'right' field 'shape' is missing", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"]["10"]["right"].pop("shape")))
@kind("ih2.6m pose too short", AT + r"capture '7' frame '501' hand 'left' field 'pose' has 47 values, expected 48", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["7"]["501"]["left"]["pose"].pop()))
@kind("ih2.6m trans too long", AT + r"capture '0' frame '10' hand 'right' field 'trans' has 4 values, expected 3", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"]["10"]["right"]["trans"].append(1.0)))
@kind("ih2.6m string value", AT + r"capture '0' frame '10' hand 'right' field 'shape' value '0\.5' at flat index 2 is not a number", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"]["10"]["right"]["shape"].__setitem__(2, "0.5")))
@kind("ih2.6m null value", AT + r"capture '0' frame '10' hand 'left' field 'trans' value None at flat index 0 is not a number", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"]["10"]["left"]["trans"].__setitem__(0, None)))
@kind("ih2.6m nested list value", AT + r"capture '0' frame '10' hand 'right' field 'pose' (is ragged|has shape)", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"]["10"]["right"]["pose"].__setitem__(4, [1.0, 2.0])))
@kind("ih2.6m field is a number, not a list", AT + r"capture '0' frame '10' hand 'right' field 'trans' expected a list of shape \(3,\), got float", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"]["10"]["right"].update(trans=0.5)))
@kind("ih2.6m true inside pose", AT + r"capture '0' frame '10' hand 'right' field 'pose' value True at flat index 3 is a boolean", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"]["10"]["right"]["pose"].__setitem__(3, True)))
@kind("ih2.6m false inside shape", AT + r"capture '7' frame '501' hand 'left' field 'shape' value False at flat index 9 is a boolean", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["7"]["501"]["left"]["shape"].__setitem__(9, False)))
@kind("ih2.6m no two-hand frames", AT + r"no frame has both hands \(2 frames read, 2 without", IH)
def _(tmp): return ih_file(tmp, {"0": {"1": {"right": None, "left": hand(np.random.default_rng(0))}, "2": {}}})
@kind("ih2.6m empty object", AT + r"no frame has both hands \(0 frames read", IH)
def _(tmp): return ih_file(tmp, {})
@kind("ih2.6m oversized pose in a skipped frame", AT + r"capture '0' frame '11' holds more than 10000 values", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"].update({"11": {"right": {"pose": [0.0] * 300_000}, "left": None}})))
@kind("ih2.6m oversized nest of empty lists", AT + r"capture '7' frame '501' holds more than 10000 values", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["7"]["501"]["left"].update(pose=[[]] * 100_000)))
@kind("ih2.6m NaN value", r"(invalid or truncated JSON|column 'right_hand_pose'\[0\] is nan)", IH)
def _(tmp): return ih_file(tmp, raw=json.dumps(mutated(lambda d: d["0"]["10"]["right"]["pose"].__setitem__(3, float("nan")))).encode())
@kind("ih2.6m Infinity value", r"(invalid or truncated JSON|is inf \(not finite\))", IH)
def _(tmp): return ih_file(tmp, raw=json.dumps(mutated(lambda d: d["0"]["10"]["left"]["trans"].__setitem__(1, float("inf")))).encode())
@kind("ih2.6m value beyond float32", AT + r"row #0 \(pose_id='ih26m/train/0/10'\) column 'right_transl'\[0\] is inf \(not finite\)", IH)
def _(tmp): return ih_file(tmp, mutated(lambda d: d["0"]["10"]["right"]["trans"].__setitem__(0, 1e300)))


# ---- InterHand2.6M joints and cameras (readers) ------------------------------------------------

J = "InterHand2.6M_train_joint_3d.json"
C = "InterHand2.6M_train_camera.json"


@kind("ih2.6m joints field missing", re.escape(J) + r": capture '0' frame '1' field 'joint_valid' is missing")
def _(tmp): d = joints_doc(); d["0"]["1"].pop("joint_valid"); return reader(load_interhand_joints, tmp, J, d)
@kind("ih2.6m joints unknown hand_type", re.escape(J) + r": capture '0' frame '1' field 'hand_type' is 'both'")
def _(tmp): d = joints_doc(); d["0"]["1"]["hand_type"] = "both"; return reader(load_interhand_joints, tmp, J, d)
@kind("ih2.6m joints hand_type_valid not boolean", re.escape(J) + r": capture '0' frame '1' field 'hand_type_valid' is 'yes'")
def _(tmp): d = joints_doc(); d["0"]["1"]["hand_type_valid"] = "yes"; return reader(load_interhand_joints, tmp, J, d)
@kind("ih2.6m joints world_coord wrong shape", re.escape(J) + r": capture '0' frame '1' field 'world_coord' has shape \(41, 3\)")
def _(tmp): d = joints_doc(); d["0"]["1"]["world_coord"].pop(); return reader(load_interhand_joints, tmp, J, d)
@kind("ih2.6m joints true inside world_coord", re.escape(J) + r": capture '0' frame '1' field 'world_coord' value True at flat index 4 is a boolean")
def _(tmp): d = joints_doc(); d["0"]["1"]["world_coord"][1][1] = True; return reader(load_interhand_joints, tmp, J, d)
@kind("ih2.6m joints oversized record", re.escape(J) + r": capture '0' frame '1' holds more than 10000 values")
def _(tmp): d = joints_doc(); d["0"]["1"]["world_coord"] = [[0.0, 0.0, 0.0]] * 10_000; return reader(load_interhand_joints, tmp, J, d)
@kind("ih2.6m cameras field missing", re.escape(C) + r": capture '0' field 'focal' is missing or not an object")
def _(tmp): d = cameras_doc(); d["0"].pop("focal"); return reader(load_interhand_cameras, tmp, C, d)
@kind("ih2.6m cameras entry missing", re.escape(C) + r": capture '0' camera '400' field 'princpt' is missing")
def _(tmp): d = cameras_doc(); d["0"]["princpt"] = {"401": [1.0, 1.0]}; return reader(load_interhand_cameras, tmp, C, d)
@kind("ih2.6m cameras true inside campos", re.escape(C) + r": capture '0' camera '400' field 'campos' value True at flat index 1 is a boolean")
def _(tmp): d = cameras_doc(); d["0"]["campos"]["400"][1] = True; return reader(load_interhand_cameras, tmp, C, d)
@kind("ih2.6m cameras camrot wrong shape", re.escape(C) + r": capture '0' camera '400' field 'camrot' has shape \(2, 3\)")
def _(tmp): d = cameras_doc(); d["0"]["camrot"]["400"].pop(); return reader(load_interhand_cameras, tmp, C, d)
@kind("ih2.6m cameras capture not an object", re.escape(C) + r": capture '0' must be an object, got list")
def _(tmp): return reader(load_interhand_cameras, tmp, C, {"0": [1]})


# ---- HDR environment maps (through environment_maps) -------------------------------------------

HDR = "environment_maps"
MAP = r"library/envmaps/aaa_broken\.hdr: "


@kind("hdr not a Radiance file", MAP + r"not a Radiance HDR file", HDR)
def _(tmp): return library(b"\x89PNG\r\n\x1a\n" + bytes(100))
@kind("hdr header without end", MAP + r"truncated header", HDR)
def _(tmp): return library(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n")
@kind("hdr unsupported pixel format", MAP + r"unsupported format FORMAT=32-bit_rle_xyze", HDR)
def _(tmp): return library(b"#?RADIANCE\nFORMAT=32-bit_rle_xyze\n\n-Y 8 +X 16\n" + bytes(512))
@kind("hdr unsupported resolution line", MAP + r"unsupported resolution line", HDR)
def _(tmp): return library(hdr_with_size("+Y 8 -X 16"))
@kind("hdr non-numeric dimensions", MAP + r"resolution b'eight' x b'16' is not two positive integers", HDR)
def _(tmp): return library(hdr_with_size("-Y eight +X 16"))
@kind("hdr negative dimensions", MAP + r"resolution b'-8' x b'16' is not two positive integers", HDR)
def _(tmp): return library(hdr_with_size("-Y -8 +X 16"))
@kind("hdr zero dimensions", MAP + r"resolution 0 x 16 is outside", HDR)
def _(tmp): return library(hdr_with_size("-Y 0 +X 16"))
@kind("hdr huge dimensions", MAP + r"resolution 1000000 x 2000000 is outside", HDR)
def _(tmp): return library(hdr_with_size("-Y 1000000 +X 2000000"))
@kind("hdr too many pixels", MAP + r"resolution 30000 x 30000 is outside .*at most 134217728 pixels", HDR)
def _(tmp): return library(hdr_with_size("-Y 30000 +X 30000"))
@kind("hdr too small to light", MAP + r"resolution 1 x 1 is outside", HDR)
def _(tmp): return library(hdr_with_size("-Y 1 +X 1", bytes(4)))
@kind("hdr header claims more than the file holds", MAP + r"512 bytes of pixel data cannot hold 4096 x 8192 pixels", HDR)
def _(tmp): return library(hdr_with_size("-Y 4096 +X 8192"))
@kind("hdr flat data truncated", MAP + r"truncated pixel data at scanline 7", HDR)
def _(tmp): return library(envmaps.write_hdr(ENV)[:-5])
@kind("hdr run-length data truncated", MAP + r"run-length data ends inside scanline 7", HDR)
def _(tmp): return library(hdr_rle(ENV)[:-30])
@kind("hdr zero-length run", MAP + r"scanline 0 channel 0 has a run of 0 pixels at x=0", HDR)
def _(tmp):
    data = bytearray(hdr_rle(ENV))
    start = data.index(b"+X 16\n") + 6
    data[start + 4] = 0  # first run count of scanline 0
    return library(bytes(data))
@kind("hdr run past the scanline end", MAP + r"scanline 0 channel 0 has a run of 100 pixels at x=0 \(width 16\)", HDR)
def _(tmp):
    data = bytearray(hdr_rle(ENV))
    data[data.index(b"+X 16\n") + 10] = 228  # a repeat run of 100
    return library(bytes(data))
@kind("hdr scanline encoded for another width", MAP + r"scanline 0 is encoded for width 17, the header says 16", HDR)
def _(tmp):
    data = bytearray(hdr_rle(ENV))
    data[data.index(b"+X 16\n") + 9] = 17
    return library(bytes(data))
@kind("hdr all black", MAP + r"every pixel is black", HDR)
def _(tmp): return library(envmaps.write_hdr(np.zeros((8, 16, 3), np.float32)))


# ---- settings (refused when the run's resources are built) -------------------------------------

for _name, _env, _match in [
    ("settings n_views 0", {"n_views": "0"}, r"IH_N_VIEWS=0: Input should be greater than or equal to 1"),
    ("settings n_views -1", {"n_views": "-1"}, r"IH_N_VIEWS=-1: Input should be greater than or equal to 1"),
    ("settings n_augmentations -3", {"n_augmentations": "-3"}, r"IH_N_AUGMENTATIONS=-3: .*greater than or equal to 1"),
    ("settings n_augmentations 0", {"n_augmentations": "0"}, r"IH_N_AUGMENTATIONS=0: .*greater than or equal to 1"),
    ("settings optimize_batch_size 0", {"optimize_batch_size": "0"}, r"IH_OPTIMIZE_BATCH_SIZE=0: "),
    ("settings image_size 1", {"image_size": "1"}, r"IH_IMAGE_SIZE=1: Input should be greater than or equal to 16"),
    ("settings image_size 100000", {"image_size": "100000"}, r"IH_IMAGE_SIZE=100000: Input should be less than or equal to 8192"),
    ("settings n_environment_maps 0", {"n_environment_maps": "0"}, r"IH_N_ENVIRONMENT_MAPS=0: "),
    ("settings shard_size 0", {"shard_size": "0"}, r"IH_SHARD_SIZE=0: "),
    ("settings n_procedural_poses 0", {"n_procedural_poses": "0"}, r"IH_N_PROCEDURAL_POSES=0: "),
    ("settings dedup threshold NaN", {"dedup_threshold_mm": "nan"}, r"IH_DEDUP_THRESHOLD_MM=nan: Input should be a finite number"),
    ("settings dedup threshold negative", {"dedup_threshold_mm": "-1"}, r"IH_DEDUP_THRESHOLD_MM=-1\.0: "),
    ("settings anchors beyond the mesh", {"n_anchors_per_hand": "1000"}, r"IH_N_ANCHORS_PER_HAND=1000: .*less than or equal to 778"),
    ("settings discriminator epochs 0", {"discriminator_epochs": "0"}, r"IH_DISCRIMINATOR_EPOCHS=0: "),
    ("settings negative seed", {"seed": "-5"}, r"IH_SEED=-5: "),
    ("settings optimize_iterations negative", {"optimize_iterations": "-1"}, r"IH_OPTIMIZE_ITERATIONS=-1: "),
    ("settings non-integer value", {"n_views": "four"}, r"IH_N_VIEWS='four': not an integer; allowed: an integer from 1 to 1000"),
    ("settings unknown schedule", {"optimize_schedule": "fast"}, r"IH_OPTIMIZE_SCHEDULE='fast': Input should be 'renderih' or 'reference'"),
    ("settings unknown preset", {"preset": "huge"}, r"IH_PRESET='huge': unknown preset; allowed: one of 'demo', 'paper', 'test'"),
]:
    KINDS.append(Kind(_name, _match, lambda tmp, e=_env: settings(**e)))


# ---- metrics CLI -------------------------------------------------------------------------------

@kind("metrics 0 samples", r"gt\.npz: holds 0 samples")
def _(tmp): return cli(tmp, JOINTS, np.zeros((0, 42, 3)))
@kind("metrics all-invalid mask", r"gt\.npz: the 'valid' mask marks no joint of any sample as valid")
def _(tmp): return cli(tmp, JOINTS, {"joints": JOINTS, "valid": np.zeros((3, 42), bool)})
@kind("metrics --json into a missing folder", r"no/such/dir/scores\.json: the folder for the --json output does not exist")
def _(tmp): return cli(tmp, JOINTS, JOINTS, "--json", str(tmp / "no/such/dir/scores.json"))
@kind("metrics --json onto a folder", r"scores\.json: cannot write the scores \(Is a directory\)")
def _(tmp): (tmp / "scores.json").mkdir(); return cli(tmp, JOINTS, JOINTS, "--json", str(tmp / "scores.json"))
@kind("metrics wrong joint count", r"pred\.npz: joints have shape \(3, 21, 3\), expected \(N, 42, 3\)")
def _(tmp): return cli(tmp, JOINTS[:, :21], JOINTS)
@kind("metrics non-finite coordinates", r"pred\.npz: sample 1 has non-finite coordinates")
def _(tmp): bad = JOINTS.copy(); bad[1, 5, 2] = np.nan; return cli(tmp, bad, JOINTS)
@kind("metrics sample counts differ", r"pred\.npz: 2 samples, but .*gt\.npz has 3")
def _(tmp): return cli(tmp, JOINTS[:2], JOINTS)
@kind("metrics unsupported extension", r"pred\.csv: unsupported extension '\.csv'")
def _(tmp): (tmp / "pred.csv").write_text("1,2,3"); return cli(tmp, tmp / "pred.csv", JOINTS)
@kind("metrics JSON without joints", r"gt\.json: JSON object has no key 'joints'")
def _(tmp): (tmp / "gt.json").write_text('{"points": []}'); return cli(tmp, JOINTS, tmp / "gt.json")
@kind("metrics npz with a pickled object array", r"pred\.npz: cannot read joints \(Object arrays cannot be loaded")
def _(tmp):
    evil = np.empty(1, dtype=object)
    evil[0] = _Run("system", str(tmp / MARKER))
    np.savez(tmp / "pred.npz", joints=evil)
    return cli(tmp, tmp / "pred.npz", JOINTS)
@kind("metrics file missing", r"missing\.npz: cannot read joints")
def _(tmp): return cli(tmp, tmp / "missing.npz", JOINTS)
@kind("metrics mask of the wrong size", r"gt\.npz: valid has shape \(3, 41\), expected \(3, 42\)")
def _(tmp): return cli(tmp, JOINTS, {"joints": JOINTS, "valid": np.ones((3, 41), bool)})


# ---- pose tables and render manifests ----------------------------------------------------------

def _pose_table_bytes(mutate: Callable[[PoseTable], None]) -> bytes:
    from handsynth.pose_table import empty_meta, from_hands, HAND_PARAMS
    meta = empty_meta(2)
    meta["pose_id"] = pd.array(["a", "b"], dtype="string")
    table = from_hands(meta, {s: {p: np.zeros((2, k)) for p, k in HAND_PARAMS.items()} for s in ("right", "left")})
    mutate(table)
    return table.to_parquet_bytes()


@kind("pose table not Parquet", r"poses\.parquet: not a readable Parquet file")
def _(tmp): return lambda: PoseTable.from_parquet_bytes(b"PAR1garbage", "poses.parquet")
@kind("pose table repeated pose id", r"poses\.parquet: row #1 \(pose_id='a'\) column 'pose_id' repeats an earlier id")
def _(tmp):
    data = _pose_table_bytes(lambda t: t.meta.__setitem__("pose_id", pd.array(["a", "a"], dtype="string")))
    return lambda: PoseTable.from_parquet_bytes(data, "poses.parquet")
@kind("pose table NaN parameter", r"poses\.parquet: row #1 \(pose_id='b'\) column 'left_transl'\[2\] is nan")
def _(tmp):
    data = _pose_table_bytes(lambda t: t.arrays["left_transl"].__setitem__((1, 2), np.nan))
    return lambda: PoseTable.from_parquet_bytes(data, "poses.parquet")
@kind("pose table missing column", r"poses\.parquet: missing column 'right_betas'")
def _(tmp):
    data = _pose_table_bytes(lambda t: t.arrays.pop("right_betas"))
    return lambda: PoseTable.from_parquet_bytes(data, "poses.parquet")
@kind("render manifest with a repeated image member", r"check failed: .*'first_repeated'.*k/p\.tar@512")
def _(tmp):
    df = pd.DataFrame({"image_id": ["x/v00", "y/v00"], "tar_key": ["k/p.tar"] * 2, "rgb_offset": [512, 512],
                       "label_offset": [1024, 4096], "depth_offset": [2048, 8192]})
    return lambda: check(image_keys_unique(df))


# ---- the test ----------------------------------------------------------------------------------

def _materialize(k: Kind, spec: dict, tmp: Path):
    storage = MemoryStorage(name=f"catalogue-{abs(hash((k.name, str(tmp))))}", prefix="")
    for name, data in spec.get("maps", {}).items():
        storage.object_store().put_bytes(f"library/envmaps/{name}.hdr", data)
    hand_model = (HandModelResource(source="mano", mano_folder=spec["mano_folder"]) if "mano_folder" in spec
                  else HandModelResource())
    source = (PoseSourceResource(kind="interhand", interhand_mano_files=spec["files"]) if "files" in spec
              else PoseSourceResource())
    resources = {"settings": PipelineSettings.from_preset("test"), "hand_model": hand_model, "pose_source": source,
                 "storage": storage, "io_manager": io_manager_for(storage)}
    instance = DagsterInstance.ephemeral()
    asset = {"raw_poses": raw_poses, "environment_maps": environment_maps}[k.asset]
    result = materialize([asset], resources=resources, instance=instance, raise_on_error=False)
    return result, instance, "\n".join(_error_messages(result)), storage


def _error_messages(result) -> list[str]:
    """Each failed step's error and its causes (the reader's own exception)."""
    messages = []
    for failure in result.get_step_failure_events():
        error = failure.event_specific_data.error
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return messages


def test_the_catalogue_holds_at_least_90_kinds():
    names = [k.name for k in KINDS] + [k[0] for k in S3_KINDS]
    assert len(set(names)) == len(names) >= 90, len(names)


@pytest.mark.parametrize("k", KINDS, ids=[k.name for k in KINDS])
def test_bad_input_is_refused_naming_what_is_wrong(k: Kind, tmp_path: Path):
    built = k.build(tmp_path)
    if k.asset is None:
        with pytest.raises(Exception) as err:
            built()
        message = str(err.value)
        assert not isinstance(err.value, (IndexError, KeyError, ZeroDivisionError, AttributeError, MemoryError)), message
    else:
        result, instance, message, storage = _materialize(k, built, tmp_path)
        assert not result.success
        assert instance.get_latest_materialization_event(AssetKey(k.asset)) is None
        # nothing was written for the asset (the library maps put there by the test aside)
        written = [key for key in storage.object_store().list_keys("") if not key.startswith("library/")]
        assert written == [], written
    assert re.search(k.match, message, re.DOTALL), f"{k.name}: {message[:2000]}"
    assert not (tmp_path / MARKER).exists(), f"{k.name}: code from the input ran"


# ---- s3:// sources (a real SeaweedFS; through raw_poses) ---------------------------------------

S3_KINDS = [
    ("s3 object missing", lambda bucket: f"s3://{bucket}/nope/{MANO_JSON}", r"s3://{bucket}/nope/.*: cannot read the S3 object"),
    ("s3 bucket missing", lambda bucket: f"s3://{bucket}-gone/{MANO_JSON}", r"s3://{bucket}-gone/.*: cannot read the S3 object"),
    ("s3 URI without a key", lambda bucket: f"s3://{bucket}", r"s3://{bucket}: an S3 URI must be s3://bucket/key"),
]


@pytest.mark.parametrize("name, uri, match", S3_KINDS, ids=[k[0] for k in S3_KINDS])
def test_bad_s3_source_is_refused_naming_the_uri(name, uri, match, seaweed_server):  # noqa: F811
    s3 = s3_storage(seaweed_server)
    s3.object_store().put_bytes("elsewhere/object.bin", b"x")  # the bucket exists
    storage = MemoryStorage(name=f"catalogue-s3-{name}", prefix="")
    resources = {"settings": PipelineSettings.from_preset("test"), "hand_model": HandModelResource(),
                 "pose_source": PoseSourceResource(kind="interhand", interhand_mano_files=[uri(s3.bucket)], s3=s3),
                 "storage": storage, "io_manager": io_manager_for(storage)}
    instance = DagsterInstance.ephemeral()
    result = materialize([raw_poses], resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    assert instance.get_latest_materialization_event(AssetKey("raw_poses")) is None
    assert storage.object_store().list_keys("") == []
    message = "\n".join(_error_messages(result))
    assert re.search(match.format(bucket=re.escape(s3.bucket)), message), message


def test_image_key_uniqueness_check_blocks_the_shard():
    spec = next(iter(image_keys_unique.check_specs))
    assert spec.blocking and spec.asset_key == AssetKey("rendered_views")
