"""Exports replayed through the real loaders' access patterns.

Every export is written through :class:`ExportFiles`, so each folder also gets a ``SHA256SUMS``
that ``sha256sum -c`` accepts; images are real JPEG files.

- InterHand2.6M: ``data/InterHand2.6M/dataset.py`` (facebookresearch/InterHand2.6M): ``load_skeleton``
  on ``annotations/skeleton.txt`` (lines split on single spaces), COCO index of
  ``annotations/{mode}/InterHand2.6M_{mode}_data.json`` for mode in train/val/test, cameras and
  joints looked up by ``str(capture)``/``str(camera)``/``str(frame_idx)``, ``world2cam`` and
  ``cam2pixel``, ``joint_valid.reshape(42)``, the image at ``images/{mode}/{file_name}`` read by
  content (``cv2.imread``; PIL here, which also decodes by content).
- IntagHand: ``dataset/interhand.py`` ``InterHand_dataset``: ``len(glob({split}/anno/*.pkl))``,
  ``img|mask|dense/{idx}.jpg``, ``hms/{idx}_{0..6}_{side}.jpg``, ``pickle.load`` of
  ``anno/{idx}.pkl``, ``camera`` R/t/camera, ``mano_params[side]`` R/pose(PCA)/shape/trans through
  a MANO layer, then ``@ R.T + T`` and ``@ camera.T``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import os.path as osp
import pickle
import pickletools
import shutil
import subprocess
from glob import glob

import numpy as np
import pytest
from PIL import Image

from handsynth.exports import (
    DEFAULT_SPLITS,
    SPLITS,
    ExportError,
    ExportImage,
    check_splits,
    interhand_paths,
    logged,
    parse_splits,
    pca_inverses,
    portable_pickle,
    safe_load_pickle,
    split_of,
    write_intaghand_dataset,
    write_interhand_dataset,
)
from handsynth.export_files import SUMS_FILE, ExportFiles, local_files, local_writer, remove_orphans
from handsynth.keypoints import convert_keypoints
from handsynth.render.raster import encode_png
from handsynth.sources.interhand import load_interhand_mano


def _look_at(eye: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV world->camera (R, t) of a camera at ``eye`` looking at the origin."""
    z = -eye / np.linalg.norm(eye)
    x = np.cross([0.0, 1.0, 0.3], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ eye


class _Source:
    """Rendered images as files of a local store (key -> file), like LocalObjectStore's root."""

    def __init__(self, root):
        self.root = root

    def path(self, key: str):
        return self.root / key

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def put(self, key: str, data: bytes) -> None:
        self.path(key).parent.mkdir(parents=True, exist_ok=True)
        self.path(key).write_bytes(data)

    def read_image(self, image: ExportImage, kind: str) -> bytes:
        """The writers' ``read_image``: here an image's location is ``{kind: key}``."""
        return self.read(image.location[kind])


def _smooth_rgb(rng: np.random.Generator) -> np.ndarray:
    """A rendered-looking RGB image: smooth shading with a few sharp-edged shapes."""
    y, x = np.mgrid[0:256, 0:256] / 255.0
    rgb = np.stack([x, y, 1 - x * y], axis=-1) * rng.uniform(120, 230, 3)
    rgb[20:60, 30:90] = rng.uniform(0, 255, 3)
    rgb[100:140, 40:70] = rng.uniform(0, 255, 3)
    return rgb.round().astype(np.uint8)


def _export(root, write, *args, **kwargs):
    """Run a writer into a local folder through ExportFiles (SHA256SUMS included)."""
    with ExportFiles(local_writer(root)) as files:
        return write(*args[:1], files, *args[1:], **kwargs)


def _images(source: _Source | None = None, n_poses: int = 3, n_views: int = 2, seed: int = 0,
            hand_model=None) -> list[ExportImage]:
    """Export records with random cameras; keypoints from ``hand_model`` when given (else random),
    and when ``source`` is given, an RGB and a part-label PNG per image in it."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_poses):
        pose, shape, trans = rng.normal(size=(2, 48)) * 0.3, rng.normal(size=(2, 10)), rng.normal(size=(2, 3)) * 0.05
        trans[1, 0] += 0.1
        if hand_model is None:
            keypoints = rng.normal(size=(2, 21, 3)) * 0.05  # metres around the origin
        else:
            keypoints = np.stack([hand_model.forward(s, pose[h:h + 1, :3], pose[h:h + 1, 3:], shape[h:h + 1],
                                                     trans[h:h + 1]).keypoints[0].detach().numpy()
                                  for h, s in enumerate(("right", "left"))]).astype(np.float64)
        for v in range(n_views):
            direction = rng.normal(size=3)
            R, t = _look_at(direction / np.linalg.norm(direction) * 0.6)  # 0.6 m from the hands
            f = rng.uniform(400, 600)
            keys = {k: f"t/render/shard=00001/pose{p:03d}_v{v:02d}_{k}.png" for k in ("rgb", "label")}
            if source is not None:
                source.put(keys["rgb"], encode_png(_smooth_rgb(rng)))
                labels = np.zeros((256, 256), np.uint8)
                labels[20:60, 30:90], labels[100:140, 40:70] = 5, 20  # a right part, a left part
                source.put(keys["label"], encode_png(labels))
            out.append(ExportImage(
                file_name=keys["rgb"].rsplit("/", 1)[-1], width=256, height=256,
                K=np.array([[f, 0, 128.0 + v], [0, f * 1.01, 127.0], [0, 0, 1]]), R=R, t=t,
                pose=pose, shape=shape, trans=trans, keypoints=keypoints, visibility=rng.random((2, 21)) > 0.3,
                pose_id=f"pose{p:03d}", distinct_pose_id=f"d{p // 2:03d}",
                location=keys if source else None))
    return out


@pytest.fixture()
def interhand(tmp_path):
    source = _Source(tmp_path / "store")
    images = _images(source, n_poses=8, n_views=2)
    root = tmp_path / "InterHand2.6M"
    summary = _export(root, write_interhand_dataset, iter(images), source.read_image,
                      splits={"train": 0.5, "val": 0.25, "test": 0.25})
    return images, summary, root, source


def _load_skeleton(path: str, joint_num: int) -> list[dict]:
    """IH2.6M's ``utils/preprocessing.load_skeleton``, step by step."""
    skeleton = [{} for _ in range(joint_num)]
    with open(path) as fp:
        for line in fp:
            if line[0] == "#":
                continue
            joint_name, joint_id, joint_parent_id = line.split(" ")
            skeleton[int(joint_id)]["name"] = joint_name
            skeleton[int(joint_id)]["parent_id"] = int(joint_parent_id)
    for i in range(len(skeleton)):
        skeleton[i]["child_id"] = [j for j in range(joint_num) if skeleton[j]["parent_id"] == i]
    return skeleton


def test_ih26m_dataset_py_reads_every_split_and_its_images(interhand):
    images, summary, root, source = interhand
    annot_path, img_path = str(root / "annotations"), str(root / "images")
    skeleton = _load_skeleton(osp.join(annot_path, "skeleton.txt"), 42)
    assert [skeleton[j]["name"] for j in (0, 3, 20, 21, 41)] == ["r_thumb4", "r_thumb1", "r_wrist", "l_thumb4", "l_wrist"]
    assert sorted(skeleton[20]["child_id"]) == [3, 7, 11, 15, 19] and skeleton[41]["parent_id"] == -1
    seen, split_of_distinct = [], {}
    for mode in ("train", "val", "test"):
        with open(osp.join(annot_path, mode, "InterHand2.6M_" + mode + "_data.json")) as f:
            db = json.load(f)
        imgs = {img["id"]: img for img in db["images"]}  # pycocotools COCO.createIndex
        anns = {ann["id"]: ann for ann in db["annotations"]}
        with open(osp.join(annot_path, mode, "InterHand2.6M_" + mode + "_camera.json")) as f:
            cameras = json.load(f)
        with open(osp.join(annot_path, mode, "InterHand2.6M_" + mode + "_joint_3d.json")) as f:
            joints = json.load(f)
        for aid in anns:
            ann = anns[aid]
            img = imgs[ann["image_id"]]
            capture_id, cam, frame_idx = img["capture"], img["camera"], img["frame_idx"]
            campos = np.array(cameras[str(capture_id)]["campos"][str(cam)], dtype=np.float32)
            camrot = np.array(cameras[str(capture_id)]["camrot"][str(cam)], dtype=np.float32)
            focal = np.array(cameras[str(capture_id)]["focal"][str(cam)], dtype=np.float32)
            princpt = np.array(cameras[str(capture_id)]["princpt"][str(cam)], dtype=np.float32)
            joint_world = np.array(joints[str(capture_id)][str(frame_idx)]["world_coord"], dtype=np.float32)
            joint_cam = np.dot(camrot, joint_world.T - campos.reshape(3, 1)).T  # world2cam
            joint_img = joint_cam[:, :2] / joint_cam[:, 2:] * focal + princpt  # cam2pixel
            joint_valid = np.array(ann["joint_valid"], dtype=np.float32).reshape(42)
            assert joint_valid[20] * joint_valid[41] == 1 and ann["hand_type"] == "interacting"
            bbox = np.array(ann["bbox"], dtype=np.float32)
            assert bbox.shape == (4,) and (bbox[2:] > 0).all()
            ours = images[ann["image_id"]]
            expected = np.concatenate([convert_keypoints(ours.keypoints_pixels()[h], "mano", "ih26m") for h in (0, 1)])
            np.testing.assert_allclose(joint_img, expected, atol=2e-3)  # float32 files
            path = osp.join(img_path, mode, img["file_name"])
            with Image.open(path) as jpeg:
                assert jpeg.format == "JPEG"  # a real JPEG under the .jpg name, not PNG bytes
                pixels = np.asarray(jpeg)
            assert pixels.shape == (img["height"], img["width"], 3) and img["renderih_source"] == ours.file_name
            rendered = np.asarray(Image.open(source.path(ours.location["rgb"])), dtype=float)
            assert np.abs(pixels - rendered).mean() < 1.5  # quality 95: about one grey level
            split_of_distinct.setdefault(ours.distinct_pose_id, set()).add(mode)
            seen.append(ann["image_id"])
    assert sorted(seen) == list(range(len(images)))  # every image in exactly one split
    assert all(len(modes) == 1 for modes in split_of_distinct.values())  # no pose leaks across splits
    assert sum(summary.images.values()) == len(images) and min(summary.images.values()) > 0


def test_ih26m_mano_files_read_back_per_split(interhand):
    images, summary, root, _ = interhand
    by_pose = {im.pose_id: im for im in images}
    for split in SPLITS:
        data = json.loads((root / summary.paths[split]["data"]).read_text())
        frames = {img["frame_idx"]: images[img["id"]].pose_id for img in data["images"]}
        table = load_interhand_mano(str(root / summary.paths[split]["MANO_NeuralAnnot"]), split_name=split)
        assert len(table.meta) == len(frames)
        for row, pid in enumerate(table.meta["pose_id"]):
            image = by_pose[frames[int(pid.rsplit("/", 1)[1])]]
            for h, side in enumerate(("right", "left")):
                np.testing.assert_array_equal(table.arrays[f"{side}_hand_pose"][row], np.float32(image.pose[h, 3:]))
                np.testing.assert_array_equal(table.arrays[f"{side}_transl"][row], np.float32(image.trans[h]))


def test_interhand_paths_follow_ih26m_naming():
    assert interhand_paths("val")["camera"] == "annotations/val/InterHand2.6M_val_camera.json"


def test_splits_are_by_distinct_pose_and_validated():
    assert split_of("pose-a", {"train": 1.0}) == "train"
    counts = {s: 0 for s in SPLITS}
    for i in range(2000):
        counts[split_of(f"d{i}", DEFAULT_SPLITS)] += 1
    assert 1500 < counts["train"] < 1700 and 140 < counts["val"] < 260 and 140 < counts["test"] < 260
    assert parse_splits("train=0.9, test=0.1") == {"train": 0.9, "val": 0.0, "test": 0.1}
    with pytest.raises(ExportError, match=r"unknown split\(s\) \['dev'\]"):
        check_splits({"dev": 1.0})
    with pytest.raises(ExportError, match="sum to 1"):
        parse_splits("train=0.5")
    with pytest.raises(ExportError, match="expected NAME=FRACTION"):
        parse_splits("train")


def _rotation_to_axis_angle(R: np.ndarray) -> np.ndarray:
    angle = np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def test_intaghand_loader_reads_anno_pkl_and_image_folders(tmp_path, hand_model):
    source = _Source(tmp_path / "store")
    images = _images(source, n_poses=4, n_views=2, seed=3, hand_model=hand_model)
    root = tmp_path / "intaghand"
    folder = hand_model.identity["source"]
    result = _export(root, write_intaghand_dataset, images, source.read_image, pca_inverses(folder),
                     splits={"train": 0.5, "val": 0.5})
    components = {s: np.linalg.inv(m) for s, m in pca_inverses(folder).items()}
    by_name = {im.file_name: im for im in images}
    checked = 0
    for split in ("train", "val"):
        data_path = str(root)
        size = len(glob(osp.join(data_path, split, "anno", "*.pkl")))
        assert size == result.images[split] > 0
        for idx in range(size):
            img = np.asarray(Image.open(osp.join(data_path, split, "img", "{}.jpg".format(idx))))
            mask = np.asarray(Image.open(osp.join(data_path, split, "mask", "{}.jpg".format(idx))))
            dense = np.asarray(Image.open(osp.join(data_path, split, "dense", "{}.jpg".format(idx))))
            assert img.shape == mask.shape == dense.shape == (256, 256, 3)
            raw = open(os.path.join(data_path, split, "anno", "{}.pkl".format(idx)), "rb").read()
            data = pickle.loads(raw)  # IntagHand's own pickle.load
            assert safe_load_pickle(raw, "anno.pkl").keys() == data.keys()
            globals_used = {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}
            assert globals_used == {"numpy array"}  # loads under NumPy 1.x and 2.x alike
            R, T, camera = data["camera"]["R"], data["camera"]["t"], data["camera"]["camera"]
            ours = by_name[data["renderih"]["source"]]
            # mask channels as IntagHand reads them: cv2 gives BGR, mask[..., 1:] = (right, left)
            bgr = mask[..., ::-1]
            labels = np.zeros((256, 256), np.uint8)
            labels[20:60, 30:90], labels[100:140, 40:70] = 5, 20
            np.testing.assert_array_equal(bgr[..., 1] > 127, (labels >= 1) & (labels <= 16))
            np.testing.assert_array_equal(bgr[..., 2] > 127, labels >= 17)
            for h, hand_type in enumerate(("right", "left")):
                hms = [np.asarray(Image.open(os.path.join(data_path, split, "hms", f"{idx}_{k}_{hand_type}.jpg")))
                       for k in range(7)]
                assert all(hm.shape == (64, 64, 3) for hm in hms)
                params = data["mano_params"][hand_type]
                assert params["R"].shape == (1, 3, 3) and params["pose"].shape == (1, 45)
                # IntagHand's ManoLayer(R, pca pose, shape, trans): pose = pca @ components + mean
                hand_pose = params["pose"] @ components[hand_type]
                out = hand_model.forward(hand_type, _rotation_to_axis_angle(params["R"][0].astype(np.float64))[None],
                                         hand_pose, params["shape"], params["trans"])
                handJ = convert_keypoints(out.keypoints[0].detach().numpy(), "mano", "wrist_first")
                handJ = handJ @ R.T + T
                handJ2d = handJ @ camera.T
                handJ2d = handJ2d[:, :2] / handJ2d[:, 2:]
                expected = convert_keypoints(ours.keypoints_pixels()[h], "mano", "wrist_first")
                np.testing.assert_allclose(handJ2d, expected, atol=0.02)
                np.testing.assert_allclose(handJ, convert_keypoints(ours.keypoints_camera()[h], "mano", "wrist_first"),
                                           atol=2e-5)
                peak = np.unravel_index(np.argmax(np.concatenate(hms, axis=-1)[..., 9]), (64, 64))
                if (0 <= expected[9] * 64 / 256).all() and (expected[9] * 64 / 256 < 64).all():
                    assert np.abs(np.array(peak[::-1]) - expected[9] * 64 / 256).max() <= 1  # middle MCP heatmap
            checked += 1
    assert checked == len(images)


def test_safe_pickle_reader_refuses_code():
    class Evil:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    with pytest.raises(ExportError, match=r"anno/0.pkl: not a plain-data pickle .*posix.system is not allowed"):
        safe_load_pickle(pickle.dumps(Evil()), "anno/0.pkl")
    data = {"a": np.arange(4, dtype=np.float32).reshape(2, 2), "b": [1, "x", 2.5], "c": np.float32(1.5)}
    back = safe_load_pickle(portable_pickle(data), "x")
    assert back["a"].dtype == np.float32 and (back["a"] == data["a"]).all() and back["b"] == [1, "x", 2.5]


def _sums(root) -> dict[str, str]:
    lines = (root / SUMS_FILE).read_text().splitlines()
    return {line[66:]: line[:64] for line in lines}


@pytest.mark.parametrize("layout", ["interhand26m", "intaghand"])
def test_sha256sums_lists_every_file_and_sha256sum_accepts_it(tmp_path, hand_model, layout):
    source = _Source(tmp_path / "store")
    root = tmp_path / layout
    images = _images(source, n_poses=3, n_views=2)
    if layout == "interhand26m":
        _export(root, write_interhand_dataset, images, source.read_image)
    else:
        _export(root, write_intaghand_dataset, images, source.read_image, pca_inverses(hand_model.identity["source"]))
    sums = _sums(root)
    assert sorted(sums) == sorted(p for p in local_files(root) if p != SUMS_FILE)
    assert len(sums) == (6 + 1 + 12 if layout == "interhand26m" else 6 * 18)  # images, skeleton, 4 files x 3 splits
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "--quiet", "-c", SUMS_FILE], cwd=root, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        (root / next(iter(sums))).write_bytes(b"changed")
        assert subprocess.run(["sha256sum", "--quiet", "-c", SUMS_FILE], cwd=root, capture_output=True).returncode != 0


