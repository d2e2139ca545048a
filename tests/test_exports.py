"""Exports in the IH2.6M and IntagHand layouts, read back with the project's readers and by
re-doing what IH2.6M's own data loader does with the files."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

from handsynth.exports import (
    ExportError,
    ExportImage,
    intaghand_path,
    interhand_paths,
    local_put,
    write_intaghand_dataset,
    write_interhand_dataset,
)
from handsynth.keypoints import convert_keypoints, from_ih26m_42
from handsynth.sources.interhand import load_interhand_cameras, load_interhand_joints, load_interhand_mano


def _look_at(eye: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV world->camera (R, t) of a camera at ``eye`` looking at the origin."""
    z = -eye / np.linalg.norm(eye)
    x = np.cross([0.0, 1.0, 0.3], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ eye


def _images(n_poses: int = 3, n_views: int = 2, seed: int = 0) -> list[ExportImage]:
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_poses):
        pose, shape, trans = rng.normal(size=(2, 48)) * 0.3, rng.normal(size=(2, 10)), rng.normal(size=(2, 3)) * 0.05
        keypoints = rng.normal(size=(2, 21, 3)) * 0.05  # metres around the origin
        for v in range(n_views):
            direction = rng.normal(size=3)
            R, t = _look_at(direction / np.linalg.norm(direction) * 0.6)  # 0.6 m from the hands
            f = rng.uniform(400, 600)
            out.append(
                ExportImage(
                    file_name=f"shard=00001/pose{p:03d}_{v}_rgb.png",
                    width=256,
                    height=256,
                    K=np.array([[f, 0, 128.0 + v], [0, f * 1.01, 127.0], [0, 0, 1]]),
                    R=R,
                    t=t,
                    pose=pose,
                    shape=shape,
                    trans=trans,
                    keypoints=keypoints,
                    visibility=rng.random((2, 21)) > 0.3,
                    pose_id=f"pose{p:03d}",
                )
            )
    return out


@pytest.fixture()
def exported(tmp_path):
    images = _images()
    summary = write_interhand_dataset(iter(images), local_put(tmp_path), split="train")
    return images, summary, tmp_path


def test_interhand_export_reads_back_mano_params(exported):
    images, summary, root = exported
    assert (summary.images, summary.frames) == (6, 3)
    table = load_interhand_mano(str(root / summary.paths["MANO_NeuralAnnot"]), split_name="train")
    assert list(table.meta["pose_id"]) == ["ih26m/train/0/0", "ih26m/train/0/1", "ih26m/train/0/2"]
    for frame in range(3):
        image = images[2 * frame]  # first view of each pose
        for h, side in enumerate(("right", "left")):
            np.testing.assert_array_equal(table.arrays[f"{side}_global_orient"][frame], np.float32(image.pose[h, :3]))
            np.testing.assert_array_equal(table.arrays[f"{side}_hand_pose"][frame], np.float32(image.pose[h, 3:]))
            np.testing.assert_array_equal(table.arrays[f"{side}_betas"][frame], np.float32(image.shape[h]))
            np.testing.assert_array_equal(table.arrays[f"{side}_transl"][frame], np.float32(image.trans[h]))


def test_interhand_export_reads_back_keypoints_and_cameras(exported):
    images, summary, root = exported
    joints = load_interhand_joints(str(root / summary.paths["joint_3d"]))
    assert list(joints.frame) == ["0", "1", "2"] and set(joints.hand_type) == {"interacting"}
    assert joints.valid.all() and joints.hand_type_valid.all()
    right, left = from_ih26m_42(joints.world_mm / 1000.0)  # back to MANO order, metres
    for frame in range(3):
        np.testing.assert_allclose(right[frame], images[2 * frame].keypoints[0], atol=1e-6)
        np.testing.assert_allclose(left[frame], images[2 * frame].keypoints[1], atol=1e-6)

    cams = load_interhand_cameras(str(root / summary.paths["camera"]))["0"]
    assert cams.names == [str(i) for i in range(6)]
    for i, image in enumerate(images):
        np.testing.assert_allclose(cams.K[i], image.K, rtol=1e-6)
        np.testing.assert_allclose(cams.R[i], image.R, atol=1e-6)
        np.testing.assert_allclose(cams.t[i], image.t, atol=1e-6)


