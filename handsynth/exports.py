"""Writers for the synthetic data set in the two layouts existing training code reads.

RenderIH's value is that unmodified two-hand pose estimators train on it, so the images are
annotated twice:

1. the InterHand2.6M layout (``annotations/{split}/InterHand2.6M_{split}_{data,camera,joint_3d,
   MANO_NeuralAnnot}.json``): one ``capture`` for the whole synthetic set, one camera entry per
   rendered image, one ``frame_idx`` per two-hand pose (images of the same pose share it), 42
   joints in IH2.6M order, millimetres, IH2.6M's camera convention;
2. the IntagHand-style layout: one file per image (``{split}/anno/<image stem>.json|npz``) with
   the camera, both hands' MANO parameters and wrist-first 2D/3D keypoints in the camera frame.

Writers take an iterable of :class:`ExportImage` and a ``put(relative_path, data)`` callable, so
the same code writes to a local folder (:func:`local_put`) or to an object store. JSON text is
encoded image by image into byte chunks, so memory holds the encoded output, never a dict tree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, ClassVar, Iterable, Literal

import numpy as np
import pandas as pd

from handsynth.keypoints import convert_keypoints, to_ih26m_42
from handsynth.pose_table import SIDES

Put = Callable[[str, bytes], None]

#: MANO fields of one hand as IH2.6M names them, and their lengths.
MANO_WIDTHS: dict[str, int] = {"pose": 48, "shape": 10, "trans": 3}


class ExportError(ValueError):
    """An export record is malformed; the message names the image and the field."""


@dataclass
class ExportImage:
    """One rendered image with everything both export layouts need (world frame in metres).

    Hand axes are ``(right, left)`` as in :data:`handsynth.pose_table.SIDES`.
    """

    file_name: str  # image path relative to the split's image folder
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
    """A ``put`` writing below a local folder (parents created as needed)."""

    def put(relative_path: str, data: bytes) -> None:
        path = os.path.join(root, *PurePosixPath(relative_path).parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)

    return put


def _floats(x: np.ndarray) -> list:
    """Nested lists of the float32 values (IH2.6M's precision) for JSON."""
    return np.asarray(x, dtype=np.float32).astype(np.float64).tolist()


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ---- InterHand2.6M layout ----------------------------------------------------------------


@dataclass
class InterHandExport:
    """What :func:`write_interhand_dataset` wrote."""

    paths: dict[str, str]  # kind ("data", "camera", "joint_3d", "MANO_NeuralAnnot") -> path
    images: int
    frames: int


def interhand_paths(split: str) -> dict[str, str]:
    """Relative paths of the four annotation files of a split, as IH2.6M loaders expect them."""
    return {
        kind: f"annotations/{split}/InterHand2.6M_{split}_{kind}.json"
        for kind in ("data", "camera", "joint_3d", "MANO_NeuralAnnot")
    }


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


def write_interhand_dataset(
    images: Iterable[ExportImage],
    put: Put,
    *,
    split: str = "train",
    capture: int = 0,
    seq_name: str = "renderih",
    subject: int = 0,
) -> InterHandExport:
    """Write the four IH2.6M annotation files for ``images`` through ``put``.

    All joints are marked valid (synthetic ground truth is exact); per-image visibility goes to
    an extra ``joint_visible`` field of each annotation, which IH2.6M loaders ignore.
    """
    image_chunks: list[str] = []
    ann_chunks: list[str] = []
    cam_chunks: dict[str, list[str]] = {fld: [] for fld in ("campos", "camrot", "focal", "princpt")}
    joint_chunks: list[str] = []
    mano_chunks: list[str] = []
    frames: dict[str, tuple[int, str, str]] = {}  # pose_id -> (frame_idx, digest, first file)
    joint_valid = [[True]] * 42
    n = 0
    for n, image in enumerate(images, start=1):
        image_id = n - 1
        cam = str(image_id)
        joints_mm = to_ih26m_42(image.keypoints[0], image.keypoints[1]) * 1000.0  # (42, 3)
        joint_entry = _dumps(
            {
                "world_coord": _floats(joints_mm),
                "joint_valid": joint_valid,
                "hand_type": "interacting",
                "hand_type_valid": True,
            }
        )
        mano_entry = _dumps(
            {side: {fld: _floats(getattr(image, fld)[h]) for fld in MANO_WIDTHS} for h, side in enumerate(SIDES)}
        )
        digest = hashlib.blake2b((joint_entry + mano_entry).encode(), digest_size=16).hexdigest()
        if image.pose_id not in frames:
            frames[image.pose_id] = (len(frames), digest, image.file_name)
            frame_idx = len(frames) - 1
            joint_chunks.append(f'"{frame_idx}":{joint_entry}')
            mano_chunks.append(f'"{frame_idx}":{mano_entry}')
        else:
            frame_idx, first_digest, first_file = frames[image.pose_id]
            if digest != first_digest:
                raise ExportError(
                    f"export image {image.file_name!r}: pose_id {image.pose_id!r} has different keypoints or MANO "
                    f"parameters than image {first_file!r} of the same pose"
                )
        for fld, value in ih26m_camera(image).items():
            cam_chunks[fld].append(f'"{cam}":{_dumps(value)}')
        image_chunks.append(
            _dumps(
                {
                    "id": image_id,
                    "file_name": image.file_name,
                    "width": int(image.width),
                    "height": int(image.height),
                    "capture": capture,
                    "subject": subject,
                    "seq_name": seq_name,
                    "camera": cam,
                    "frame_idx": frame_idx,
                }
            )
        )
        visible = to_ih26m_42(image.visibility[0], image.visibility[1], axis=-1).astype(int)  # (42,)
        ann_chunks.append(
            _dumps(
                {
                    "id": image_id,
                    "image_id": image_id,
                    "bbox": ih26m_bbox(image),
                    "joint_valid": [[1]] * 42,
                    "joint_visible": visible[:, None].tolist(),
                    "hand_type": "interacting",
                    "hand_type_valid": 1,
                }
            )
        )
    key = _dumps(str(capture))
    cameras = ",".join(f'"{fld}":{{{",".join(chunks)}}}' for fld, chunks in cam_chunks.items())
    texts = {
        "data": f'{{"images":[{",".join(image_chunks)}],"annotations":[{",".join(ann_chunks)}]}}',
        "camera": f"{{{key}:{{{cameras}}}}}",
        "joint_3d": f"{{{key}:{{{','.join(joint_chunks)}}}}}",
        "MANO_NeuralAnnot": f"{{{key}:{{{','.join(mano_chunks)}}}}}",
    }
    paths = interhand_paths(split)
    for kind, text in texts.items():
        put(paths[kind], text.encode("utf-8"))
    return InterHandExport(paths=paths, images=n, frames=len(frames))


# ---- IntagHand-style layout --------------------------------------------------------------


def intaghand_record(image: ExportImage) -> dict[str, np.ndarray]:
    """Flat per-image arrays for IntagHand-style training code (wrist-first order, camera frame).

    Keys: ``file_name``, ``width``, ``height``, ``K`` (3,3), ``R`` (3,3), ``t`` (3,) metres, and
    per side ``{side}_global_orient`` (3,), ``{side}_hand_pose`` (45,), ``{side}_betas`` (10,),
    ``{side}_transl`` (3,) (world frame MANO parameters), ``{side}_joints3d`` (21,3) camera
    frame metres, ``{side}_joints2d`` (21,2) pixels, ``{side}_visible`` (21,) bool.
    """
    cam = convert_keypoints(image.keypoints_camera(), "mano", "wrist_first")  # (2, 21, 3)
    uv = convert_keypoints(image.keypoints_pixels(), "mano", "wrist_first")  # (2, 21, 2)
    vis = convert_keypoints(image.visibility, "mano", "wrist_first", axis=-1)  # (2, 21)
    record: dict[str, np.ndarray] = {
        "file_name": np.array(image.file_name),
        "width": np.array(int(image.width)),
        "height": np.array(int(image.height)),
        "K": image.K.astype(np.float32),
        "R": image.R.astype(np.float32),
        "t": image.t.astype(np.float32),
    }
    for h, side in enumerate(SIDES):
        record[f"{side}_global_orient"] = image.pose[h, :3].astype(np.float32)
        record[f"{side}_hand_pose"] = image.pose[h, 3:].astype(np.float32)
        record[f"{side}_betas"] = image.shape[h].astype(np.float32)
        record[f"{side}_transl"] = image.trans[h].astype(np.float32)
        record[f"{side}_joints3d"] = cam[h].astype(np.float32)
        record[f"{side}_joints2d"] = uv[h].astype(np.float32)
        record[f"{side}_visible"] = vis[h]
    return record


def intaghand_path(image: ExportImage, split: str, fmt: str) -> str:
    """``{split}/anno/<image path without extension>.{fmt}``."""
    return f"{split}/anno/{PurePosixPath(image.file_name).with_suffix('')}.{fmt}"


def write_intaghand_dataset(
    images: Iterable[ExportImage], put: Put, *, split: str = "train", fmt: Literal["json", "npz"] = "json"
) -> list[str]:
    """Write one :func:`intaghand_record` file per image; return the paths written."""
    if fmt not in ("json", "npz"):
        raise ValueError(f"fmt must be 'json' or 'npz', got {fmt!r}")
    paths = []
    for image in images:
        record = intaghand_record(image)
        if fmt == "json":
            data = _dumps({k: v.tolist() if v.dtype.kind != "f" else _floats(v) for k, v in record.items()}).encode()
        else:
            buf = io.BytesIO()
            np.savez(buf, **record)
            data = buf.getvalue()
        path = intaghand_path(image, split, fmt)
        put(path, data)
        paths.append(path)
    return paths


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
            pose_id=str(annotations["pose_id"].iloc[i]))
        for i in range(n)
    ]