def test_failed_export_commits_no_sha256sums(tmp_path):
    source = _Source(tmp_path / "store")
    images = _images(source, n_poses=2, n_views=1)
    images[1].location = {"rgb": "missing.png"}
    with pytest.raises(FileNotFoundError):
        _export(tmp_path / "ih", write_interhand_dataset, images, source.read_image)
    assert not (tmp_path / "ih" / SUMS_FILE).exists()  # its absence says: incomplete


@pytest.mark.parametrize("layout", ["interhand26m", "intaghand"])
def test_reexport_with_fewer_images_leaves_no_orphans(tmp_path, hand_model, layout):
    source = _Source(tmp_path / "store")
    root = tmp_path / layout
    pca = pca_inverses(hand_model.identity["source"])

    def export(n_views):
        images = _images(source, n_poses=6, n_views=n_views)
        if layout == "interhand26m":
            return _export(root, write_interhand_dataset, images, source.read_image)
        return _export(root, write_intaghand_dataset, images, source.read_image, pca)

    first = export(3)
    before = set(local_files(root))
    assert sum(first.images.values()) == 18 and all(first.expects(p) for p in before)
    second = export(1)
    removed = remove_orphans(local_files(root), second.expects, lambda p: (root / p).unlink())
    after = set(local_files(root))
    assert removed == len(before - after) >= 12 and sum(second.images.values()) == 6
    assert after == set(_sums(root)) | {SUMS_FILE}  # exactly the files the second export wrote
    assert len([p for p in after if p.endswith(".jpg")]) == 6 * (1 if layout == "interhand26m" else 17)