def test_interhand_export_works_with_ih26m_loader_logic(exported):
    """Follow InterHand2.6M's own dataset.py: look everything up by str(capture), str(camera),
    str(frame_idx), project with world2cam / cam2pixel, and compare with our projections."""
    images, summary, root = exported
    load = lambda kind: json.loads((root / summary.paths[kind]).read_text())  # noqa: E731
    db, cameras, joints = load("data"), load("camera"), load("joint_3d")
    by_id = {img["id"]: img for img in db["images"]}
    assert len(db["annotations"]) == len(images)
    for ann in db["annotations"]:
        img = by_id[ann["image_id"]]
        ours = images[ann["image_id"]]
        assert img["file_name"] == ours.file_name and (img["width"], img["height"]) == (256, 256)
        cam = cameras[str(img["capture"])]
        campos = np.array(cam["campos"][str(img["camera"])])
        camrot = np.array(cam["camrot"][str(img["camera"])])
        focal = np.array(cam["focal"][str(img["camera"])])
        princpt = np.array(cam["princpt"][str(img["camera"])])
        world = np.array(joints[str(img["capture"])][str(img["frame_idx"])]["world_coord"])  # (42, 3) mm
        joint_cam = (camrot @ (world.T - campos[:, None])).T  # world2cam
        uv = joint_cam[:, :2] / joint_cam[:, 2:] * focal + princpt  # cam2pixel
        expected = np.concatenate([convert_keypoints(ours.keypoints_pixels()[h], "mano", "ih26m") for h in (0, 1)])
        np.testing.assert_allclose(uv, expected, atol=1e-3)
        np.testing.assert_allclose(
            joint_cam / 1000,
            np.concatenate([convert_keypoints(ours.keypoints_camera()[h], "mano", "ih26m") for h in (0, 1)]),
            atol=1e-6,
        )
        assert np.array(ann["joint_valid"]).shape == (42, 1) and ann["hand_type"] == "interacting"
        vis = np.array(ann["joint_visible"])[:, 0].astype(bool)
        np.testing.assert_array_equal(from_ih26m_42(vis, axis=-1)[0], ours.visibility[0])
        x, y, w, h = ann["bbox"]
        inside = (uv >= 0).all(axis=1) & (uv[:, 0] <= 256) & (uv[:, 1] <= 256)
        assert (uv[inside] >= [x - 1e-3, y - 1e-3]).all() and (uv[inside] <= [x + w + 1e-3, y + h + 1e-3]).all()
        assert 0 <= x and 0 <= y and x + w <= 256 + 1e-3 and y + h <= 256 + 1e-3
        assert inside.sum() >= 21  # the cameras see the hands


def test_interhand_paths_follow_ih26m_naming():
    assert interhand_paths("val")["camera"] == "annotations/val/InterHand2.6M_val_camera.json"


def test_same_pose_id_with_different_data_is_rejected(tmp_path):
    a, b = _images(n_poses=2, n_views=1)
    b.pose_id = a.pose_id
    with pytest.raises(ExportError, match=r"pose_id 'pose000' has different keypoints or MANO parameters than image"):
        write_interhand_dataset([a, b], local_put(tmp_path))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("keypoints", np.zeros((2, 20, 3)), r"field 'keypoints' has shape \(2, 20, 3\), expected \(2, 21, 3\)"),
        ("pose", np.full((2, 48), np.nan), "field 'pose' has non-finite values"),
        ("K", np.array([[500, 1, 128], [0, 500, 128], [0, 0, 1]]), "field 'K' must be"),
        ("R", np.diag([1.0, 1.0, -1.0]), "field 'R' is not a rotation matrix"),
    ],
)
def test_export_image_validation_names_image_and_field(field, value, message):
    image = _images(n_poses=1, n_views=1)[0]
    kwargs = {f.name: getattr(image, f.name) for f in dataclasses.fields(image)}
    kwargs[field] = value
    with pytest.raises(ExportError, match=r"export image 'shard=00001/pose000_0_rgb.png': " + message):
        ExportImage(**kwargs)


@pytest.mark.parametrize("fmt", ["json", "npz"])
def test_intaghand_export(tmp_path, fmt):
    images = _images(n_poses=2, n_views=2, seed=3)
    files: dict[str, bytes] = {}
    paths = write_intaghand_dataset(images, files.__setitem__, split="test", fmt=fmt)
    assert paths == [intaghand_path(im, "test", fmt) for im in images] == list(files)
    assert paths[0] == f"test/anno/shard=00001/pose000_0_rgb.{fmt}"
    for image, path in zip(images, paths, strict=True):
        if fmt == "json":
            rec = {k: np.asarray(v) for k, v in json.loads(files[path]).items()}
        else:
            with np.load(io.BytesIO(files[path]), allow_pickle=False) as npz:
                rec = dict(npz)
        assert str(rec["file_name"]) == image.file_name and int(rec["width"]) == 256
        np.testing.assert_allclose(rec["K"], image.K, rtol=1e-6)
        cam = image.keypoints @ image.R.T + image.t  # (2, 21, 3) MANO order
        for h, side in enumerate(("right", "left")):
            wrist_first = convert_keypoints(cam[h], "mano", "wrist_first")
            np.testing.assert_allclose(rec[f"{side}_joints3d"], wrist_first, atol=1e-6)
            np.testing.assert_array_equal(rec[f"{side}_joints3d"][0], np.float32(cam[h, 0]))  # wrist first
            uv = wrist_first[:, :2] / wrist_first[:, 2:] * np.diag(image.K)[:2] + image.K[:2, 2]
            np.testing.assert_allclose(rec[f"{side}_joints2d"], uv, atol=1e-3)
            np.testing.assert_array_equal(
                rec[f"{side}_visible"], convert_keypoints(image.visibility[h], "mano", "wrist_first", axis=-1)
            )
            np.testing.assert_array_equal(rec[f"{side}_global_orient"], np.float32(image.pose[h, :3]))
            np.testing.assert_array_equal(rec[f"{side}_hand_pose"], np.float32(image.pose[h, 3:]))
            np.testing.assert_array_equal(rec[f"{side}_betas"], np.float32(image.shape[h]))
            np.testing.assert_array_equal(rec[f"{side}_transl"], np.float32(image.trans[h]))
