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

Images keep their PNG content under the ``.jpg`` names both loaders build: both read them with
``cv2.imread``, which decodes by content, so images are hard-linked (or copied) rather than
re-encoded lossily. Splits are chosen per *distinct* pose (a hash of ``distinct_pose_id``), so no
pose and none of its augmentations leak across splits.

Pixel convention of every 2D quantity: the exact projection ``K (R X + t)`` in the renderer's
pixel frame; with the renderer sampling pixel centres, integer coordinates are pixel centres
(OpenCV's convention, which both loaders assume).

Writers take an iterable of :class:`ExportImage`, a ``put(relative_path, data)`` callable and a
``place_image(relative_path, source_key)`` callable, so the same code writes a local folder
(hard links to a local store) or annotation files plus an image index into an object store. JSON
text is encoded image by image into byte chunks, so memory holds the encoded output, never a
dict tree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import pandas as pd
import torch

from handsynth.keypoints import KEYPOINT_NAMES, convert_keypoints, to_ih26m_42
from handsynth.pose_table import SIDES
from handsynth.rotations import aa_to_matrix

T = TypeVar("T")
Put = Callable[[str, bytes], None]
#: ``place_image(relative_path, source_key)``: link, copy or record one image of the layout.
PlaceImage = Callable[[str, str], None]
#: ``read(source_key) -> bytes`` of a rendered image (for derived images: masks, heatmaps).
ReadBytes = Callable[[str], bytes]

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

    file_name: str  # the rendered image's file name (names the image in errors)
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
    rgb_key: str = ""  # object keys of the rendered images (empty: no images to place)
    label_key: str = ""
    depth_key: str = ""

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


def local_put(root: str | os.PathLike[str]) -> Put:
    """A ``put`` writing below a local folder (parents created as needed).

    Writes a new file and renames it into place, so a path that was a hard link to a rendered
    image is replaced, never written through (which would change the source image).
    """

    def put(relative_path: str, data: bytes) -> None:
        path = os.path.join(root, *PurePosixPath(relative_path).parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    return put


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
    files: list[str] = field(default_factory=list)  # every relative path written or placed


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


class _InterHandSplit:
    """JSON chunks of one split's four files, appended image by image."""

    def __init__(self) -> None:
        self.images: list[str] = []
        self.anns: list[str] = []
        self.cams: dict[str, list[str]] = {fld: [] for fld in ("campos", "camrot", "focal", "princpt")}
        self.joints: list[str] = []
        self.mano: list[str] = []

    def texts(self, capture: int) -> dict[str, str]:
        key = _dumps(str(capture))
        cameras = ",".join(f'"{fld}":{{{",".join(chunks)}}}' for fld, chunks in self.cams.items())
        return {
            "data": f'{{"images":[{",".join(self.images)}],"annotations":[{",".join(self.anns)}],'
                    f'"categories":[{{"id":1,"name":"hand"}}]}}',
            "camera": f"{{{key}:{{{cameras}}}}}",
            "joint_3d": f"{{{key}:{{{','.join(self.joints)}}}}}",
            "MANO_NeuralAnnot": f"{{{key}:{{{','.join(self.mano)}}}}}",
        }


def write_interhand_dataset(
    images: Iterable[ExportImage],
    put: Put,
    place_image: PlaceImage | None = None,
    *,
    splits: Mapping[str, float] | None = None,
    capture: int = 0,
    seq_name: str = "renderih",
    subject: int = 0,
) -> InterHandExport:
    """Write the IH2.6M layout: ``skeleton.txt``, four annotation files per split, the images.

    Every split in :data:`SPLITS` gets its files (possibly empty), because IH2.6M code opens
    train, val and test. All joints are marked valid (synthetic ground truth is exact); per-image
    visibility goes to an extra ``joint_visible`` field, which IH2.6M loaders ignore. Images are
    handed to ``place_image`` as ``images/{split}/{file_name}`` with their RGB object key.
    """
    fractions = check_splits(splits or DEFAULT_SPLITS)
    parts = {s: _InterHandSplit() for s in SPLITS}
    counts = {s: 0 for s in SPLITS}
    files: list[str] = []
    frames: dict[str, tuple[int, str, str]] = {}  # pose_id -> (frame_idx, digest, first file)
    joint_valid = [[True]] * 42
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
        if image.pose_id not in frames:
            frame_idx = len(frames)
            frames[image.pose_id] = (frame_idx, digest, image.file_name)
            part.joints.append(f'"{frame_idx}":{joint_entry}')
            part.mano.append(f'"{frame_idx}":{mano_entry}')
        else:
            frame_idx, first_digest, first_file = frames[image.pose_id]
            if digest != first_digest:
                raise ExportError(
                    f"export image {image.file_name!r}: pose_id {image.pose_id!r} has different keypoints or MANO "
                    f"parameters than image {first_file!r} of the same pose"
                )
        for fld, value in ih26m_camera(image).items():
            part.cams[fld].append(f'"{cam}":{_dumps(value)}')
        file_name = ih26m_image_name(capture, seq_name, cam, frame_idx)
        part.images.append(_dumps({
            "id": image_id, "file_name": file_name, "width": int(image.width), "height": int(image.height),
            "capture": capture, "subject": subject, "seq_name": seq_name, "camera": cam, "frame_idx": frame_idx,
            "renderih_source": image.rgb_key or image.file_name,
        }))
        visible = to_ih26m_42(image.visibility[0], image.visibility[1], axis=-1).astype(int)  # (42,)
        part.anns.append(_dumps({
            "id": image_id, "image_id": image_id, "category_id": 1, "bbox": ih26m_bbox(image),
            "joint_valid": [[1]] * 42, "joint_visible": visible[:, None].tolist(),
            "hand_type": "interacting", "hand_type_valid": 1,
        }))
        if place_image is not None and image.rgb_key:
            path = f"images/{split}/{file_name}"
            place_image(path, image.rgb_key)
            files.append(path)
        counts[split] += 1
    put(SKELETON_PATH, skeleton_text().encode())
    files.append(SKELETON_PATH)
    paths = {s: interhand_paths(s) for s in SPLITS}
    for split, part in parts.items():
        for kind, text in part.texts(capture).items():
            put(paths[split][kind], text.encode("utf-8"))
            files.append(paths[split][kind])
    return InterHandExport(paths=paths, images=counts, frames=len(frames), files=files)


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
    mano = {}
    for h, side in enumerate(SIDES):
        mano[side] = {
            "R": aa_to_matrix(torch.as_tensor(image.pose[h, :3], dtype=torch.float64)).numpy()[None].astype(np.float32),
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
        "renderih": {"pose_id": image.pose_id, "distinct_pose_id": image.distinct_pose_id, "source": image.rgb_key,
                     "joints2d_wrist_first": {s: uv[h].astype(np.float32) for h, s in enumerate(SIDES)},
                     "visible_wrist_first": {s: vis[h].astype(np.uint8) for h, s in enumerate(SIDES)}},
    }


def intaghand_mask(labels: np.ndarray) -> np.ndarray:
    """RGB mask as IntagHand's renderer writes it: left hand red (255), right hand green (255).

    Part labels: 1-16 right hand, 17-32 left (see the annotation docs).
    """
    out = np.zeros((*labels.shape, 3), np.uint8)
    out[..., 0] = np.where((labels >= 17) & (labels <= 32), 255, 0)
    out[..., 1] = np.where((labels >= 1) & (labels <= 16), 255, 0)
    return out


def intaghand_dense(labels: np.ndarray) -> np.ndarray:
    """A dense-correspondence image: each hand part gets a fixed colour on black.

    IntagHand colours vertices by its own ``dense_coor`` file (not redistributable with MANO); a
    per-part colour carries the same kind of signal (which surface point is seen) at part level.
    """
    palette = np.zeros((33, 3), np.uint8)
    part = np.arange(1, 33)
    palette[1:, 0] = 40 + ((part - 1) % 16) * 13
    palette[1:, 1] = np.where(part <= 16, 220, 90)
    palette[1:, 2] = 255 - ((part - 1) % 16) * 13
    return palette[np.clip(labels, 0, 32)]


def intaghand_heatmaps(joints2d: np.ndarray, image_size: int) -> list[np.ndarray]:
    """Seven uint8 (64, 64, 3) images of the 21 joints' Gaussians (IntagHand's ``hms`` files)."""
    uv = joints2d * HEATMAP_SIZE / image_size  # (21, 2)
    ys, xs = np.mgrid[0:HEATMAP_SIZE, 0:HEATMAP_SIZE].astype(np.float32)
    maps = np.exp(-((xs[None] - uv[:, 0, None, None]) ** 2 + (ys[None] - uv[:, 1, None, None]) ** 2)
                  / (2 * HEATMAP_SIGMA**2))
    maps = (maps * 255).round().astype(np.uint8).transpose(1, 2, 0)  # (64, 64, 21)
    return [maps[..., 3 * k: 3 * k + 3] for k in range(7)]


@dataclass
class IntagHandExport:
    """What :func:`write_intaghand_dataset` wrote."""

    images: dict[str, int]  # split -> images
    files: list[str]  # every relative path written or placed


def write_intaghand_dataset(
    images: Iterable[ExportImage],
    put: Put,
    place_image: PlaceImage,
    read: ReadBytes,
    pca_inverse: Mapping[str, np.ndarray],
    *,
    splits: Mapping[str, float] | None = None,
) -> IntagHandExport:
    """Write IntagHand's layout: per split ``anno/{idx}.pkl``, ``img``, ``mask``, ``dense``, ``hms``.

    ``idx`` counts 0.. within a split (IntagHand finds ``len(glob(anno/*.pkl))`` and opens
    ``{idx}``). The RGB image is placed (linked); mask, dense and heatmaps are derived from the
    part-label image and the 2D keypoints and written as PNG content (lossless; cv2 reads by
    content). ``pca_inverse[side]`` = ``inv(hands_components)`` of the hand model, see
    :func:`pca_inverses`.
    """
    fractions = check_splits(splits or DEFAULT_SPLITS)
    from handsynth.render.raster import decode_png, encode_png

    counts = {s: 0 for s in SPLITS}
    files: list[str] = []
    for image in images:
        split = split_of(image.distinct_pose_id or image.pose_id, fractions)
        idx = counts[split]
        if not (image.rgb_key and image.label_key):
            raise ExportError(f"export image {image.file_name!r}: IntagHand's layout needs its rgb and label images")
        if image.width != image.height:
            raise ExportError(f"export image {image.file_name!r}: IntagHand expects square images, got "
                              f"{image.width}x{image.height}")
        record = intaghand_record(image, idx, pca_inverse)
        labels = decode_png(read(image.label_key))
        derived = {f"{split}/mask/{idx}.jpg": intaghand_mask(labels), f"{split}/dense/{idx}.jpg": intaghand_dense(labels)}
        for side in ("left", "right"):
            maps = intaghand_heatmaps(record["renderih"]["joints2d_wrist_first"][side], image.width)
            derived.update({f"{split}/hms/{idx}_{k}_{side}.jpg": m for k, m in enumerate(maps)})
        place_image(f"{split}/img/{idx}.jpg", image.rgb_key)
        files.append(f"{split}/img/{idx}.jpg")
        for path, array in derived.items():
            put(path, encode_png(array))
            files.append(path)
        put(f"{split}/anno/{idx}.pkl", portable_pickle(record))
        files.append(f"{split}/anno/{idx}.pkl")
        counts[split] += 1
    return IntagHandExport(images=counts, files=files)


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


def logged(items: list[T], log: Callable[[str], None], what: str, every: int = 1000) -> Iterator[T]:
    """Yield ``items``, logging count, rate and ETA every ``every`` items (long exports in a
    Dagster run, where no progress bar is seen)."""
    start = time.monotonic()
    for i, item in enumerate(items, start=1):
        yield item
        if i % every == 0 or i == len(items):
            rate = i / max(time.monotonic() - start, 1e-9)
            log(f"{what}: {i}/{len(items)} images, {rate:.0f}/s, ETA {(len(items) - i) / rate:.0f} s")


# ---- local folders -----------------------------------------------------------------------


def local_place_image(root: str | os.PathLike[str], read: ReadBytes,
                      source_path: Callable[[str], Path | None] = lambda key: None) -> PlaceImage:
    """A ``place_image`` for a local folder: a hard link when the source is a local file on the
    same file system (no second copy), else a copy of the bytes from ``read``."""

    def place(relative_path: str, source_key: str) -> None:
        dst = Path(root, *PurePosixPath(relative_path).parts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = source_path(source_key)
        dst.unlink(missing_ok=True)
        if src is not None:
            try:
                os.link(src, dst)
                return
            except OSError:
                pass  # another file system or no hard links: copy
        dst.write_bytes(read(source_key))

    return place


def remove_orphans(existing: Iterable[str], written: Iterable[str], delete: Callable[[str], None]) -> list[str]:
    """Delete every existing path an export did not write this time; return them.

    An export re-run with fewer images (e.g. fewer views after ``--refresh``) would otherwise
    leave files that loaders count (IntagHand globs ``anno/*.pkl``).
    """
    keep = set(written)
    orphans = sorted(p for p in existing if p not in keep)
    for path in orphans:
        delete(path)
    return orphans


def local_files(root: str | os.PathLike[str]) -> list[str]:
    """Relative '/'-paths of every file below ``root`` (empty if it does not exist)."""
    base = Path(root)
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()) if base.is_dir() else []


def export_images(annotations: pd.DataFrame) -> list[ExportImage]:
    """The pipeline's annotation table (handsynth.annotate) as export records."""
    from handsynth.annotate import stack

    n = len(annotations)
    if n == 0:
        return []
    world = stack(annotations, "keypoints3d_world_mm", (2, 21, 3)) / 1000.0
    vis = stack(annotations, "visibility", (2, 21)).astype(bool)
    K, R, t = stack(annotations, "K", (3, 3)), stack(annotations, "R", (3, 3)), stack(annotations, "t", (3,))
    mano = {f: np.stack([stack(annotations, f"{s}_{name}", (w,)) for s in ("right", "left")], axis=1)
            for f, (name, w) in {"pose": ("mano_pose", 48), "shape": ("shape", 10), "trans": ("trans", 3)}.items()}
    return [
        ExportImage(
            file_name=str(annotations["rgb_key"].iloc[i]).rsplit("/", 1)[-1], width=int(annotations["width"].iloc[i]),
            height=int(annotations["height"].iloc[i]), K=K[i], R=R[i], t=t[i], pose=mano["pose"][i],
            shape=mano["shape"][i], trans=mano["trans"][i], keypoints=world[i], visibility=vis[i],
            pose_id=str(annotations["pose_id"].iloc[i]), distinct_pose_id=str(annotations["distinct_pose_id"].iloc[i]),
            rgb_key=str(annotations["rgb_key"].iloc[i]), label_key=str(annotations["label_key"].iloc[i]),
            depth_key=str(annotations["depth_key"].iloc[i]))
        for i in range(n)
    ]