def test_images_of_a_pose_must_be_consecutive(tmp_path):
    a, b, c = _images(n_poses=2, n_views=2)[:3]
    with pytest.raises(ExportError, match=r"images of pose_id 'pose000' do not come one after another"):
        _export(tmp_path, write_interhand_dataset, [a, c, b])


def test_a_pose_coming_back_after_many_others_is_refused(tmp_path, monkeypatch):
    """The finished poses are kept as 8-byte hashes in a sorted array that takes the newest ones
    in batches: a pose coming back after its batch was merged is still found, and frames count on."""
    import handsynth.exports as exports

    monkeypatch.setattr(exports._HashSet, "MERGE", 2)   # merge after every second finished pose
    images = _images(n_poses=7, n_views=2)
    assert _export(tmp_path / "ok", write_interhand_dataset, images).frames == 7
    with pytest.raises(ExportError, match=r"images of pose_id 'pose000' do not come one after another"):
        _export(tmp_path / "again", write_interhand_dataset, images + images[:1])


def test_same_pose_id_with_different_data_is_rejected(tmp_path):
    a, b = _images(n_poses=2, n_views=1)
    b.pose_id = a.pose_id
    with pytest.raises(ExportError, match=r"pose_id 'pose000' has different keypoints or MANO parameters than image"):
        _export(tmp_path, write_interhand_dataset, [a, b])


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
    with pytest.raises(ExportError, match=r"export image 'pose000_v00_rgb.png': " + message):
        ExportImage(**kwargs)


def test_intaghand_needs_square_images_with_labels(tmp_path):
    image = dataclasses.replace(_images(n_poses=1, n_views=1)[0], location={"rgb": "a.png"}, width=300)
    with pytest.raises(ExportError, match=r"'pose000_v00_rgb.png': IntagHand expects square images, got 300x256"):
        _export(tmp_path, write_intaghand_dataset, [image], lambda image, kind: b"",
                {"right": np.eye(45), "left": np.eye(45)})


def test_long_exports_log_count_rate_and_eta():
    lines: list[str] = []
    assert list(logged(iter(range(2500)), lines.append, "intaghand", 2500)) == list(range(2500))
    assert [line.split(",")[0] for line in lines] == ["intaghand: 1000/2500 images", "intaghand: 2000/2500 images",
                                                      "intaghand: 2500/2500 images"]
    assert all("/s, ETA " in line for line in lines) and lines[-1].endswith("ETA 0 s")
