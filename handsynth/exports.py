"""Writers for the synthetic data set in the on-disk layouts that existing training code reads.

RenderIH's value is that unmodified two-hand pose estimators train on it, so each layout is the
one the real loader opens, file for file (replayed in ``tests/test_exports.py``):

1. InterHand2.6M (``data/InterHand2.6M/dataset.py`` of facebookresearch/InterHand2.6M):
   ``annotations/skeleton.txt``; per split (``train``, ``val``, ``test``)
   ``annotations/{split}/InterHand2.6M_{split}_{data,camera,joint_3d,MANO_NeuralAnnot}.json`` and
   the images at ``images/{split}/{file_name}`` with ``file_name`` =
   ``Capture{c}/{seq_name}/cam{camera}/image{frame}.jpg``. One ``capture`` for the synthetic set,
   one camera entry per rendered image, one ``frame_idx`` per two-hand pose (images of one pose
   share it), 42 joints in IH2.6M order, millimetres, ``camrot`` = world->camera rotation,
   ``campos`` = camera centre in mm.
2. IntagHand (``dataset/interhand.py``, class ``InterHand_dataset``): per split
   ``{split}/anno/{idx}.pkl`` (``camera`` R/t(m)/K, ``mano_params`` per hand with ``R`` the root
   rotation matrix (1,3,3), ``pose`` the 45 PCA coefficients, ``shape``, ``trans`` (m)), beside
   ``img/{idx}.jpg``, ``mask/{idx}.jpg`` (left hand in the red channel, right in green, as its
   renderer writes them), ``dense/{idx}.jpg`` and ``hms/{idx}_{0..6}_{left,right}.jpg``.

Images are real JPEG files (:func:`handsynth.export_files.encode_jpeg`: quality 95, 4:4:4
chroma), decoded from the render blocks' PNG members with one ranged read each. Splits are chosen
per *distinct* pose (a hash of ``distinct_pose_id``), so no pose and none of its augmentations
leak across splits.

Pixel convention of every 2D quantity: the exact projection ``K (R X + t)`` in the renderer's
pixel frame; with the renderer sampling pixel centres, integer coordinates are pixel centres
(OpenCV's convention, which both loaders assume).

Streaming: writers take an iterable of :class:`ExportImage` (one shard's table at a time, see
:func:`iter_export_images`), an :class:`handsynth.export_files.ExportFiles` (local folder or
object store; it writes ``SHA256SUMS``) and ``read_image(image, kind)`` for the rendered PNG
bytes. Memory does not grow with the number of images: IntagHand's files are written image by
image; IH2.6M's JSON documents are appended entry by entry to temporary files on disk (one per
JSON array or object body) and streamed into place at the end. What remains is a byte per image
(its split) and 16 bytes per pose (where its frame starts, for :meth:`InterHandExport.expects`,
and its id's hash, to refuse a pose whose images are not consecutive).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import itertools
import json
import os
import pickle
import re
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import pandas as pd
import torch

from handsynth.export_files import SUMS_FILE, ExportFiles, encode_jpeg
from handsynth.keypoints import KEYPOINT_NAMES, convert_keypoints, to_ih26m_42
from handsynth.pose_table import SIDES
from handsynth.rotations import aa_to_matrix

T = TypeVar("T")
#: ``read_image(image, kind) -> bytes``: the rendered PNG of ``kind`` ("rgb", "label", "depth") of
#: an :class:`ExportImage` (for the pipeline: :func:`handsynth.render.blocks.read_member` of its row).
ReadImage = Callable[["ExportImage", str], bytes]

#: The three splits IH2.6M's and IntagHand's loaders know.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Default fractions of distinct poses per split.
DEFAULT_SPLITS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}

#: MANO fields of one hand as IH2.6M names them, and their lengths.
MANO_WIDTHS: dict[str, int] = {"pose": 48, "shape": 10, "trans": 3}


class ExportError(ValueError):
    """An export record is malformed; the message names the image and the field."""


@dataclass
class ExportImage:
    """One rendered image with everything both export layouts need (world frame in metres).

    Hand axes are ``(right, left)`` as in :data:`handsynth.pose_table.SIDES`.
    """

    file_name: str  # the rendered image's id (names the image in errors and in the exported records)
    width: int
    height: int
    K: np.ndarray  # (3, 3) intrinsics, pixels (zero skew)
    R: np.ndarray  # (3, 3) world -> camera rotation
    t: np.ndarray  # (3,) world -> camera translation, metres: X_cam = R @ X + t
    pose: np.ndarray  # (2, 48) global orient (3) then 45 finger axis-angle, flat_hand_mean=False
    shape: np.ndarray  # (2, 10) MANO betas
    trans: np.ndarray  # (2, 3) MANO translation, metres
    keypoints: np.ndarray  # (2, 21, 3) world keypoints, metres, MANO order
    visibility: np.ndarray  # (2, 21) bool, keypoint visible in this image
    pose_id: str  # the two-hand pose shown; images of one pose share an IH2.6M frame
    distinct_pose_id: str = ""  # the source pose before augmentation; decides the split
    location: Mapping[str, Any] | None = None  # where its rendered PNGs are, for ``read_image``
                                              # (a manifest row's location columns); None: no images

    _SHAPES: ClassVar[dict[str, tuple[int, ...]]] = {
        "K": (3, 3),
        "R": (3, 3),
        "t": (3,),
        "pose": (2, 48),
        "shape": (2, 10),
        "trans": (2, 3),
        "keypoints": (2, 21, 3),
        "visibility": (2, 21),
    }

    def __post_init__(self) -> None:
        where = f"export image {self.file_name!r}"
        for name, shape in self._SHAPES.items():
            try:
                arr = np.asarray(getattr(self, name), dtype=bool if name == "visibility" else np.float64)
            except (TypeError, ValueError) as exc:
                raise ExportError(f"{where}: field {name!r} is not numeric ({exc})") from exc
            if arr.shape != shape:
                raise ExportError(f"{where}: field {name!r} has shape {arr.shape}, expected {shape}")
            if not np.isfinite(arr).all():
                raise ExportError(f"{where}: field {name!r} has non-finite values")
            setattr(self, name, arr)
        if self.K[0, 1] != 0 or np.any(self.K[2] != (0, 0, 1)):
            raise ExportError(f"{where}: field 'K' must be [[fx,0,cx],[0,fy,cy],[0,0,1]] (IH2.6M has no skew)")
        if not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-5) or np.linalg.det(self.R) < 0:
            raise ExportError(f"{where}: field 'R' is not a rotation matrix (IH2.6M stores campos = -R^T t)")
        if (
            not (isinstance(self.width, (int, np.integer)) and isinstance(self.height, (int, np.integer)))
            or min(self.width, self.height) <= 0
        ):
            raise ExportError(f"{where}: width/height must be positive integers, got {self.width}x{self.height}")

    def keypoints_camera(self) -> np.ndarray:
        """Keypoints in the camera frame, metres: ``(2, 21, 3)``, MANO order."""
        return self.keypoints @ self.R.T + self.t

    def keypoints_pixels(self) -> np.ndarray:
        """Projected keypoints ``(2, 21, 2)`` in pixels, MANO order."""
        uvw = self.keypoints_camera() @ self.K.T  # (2, 21, 3)
        return uvw[..., :2] / uvw[..., 2:]


def _floats(x: np.ndarray) -> list:
    """Nested lists of the float32 values (IH2.6M's precision) for JSON."""
    return np.asarray(x, dtype=np.float32).astype(np.float64).tolist()


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ---- splits ------------------------------------------------------------------------------


def parse_splits(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` -> fractions (validated by :func:`check_splits`)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ExportError(f"split {part!r}: expected NAME=FRACTION, e.g. train=0.8") from None
        if not sep:
            raise ExportError(f"split {part!r}: expected NAME=FRACTION, e.g. train=0.8")
    return check_splits(out)


def check_splits(fractions: Mapping[str, float]) -> dict[str, float]:
    """Fractions per split: names among :data:`SPLITS`, non-negative, summing to 1."""
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ExportError(f"unknown split(s) {unknown}; IH2.6M and IntagHand loaders know {list(SPLITS)}")
    if any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ExportError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    return {s: float(fractions.get(s, 0.0)) for s in SPLITS}


def split_of(distinct_pose_id: str, fractions: Mapping[str, float]) -> str:
    """The split of a distinct pose: a BLAKE2 hash of its id, uniform in [0, 1), cut by the fractions.

    Hashing the *distinct* pose (not the image or augmented pose) keeps every augmentation and
    view of one source pose in one split, and the assignment does not depend on which other
    poses exist, so adding shards never moves a pose to another split.
    """
    h = int.from_bytes(hashlib.blake2b(distinct_pose_id.encode(), digest_size=8).digest(), "big") / 2.0**64
    edge = 0.0
    for name in SPLITS:
        edge += fractions.get(name, 0.0)
        if h < edge:
            return name
    return next(s for s in reversed(SPLITS) if fractions.get(s, 0.0) > 0)


# ---- InterHand2.6M layout ----------------------------------------------------------------

SKELETON_PATH = "annotations/skeleton.txt"


@dataclass
class InterHandExport:
    """What :func:`write_interhand_dataset` wrote."""

    paths: dict[str, dict[str, str]]  # split -> kind ("data", "camera", "joint_3d", "MANO_NeuralAnnot") -> path
    images: dict[str, int]  # split -> images
    frames: int
    capture: int
    seq_name: str
    split_codes: bytes = field(repr=False)  # per image: index in SPLITS, +8 when its JPEG was not written
    frame_starts: array = field(repr=False)  # per frame: its first image (frames are runs of images)

    def expects(self, path: str) -> bool:
        """Whether ``path`` is a file of this export (the rest of a folder are orphans)."""
        if path in (SKELETON_PATH, SUMS_FILE) or any(path in p.values() for p in self.paths.values()):
            return True
        found = re.fullmatch(r"images/(\w+)/" + re.escape(f"Capture{self.capture}/{self.seq_name}/")
                             + r"cam(\d+)/image\d+\.jpg", path)
        if not found or found[1] not in SPLITS or int(found[2]) >= len(self.split_codes):
            return False
        cam = int(found[2])
        frame = bisect.bisect_right(self.frame_starts, cam) - 1
        return (self.split_codes[cam] == SPLITS.index(found[1])
                and path == f"images/{found[1]}/{ih26m_image_name(self.capture, self.seq_name, str(cam), frame)}")


def interhand_paths(split: str) -> dict[str, str]:
    """Relative paths of the four annotation files of a split, as IH2.6M loaders expect them."""
    return {
        kind: f"annotations/{split}/InterHand2.6M_{split}_{kind}.json"
        for kind in ("data", "camera", "joint_3d", "MANO_NeuralAnnot")
    }


def skeleton_text() -> str:
    """IH2.6M's ``skeleton.txt``: ``name id parent_id`` per joint, right hand 0-20, left 21-41.

    The loader splits each line on single spaces and ``int()``s the ids, so the file has no blank
    line; parents follow the tip-to-wrist chain of each finger (``*1`` joints hang on the wrist).
    """
    names = KEYPOINT_NAMES["ih26m"]
    lines = ["# joint_name joint_id joint_parent_id"]
    for offset, prefix in ((0, "r_"), (21, "l_")):
        for i, name in enumerate(names):
            if name == "wrist":
                parent = -1
            elif name.endswith("1"):
                parent = offset + names.index("wrist")
            else:
                parent = offset + names.index(name[:-1] + str(int(name[-1]) - 1))
            lines.append(f"{prefix}{name} {offset + i} {parent}")
    return "\n".join(lines) + "\n"


def ih26m_image_name(capture: int, seq_name: str, camera: str, frame_idx: int) -> str:
    """``file_name`` of an image, IH2.6M style: ``Capture0/<seq>/cam<camera>/image<frame>.jpg``."""
    return f"Capture{capture}/{seq_name}/cam{camera}/image{frame_idx:05d}.jpg"


def ih26m_camera(image: ExportImage) -> dict[str, list]:
    """IH2.6M camera entry: centre ``campos = -R^T t`` (mm), ``camrot = R``, focal, principal point."""
    K = image.K
    return {
        "campos": _floats(-image.R.T @ image.t * 1000.0),
        "camrot": _floats(image.R),
        "focal": _floats([K[0, 0], K[1, 1]]),
        "princpt": _floats([K[0, 2], K[1, 2]]),
    }


def ih26m_bbox(image: ExportImage) -> list[float]:
    """COCO ``[x, y, w, h]`` around both hands' projected keypoints, clipped to the image."""
    uv = image.keypoints_pixels().reshape(-1, 2)  # (42, 2)
    lo = np.clip(uv.min(axis=0), 0, [image.width, image.height])
    hi = np.clip(uv.max(axis=0), 0, [image.width, image.height])
    return _floats(np.concatenate([lo, hi - lo]))


class _SplitSpool:
    """One split's four JSON documents as they grow: the body of each JSON array or object (entries
    joined by commas) goes to its own temporary file on disk; :meth:`documents` streams the
    documents around them. Memory holds one entry at a time."""

    BODIES = ("images", "annotations", "campos", "camrot", "focal", "princpt", "joint_3d", "MANO_NeuralAnnot")

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._files: dict[str, IO[bytes]] = {b: stack.enter_context(tempfile.TemporaryFile()) for b in self.BODIES}
        self._empty = dict.fromkeys(self.BODIES, True)

    def add(self, body: str, entry: str) -> None:
        out = self._files[body]
        if not self._empty[body]:
            out.write(b",")
        out.write(entry.encode("utf-8"))
        self._empty[body] = False

    def _body(self, body: str) -> Iterator[bytes]:
        spool = self._files[body]
        spool.flush()
        spool.seek(0)
        while chunk := spool.read(1 << 20):
            yield chunk

    def documents(self, capture: int) -> dict[str, Iterator[bytes]]:
        """kind -> the chunks of its file (``data``, ``camera``, ``joint_3d``, ``MANO_NeuralAnnot``)."""
        key = _dumps(str(capture)).encode()
        camera = [b"{" + key + b":{"]
        for i, fld in enumerate(("campos", "camrot", "focal", "princpt")):
            camera.append(f'{"," if i else ""}"{fld}":{{'.encode())
            camera.append(self._body(fld))  # type: ignore[arg-type]
            camera.append(b"}")
        camera.append(b"}}")
        data = [b'{"images":[', self._body("images"), b'],"annotations":[', self._body("annotations"),
                b'],"categories":[{"id":1,"name":"hand"}]}']
        return {
            "data": _chunks(data),
            "camera": _chunks(camera),
            "joint_3d": _chunks([b"{" + key + b":{", self._body("joint_3d"), b"}}"]),
            "MANO_NeuralAnnot": _chunks([b"{" + key + b":{", self._body("MANO_NeuralAnnot"), b"}}"]),
        }


def _chunks(parts: list[bytes | Iterator[bytes]]) -> Iterator[bytes]:
    """Flatten literal byte strings and chunk iterators, in order."""
    return itertools.chain.from_iterable((p,) if isinstance(p, bytes) else p for p in parts)


def write_interhand_dataset(
    images: Iterable[ExportImage],
    files: ExportFiles,
    read_image: ReadImage | None = None,
    *,
    splits: Mapping[str, float] | None = None,
    capture: int = 0,
    seq_name: str = "renderih",
    subject: int = 0,
) -> InterHandExport:
    """Write the IH2.6M layout: ``skeleton.txt``, four annotation files per split, the images.

    Every split in :data:`SPLITS` gets its files (possibly empty), because IH2.6M code opens
    train, val and test. All joints are marked valid (synthetic ground truth is exact); per-image
    visibility goes to an extra ``joint_visible`` field, which IH2.6M loaders ignore. With
    ``read_image``, each image's RGB is written as a JPEG at ``images/{split}/{file_name}``.
    Images of one ``pose_id`` share a frame and must come one after another (the pipeline's
    tables hold a pose's views together), which is what lets this writer keep no per-pose table.
    """
    fractions = check_splits(splits or DEFAULT_SPLITS)
    counts = {s: 0 for s in SPLITS}
    split_codes, frame_starts = bytearray(), array("q")  # for InterHandExport.expects: a byte per image,
                                                           # 8 per frame
    seen_poses = _HashSet()  # 64-bit hashes of finished poses: a pose may not come back later
    current: tuple[str, int, str, str, int] | None = None  # (pose_id, frame_idx, digest, first image, id hash)
    joint_valid = [[True]] * 42
    with contextlib.ExitStack() as stack:
        parts = {s: _SplitSpool(stack) for s in SPLITS}
        for image_id, image in enumerate(images):
            split = split_of(image.distinct_pose_id or image.pose_id, fractions)
            part = parts[split]
            cam = str(image_id)
            joints_mm = to_ih26m_42(image.keypoints[0], image.keypoints[1]) * 1000.0  # (42, 3)
            joint_entry = _dumps({"world_coord": _floats(joints_mm), "joint_valid": joint_valid,
                                  "hand_type": "interacting", "hand_type_valid": True})
            mano_entry = _dumps(
                {side: {fld: _floats(getattr(image, fld)[h]) for fld in MANO_WIDTHS} for h, side in enumerate(SIDES)}
            )
            digest = hashlib.blake2b((joint_entry + mano_entry).encode(), digest_size=16).hexdigest()
            if current is None or current[0] != image.pose_id:
                if current is not None:
                    seen_poses.add(current[4])
                pose_hash = _hash64(image.pose_id)
                if pose_hash in seen_poses:
                    raise ExportError(f"export image {image.file_name!r}: the images of pose_id {image.pose_id!r} "
                                      "do not come one after another (an IH2.6M frame is written once per pose)")
                current = (image.pose_id, len(frame_starts), digest, image.file_name, pose_hash)
                frame_starts.append(image_id)
                part.add("joint_3d", f'"{current[1]}":{joint_entry}')
                part.add("MANO_NeuralAnnot", f'"{current[1]}":{mano_entry}')
            elif digest != current[2]:
                raise ExportError(
                    f"export image {image.file_name!r}: pose_id {image.pose_id!r} has different keypoints or MANO "
                    f"parameters than image {current[3]!r} of the same pose"
                )
            frame_idx = current[1]
            for fld, value in ih26m_camera(image).items():
                part.add(fld, f'"{cam}":{_dumps(value)}')
            file_name = ih26m_image_name(capture, seq_name, cam, frame_idx)
            part.add("images", _dumps({
                "id": image_id, "file_name": file_name, "width": int(image.width), "height": int(image.height),
                "capture": capture, "subject": subject, "seq_name": seq_name, "camera": cam, "frame_idx": frame_idx,
                "renderih_source": image.file_name,
            }))
            visible = to_ih26m_42(image.visibility[0], image.visibility[1], axis=-1).astype(int)  # (42,)
            part.add("annotations", _dumps({
                "id": image_id, "image_id": image_id, "category_id": 1, "bbox": ih26m_bbox(image),
                "joint_valid": [[1]] * 42, "joint_visible": visible[:, None].tolist(),
                "hand_type": "interacting", "hand_type_valid": 1,
            }))
            if read_image is not None and image.location is not None:
                from handsynth.render.raster import decode_png

                files.put(f"images/{split}/{file_name}", encode_jpeg(decode_png(read_image(image, "rgb"))))
            split_codes.append(SPLITS.index(split) + (0 if read_image is not None and image.location is not None else 8))
            counts[split] += 1
        files.put(SKELETON_PATH, skeleton_text().encode())
        paths = {s: interhand_paths(s) for s in SPLITS}
        for split, part in parts.items():
            for kind, chunks in part.documents(capture).items():
                files.write(paths[split][kind], chunks)
    return InterHandExport(paths=paths, images=counts, frames=len(frame_starts), capture=capture, seq_name=seq_name,
                           split_codes=bytes(split_codes), frame_starts=frame_starts)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class _HashSet:
    """A set of distinct 64-bit hashes in 8 bytes each (a Python set of ints takes ~60): a sorted
    NumPy array, and the latest additions in a small set merged into it every :attr:`MERGE`
    additions. At paper scale (100K poses in a 1M-image export) that is 0.8 MB instead of ~7 MB."""

    MERGE = 4096

    def __init__(self) -> None:
        self._sorted = np.zeros(0, np.uint64)
        self._recent: set[int] = set()

    def __contains__(self, value: int) -> bool:
        if value in self._recent:
            return True
        i = int(np.searchsorted(self._sorted, np.uint64(value)))
        return i < len(self._sorted) and int(self._sorted[i]) == value

    def add(self, value: int) -> None:
        """Add a value not in the set (the writer adds a pose once, after checking it)."""
        self._recent.add(value)
        if len(self._recent) >= self.MERGE:
            self._sorted = np.union1d(self._sorted, np.fromiter(self._recent, np.uint64, len(self._recent)))
            self._recent.clear()


# ---- IntagHand layout --------------------------------------------------------------------

#: IntagHand's heatmaps: 64x64 Gaussians (sigma 2 px) of the 21 wrist-first joints, 7 images of 3
#: channels per hand (``dataset/dataset_utils.py``: HEATMAP_SIZE, HEATMAP_SIGMA).
HEATMAP_SIZE = 64
HEATMAP_SIGMA = 2.0


class _PortableArrayPickler(pickle.Pickler):
    """Pickles arrays as ``numpy.array(nested_list, dtype)``.

    NumPy 2 pickles arrays through ``numpy._core``, which NumPy 1.x (IntagHand's environment)
    cannot import; ``numpy.array`` exists in every version, and it is the only global a reader
    of these files needs (see :func:`safe_load_pickle`).
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return np.array, (obj.tolist(), obj.dtype.str)
        return NotImplemented


def _plain(obj: Any) -> Any:
    """NumPy scalars -> Python numbers inside dicts/lists (they would pickle as NumPy globals)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj.item() if isinstance(obj, np.generic) else obj


def portable_pickle(obj: Any) -> bytes:
    """Pickle bytes of plain dicts/lists/str/numbers/arrays (protocol 2, readable by Python 3.x)."""
    buf = io.BytesIO()
    _PortableArrayPickler(buf, protocol=2).dump(_plain(obj))
    return buf.getvalue()


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global but ``numpy.array``: nothing in the file can run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "array"):
            return np.array
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only numpy.array)")


def safe_load_pickle(data: bytes, where: str) -> Any:
    """Read a pickle written by :func:`portable_pickle`; a clear error naming ``where`` otherwise."""
    try:
        return _ArrayOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ExportError(f"{where}: not a plain-data pickle ({exc})") from exc


def intaghand_record(image: ExportImage, idx: int, pca_inverse: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The content of IntagHand's ``anno/{idx}.pkl`` for one image.

    ``camera``: ``R`` (3,3) world->camera, ``t`` (3,) metres, ``camera`` = K (3,3); per hand
    ``mano_params[side]``: ``R`` (1,3,3) root rotation, ``pose`` (1,45) PCA coefficients
    ``(hand_pose) @ inv(hands_components)`` (IH2.6M's pose is relative to ``hands_mean``, as
    IntagHand's ``axis2pca`` subtracts it), ``shape`` (1,10), ``trans`` (1,3) metres. ``renderih``
    adds what IntagHand does not store (ids, wrist-first 2D keypoints, visibility).
    """
    uv = convert_keypoints(image.keypoints_pixels(), "mano", "wrist_first")
    vis = convert_keypoints(image.visibility, "mano", "wrist_first", axis=-1)
    roots = aa_to_matrix(torch.as_tensor(image.pose[:, :3], dtype=torch.float64)).numpy()   # (2, 3, 3)
    mano = {}
    for h, side in enumerate(SIDES):
        mano[side] = {
            "R": roots[h][None].astype(np.float32),
            "pose": (image.pose[h, 3:] @ pca_inverse[side])[None].astype(np.float32),
            "shape": image.shape[h][None].astype(np.float32),
            "trans": image.trans[h][None].astype(np.float32),
        }
    return {
        "inter_idx": idx,
        "image": {"file_name": image.file_name, "width": int(image.width), "height": int(image.height)},
        "annotation": {"hand_type": "interacting", "hand_type_valid": 1},
        "mano_params": mano,
        "camera": {"R": image.R.astype(np.float32), "t": image.t.astype(np.float32), "camera": image.K.astype(np.float64)},
        "renderih": {"pose_id": image.pose_id, "distinct_pose_id": image.distinct_pose_id, "source": image.file_name,
                     "joints2d_wrist_first": {s: uv[h].astype(np.float32) for h, s in enumerate(SIDES)},
                     "visible_wrist_first": {s: vis[h].astype(np.uint8) for h, s in enumerate(SIDES)}},
    }


def _label_colours(colours: Mapping[range, tuple[int, int, int]]) -> np.ndarray:
    """A (256, 3) uint8 lookup table from part label to colour (black where not listed): one
    gather per image instead of comparisons per label range."""
    table = np.zeros((256, 3), np.uint8)
    for labels, colour in colours.items():
        table[labels.start:labels.stop] = colour
    return table


#: IntagHand's mask colours: left hand (labels 17-32) red, right hand (1-16) green.
_MASK_COLOURS = _label_colours({range(17, 33): (255, 0, 0), range(1, 17): (0, 255, 0)})
#: Dense colours per part (1-32); forearms, sleeves and accessories (33+) stay black.
_DENSE_COLOURS = _label_colours({
    range(p, p + 1): (40 + ((p - 1) % 16) * 13, 220 if p <= 16 else 90, 255 - ((p - 1) % 16) * 13) for p in range(1, 33)})


def intaghand_mask(labels: np.ndarray) -> np.ndarray:
    """RGB mask as IntagHand's renderer writes it: left hand red (255), right hand green (255).

    Part labels: 1-16 right hand, 17-32 left (see the annotation docs).
    """
    return np.take(_MASK_COLOURS, np.asarray(labels, np.uint8), axis=0)


def intaghand_dense(labels: np.ndarray) -> np.ndarray:
    """A dense-correspondence image: each hand part gets a fixed colour on black.

    IntagHand colours vertices by its own ``dense_coor`` file (not redistributable with MANO); a
    per-part colour carries the same kind of signal (which surface point is seen) at part level.
    """
    return np.take(_DENSE_COLOURS, np.asarray(labels, np.uint8), axis=0)


def intaghand_heatmaps(joints2d: np.ndarray, image_size: int) -> list[np.ndarray]:
    """Seven uint8 (64, 64, 3) images of the 21 joints' Gaussians (IntagHand's ``hms`` files)."""
    uv = joints2d * HEATMAP_SIZE / image_size  # (21, 2)
    grid = np.arange(HEATMAP_SIZE, dtype=np.float32)
    # the Gaussian is separable: a column profile times a row profile per joint
    gx, gy = (np.exp(-((grid[None] - uv[:, a, None]) ** 2) / (2 * HEATMAP_SIGMA**2)) for a in (0, 1))  # (21, 64)
    maps = gy[:, :, None] * gx[:, None, :]  # (21, 64, 64): rows y, columns x
    maps = (maps * 255).round().astype(np.uint8).transpose(1, 2, 0)  # (64, 64, 21)
    return [maps[..., 3 * k: 3 * k + 3] for k in range(7)]


@dataclass
class IntagHandExport:
    """What :func:`write_intaghand_dataset` wrote."""

    images: dict[str, int]  # split -> images

    def expects(self, path: str) -> bool:
        """Whether ``path`` is a file of this export (the rest of a folder are orphans)."""
        if path == SUMS_FILE:
            return True
        found = (re.fullmatch(r"(\w+)/(?:anno/(\d+)\.pkl|(?:img|mask|dense)/(\d+)\.jpg|hms/(\d+)_[0-6]_(?:left|right)\.jpg)",
                              path))
        if not found or found[1] not in SPLITS:
            return False
        return int(next(g for g in found.groups()[1:] if g is not None)) < self.images[found[1]]


def write_intaghand_dataset(
    images: Iterable[ExportImage],
    files: ExportFiles,
    read_image: ReadImage,
    pca_inverse: Mapping[str, np.ndarray],
    *,
    splits: Mapping[str, float] | None = None,
    first: Mapping[str, int] | None = None,
) -> IntagHandExport:
    """Write IntagHand's layout: per split ``anno/{idx}.pkl``, ``img``, ``mask``, ``dense``, ``hms``.

    ``idx`` counts 0.. within a split (IntagHand finds ``len(glob(anno/*.pkl))`` and opens
    ``{idx}``). Every ``.jpg`` is a JPEG: the RGB image re-encoded, and mask, dense and heatmaps
    derived from the part-label image and the 2D keypoints (JPEG like IntagHand's own files; its
    loader thresholds the mask). ``pca_inverse[side]`` = ``inv(hands_components)`` of the hand
    model, see :func:`pca_inverses`. ``first`` (per split) is where ``images`` start when they are
    one part of an export written by several processes (:func:`intaghand_split_counts` of the parts
    before); the result counts this part's images.
    """
    fractions = check_splits(splits or DEFAULT_SPLITS)
    from handsynth.render.raster import decode_png

    counts = {s: 0 for s in SPLITS}
    for image in images:
        split = split_of(image.distinct_pose_id or image.pose_id, fractions)
        idx = (first or {}).get(split, 0) + counts[split]
        if image.location is None:
            raise ExportError(f"export image {image.file_name!r}: IntagHand's layout needs its rgb and label images")
        if image.width != image.height:
            raise ExportError(f"export image {image.file_name!r}: IntagHand expects square images, got "
                              f"{image.width}x{image.height}")
        record = intaghand_record(image, idx, pca_inverse)
        labels = decode_png(read_image(image, "label"))
        files.put(f"{split}/img/{idx}.jpg", encode_jpeg(decode_png(read_image(image, "rgb"))))
        files.put(f"{split}/mask/{idx}.jpg", encode_jpeg(intaghand_mask(labels)))
        files.put(f"{split}/dense/{idx}.jpg", encode_jpeg(intaghand_dense(labels)))
        for side in ("left", "right"):
            maps = intaghand_heatmaps(record["renderih"]["joints2d_wrist_first"][side], image.width)
            for k, m in enumerate(maps):
                files.put(f"{split}/hms/{idx}_{k}_{side}.jpg", encode_jpeg(m))
        files.put(f"{split}/anno/{idx}.pkl", portable_pickle(record))
        counts[split] += 1
    return IntagHandExport(images=counts)


def intaghand_split_counts(tables: Iterable[pd.DataFrame], splits: Mapping[str, float] | None = None) -> dict[str, int]:
    """Images per split of annotation rows (at least ``distinct_pose_id`` and ``pose_id``), split
    as :func:`write_intaghand_dataset` splits them: the running sums over the parts of a parallel
    export say where each part's ``idx`` start. One hash per distinct pose, not per row."""
    fractions = check_splits(splits or DEFAULT_SPLITS)
    counts = dict.fromkeys(SPLITS, 0)
    for table in tables:
        ids = table["distinct_pose_id"].astype(str)
        ids = ids.where(ids != "", table["pose_id"].astype(str))
        for pose, n in ids.value_counts(sort=False).items():
            counts[split_of(pose, fractions)] += int(n)
    return counts


def pca_inverses(model_folder: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``inv(hands_components)`` (45, 45) per side from the model files in ``model_folder``.

    The PCA basis lives in the MANO files (``MANO_{RIGHT,LEFT}.pkl|npz``; the stand-in writes the
    same schema), not in smplx's layer, which keeps only the first few components.
    """
    from handsynth.hand_model.mano_files import read_mano_file

    folder = Path(model_folder)
    out = {}
    for side in SIDES:
        name = f"MANO_{side.upper()}"
        path = next((folder / f"{name}{ext}" for ext in (".npz", ".pkl") if (folder / f"{name}{ext}").is_file()), None)
        if path is None:
            raise ExportError(f"{folder}: no {name}.npz or {name}.pkl, needed for IntagHand's PCA pose")
        components = np.asarray(read_mano_file(path)["hands_components"], np.float64)
        out[side] = np.linalg.inv(components)
    return out


def logged(items: Iterable[T], log: Callable[[str], None], what: str, total: int, every: int = 1000) -> Iterator[T]:
    """Yield ``items`` (``total`` of them), logging count, rate and ETA every ``every`` items (long
    exports in a Dagster run, where no progress bar is seen)."""
    start = time.monotonic()
    for i, item in enumerate(items, start=1):
        yield item
        if i % every == 0 or i == total:
            rate = i / max(time.monotonic() - start, 1e-9)
            log(f"{what}: {i}/{total} images, {rate:.0f}/s, ETA {max(total - i, 0) / rate:.0f} s")


def export_columns() -> list[str]:
    """The annotation columns :func:`iter_export_images` reads: a reader that streams the tables
    passes them as ``columns`` and skips the rest (the camera-frame and 2D keypoints alone are
    two thirds of a table's decoded bytes; exports recompute them from the world keypoints)."""
    from handsynth.render.blocks import LOCATION_COLUMNS

    mano = [f"{s}_{name}" for s in SIDES for name in ("mano_pose", "shape", "trans")]
    return ["image_id", "pose_id", "distinct_pose_id", "width", "height", "keypoints3d_world_mm", "visibility",
            "K", "R", "t", *mano, *LOCATION_COLUMNS]


def iter_export_images(tables: Iterable[pd.DataFrame]) -> Iterator[ExportImage]:
    """The pipeline's annotation tables (handsynth.annotate; one shard's table at a time, at
    least the :func:`export_columns`) as export records, row by row; each record's ``location``
    is its row's location columns, for :func:`handsynth.render.blocks.read_member`."""
    from handsynth.annotate import stack
    from handsynth.render.blocks import LOCATION_COLUMNS

    for table in tables:
        n = len(table)
        if n == 0:
            continue
        world = stack(table, "keypoints3d_world_mm", (2, 21, 3)) / 1000.0
        vis = stack(table, "visibility", (2, 21)).astype(bool)
        K, R, t = stack(table, "K", (3, 3)), stack(table, "R", (3, 3)), stack(table, "t", (3,))
        mano = {f: np.stack([stack(table, f"{s}_{name}", (w,)) for s in ("right", "left")], axis=1)
                for f, (name, w) in {"pose": ("mano_pose", 48), "shape": ("shape", 10), "trans": ("trans", 3)}.items()}
        scalars = table[["image_id", "pose_id", "distinct_pose_id", "width", "height", *LOCATION_COLUMNS]]
        for i, row in enumerate(scalars.itertuples(index=False)):
            values = row._asdict()
            yield ExportImage(
                file_name=str(values["image_id"]), width=int(values["width"]), height=int(values["height"]),
                K=K[i], R=R[i], t=t[i], pose=mano["pose"][i], shape=mano["shape"][i], trans=mano["trans"][i],
                keypoints=world[i], visibility=vis[i], pose_id=str(values["pose_id"]),
                distinct_pose_id=str(values["distinct_pose_id"]), location={c: values[c] for c in LOCATION_COLUMNS})
