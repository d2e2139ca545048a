"""IH2.6M readers on small files written in the real formats, and keypoint orders."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from handsynth.keypoints import (
    KEYPOINT_NAMES,
    convert_keypoints,
    from_ih26m_42,
    keypoint_index,
    order_index,
    to_ih26m_42,
)
from handsynth.sources.interhand import (
    InterHandFormatError,
    InterHandStats,
    load_interhand_cameras,
    load_interhand_joints,
    load_interhand_mano,
)

MANO_NAME = "InterHand2.6M_train_MANO_NeuralAnnot.json"


def _hand(rng: np.random.Generator) -> dict:
    return {
        "pose": rng.normal(size=48).tolist(),
        "shape": rng.normal(size=10).tolist(),
        "trans": rng.normal(size=3).tolist(),
    }


def _mano_doc(rng: np.random.Generator) -> dict:
    """Two captures; frames with both hands, a null left hand, and an absent right hand."""
    return {
        "0": {
            "10": {"right": _hand(rng), "left": _hand(rng)},
            "11": {"right": _hand(rng), "left": None},
            "12": {"right": _hand(rng), "left": _hand(rng)},
        },
        "7": {
            "500": {"left": _hand(rng)},
            "501": {"right": _hand(rng), "left": _hand(rng)},
        },
    }


def _write(tmp_path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_mano_keeps_two_hand_frames_and_maps_params(tmp_path):
    doc = _mano_doc(np.random.default_rng(0))
    stats = InterHandStats()
    table = load_interhand_mano(_write(tmp_path, MANO_NAME, doc), split_name="val", stats=stats)

    kept = [("0", "10"), ("0", "12"), ("7", "501")]
    assert list(table.meta["pose_id"]) == [f"ih26m/val/{c}/{f}" for c, f in kept]
    assert list(table.meta["source_ref"]) == [f"capture={c};frame={f};file={MANO_NAME}" for c, f in kept]
    assert set(table.meta["source"]) == {"interhand2.6m"}
    assert (table.meta["seed"] == 0).all()
    for row, (c, f) in enumerate(kept):
        for side in ("right", "left"):
            hand = doc[c][f][side]
            np.testing.assert_array_equal(table.arrays[f"{side}_global_orient"][row], np.float32(hand["pose"][:3]))
            np.testing.assert_array_equal(table.arrays[f"{side}_hand_pose"][row], np.float32(hand["pose"][3:]))
            np.testing.assert_array_equal(table.arrays[f"{side}_betas"][row], np.float32(hand["shape"]))
            np.testing.assert_array_equal(table.arrays[f"{side}_transl"][row], np.float32(hand["trans"]))
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in table.arrays.values())
    assert (stats.frames_read, stats.frames_kept, stats.frames_skipped) == (5, 3, 2)
    assert stats.missing_hands == {"right": 1, "left": 1}


def test_mano_chunking_and_file_object_give_same_table(tmp_path):
    doc = _mano_doc(np.random.default_rng(1))
    path = _write(tmp_path, MANO_NAME, doc)
    whole = load_interhand_mano(path)
    with open(path, "rb") as fh:
        chunked = load_interhand_mano(io.BytesIO(fh.read()), name="s3://bucket/" + MANO_NAME, chunk_rows=1)
    assert list(chunked.meta["pose_id"]) == list(whole.meta["pose_id"])
    assert chunked.meta["source_ref"][0].endswith("file=s3://bucket/" + MANO_NAME)
    for key, arr in whole.arrays.items():
        np.testing.assert_array_equal(chunked.arrays[key], arr)


class _CountingReader:
    """An object with only ``read(n)``, like an S3 streaming body, recording each read's size."""

    def __init__(self, data: bytes):
        self.buf, self.sizes = io.BytesIO(data), []

    def read(self, n: int = -1) -> bytes:
        out = self.buf.read(n)
        self.sizes.append(len(out))
        return out


def test_mano_stream_is_read_in_bounded_pieces():
    rng = np.random.default_rng(2)
    doc = {"3": {str(f): {"right": _hand(rng), "left": _hand(rng)} for f in range(300)}}
    data = json.dumps(doc).encode()
    reader = _CountingReader(data)
    table = load_interhand_mano(reader, name="stream.json")
    assert len(table) == 300
    assert sum(reader.sizes) == len(data)
    assert len(reader.sizes) > 3 and max(reader.sizes) < len(data) / 2


def test_mano_truncated_file_names_file_and_position(tmp_path):
    text = json.dumps(_mano_doc(np.random.default_rng(3)))
    path = tmp_path / MANO_NAME
    path.write_text(text[: len(text) * 2 // 3])
    with pytest.raises(
        InterHandFormatError, match=rf"{MANO_NAME}: invalid or truncated JSON after capture '\d+' frame"
    ):
        load_interhand_mano(str(path))


def test_mano_wrong_length_names_capture_frame_hand_field(tmp_path):
    doc = _mano_doc(np.random.default_rng(4))
    doc["7"]["501"]["left"]["pose"] = doc["7"]["501"]["left"]["pose"][:47]
    with pytest.raises(InterHandFormatError) as err:
        load_interhand_mano(_write(tmp_path, MANO_NAME, doc))
    msg = str(err.value)
    assert MANO_NAME in msg and "capture '7' frame '501'" in msg
    assert "hand 'left' field 'pose'" in msg and "47 values, expected 48" in msg


@pytest.mark.parametrize("bad", ["0.5", None, [1.0, 2.0]])
def test_mano_non_numeric_value_is_named(tmp_path, bad):
    doc = _mano_doc(np.random.default_rng(5))
    doc["0"]["12"]["right"]["shape"][4] = bad
    with pytest.raises(InterHandFormatError) as err:
        load_interhand_mano(_write(tmp_path, MANO_NAME, doc))
    msg = str(err.value)
    assert "capture '0' frame '12' hand 'right' field 'shape'" in msg
    if not isinstance(bad, list):
        assert f"value {bad!r} at flat index 4 is not a number" in msg


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["0"]["10"]["left"].pop("trans"), "capture '0' frame '10' hand 'left' field 'trans' is missing"),
        (lambda d: d["0"]["10"].update(right=[1, 2]), "capture '0' frame '10' hand 'right' must be an object or null"),
        (lambda d: d["0"].update({"10": 5}), "capture '0' frame '10' must be an object"),
        (lambda d: d.update({"0": [1, 2]}), "capture '0' must be an object of frames"),
    ],
)
def test_mano_structure_errors(tmp_path, mutate, expected):
    doc = _mano_doc(np.random.default_rng(6))
    mutate(doc)
    with pytest.raises(InterHandFormatError, match=expected):
        load_interhand_mano(_write(tmp_path, MANO_NAME, doc))


def test_mano_top_level_must_be_object(tmp_path):
    with pytest.raises(InterHandFormatError, match="top level must be an object"):
        load_interhand_mano(_write(tmp_path, MANO_NAME, [1, 2, 3]))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_cameras_convert_to_world_to_camera_in_metres(tmp_path):
    rng = np.random.default_rng(7)
    cams = {
        "400002": (_rotation(rng), rng.normal(size=3) * 1000),
        "410019": (_rotation(rng), rng.normal(size=3) * 1000),
    }
    doc = {
        "2": {
            "campos": {c: pos.tolist() for c, (_, pos) in cams.items()},
            "camrot": {c: rot.tolist() for c, (rot, _) in cams.items()},
            "focal": {c: [1200.0 + i, 1210.0 + i] for i, c in enumerate(cams)},
            "princpt": {c: [160.0 + i, 250.0 - i] for i, c in enumerate(cams)},
        }
    }
    out = load_interhand_cameras(_write(tmp_path, "InterHand2.6M_train_camera.json", doc))
    got = out["2"]
    assert got.names == list(cams)
    world_mm = rng.normal(size=(5, 3)) * 300
    for i, (rot, pos) in enumerate(cams.values()):
        expected_mm = (world_mm - pos) @ rot.T  # IH2.6M: X_cam = camrot (X - campos)
        np.testing.assert_allclose((world_mm / 1000) @ got.R[i].T + got.t[i], expected_mm / 1000, atol=1e-9)
        np.testing.assert_array_equal(got.K[i], [[1200.0 + i, 0, 160.0 + i], [0, 1210.0 + i, 250.0 - i], [0, 0, 1]])


def test_cameras_missing_entry_is_named(tmp_path):
    doc = {
        "2": {"campos": {"1": [0, 0, 0]}, "camrot": {"1": np.eye(3).tolist()}, "focal": {}, "princpt": {"1": [1, 1]}}
    }
    with pytest.raises(InterHandFormatError, match="capture '2' camera '1' field 'focal' is missing"):
        load_interhand_cameras(_write(tmp_path, "cams.json", doc))


def _joint_frame(rng: np.random.Generator, hand_type: str = "interacting") -> dict:
    valid = rng.random(42) > 0.2
    return {
        "world_coord": (rng.normal(size=(42, 3)) * 100).tolist(),
        "joint_valid": [[bool(v)] for v in valid],
        "hand_type": hand_type,
        "hand_type_valid": True,
    }


def test_joints_rows(tmp_path):
    rng = np.random.default_rng(8)
    doc = {
        "3": {"69148": _joint_frame(rng), "69149": _joint_frame(rng, "left")},
        "2": {"44669": _joint_frame(rng, "right")},
    }
    doc["2"]["44669"]["hand_type_valid"] = False
    got = load_interhand_joints(_write(tmp_path, "InterHand2.6M_test_joint_3d.json", doc), chunk_rows=2)
    assert list(got.capture) == ["3", "3", "2"] and list(got.frame) == ["69148", "69149", "44669"]
    assert list(got.hand_type) == ["interacting", "left", "right"]
    assert list(got.hand_type_valid) == [True, True, False]
    for i, (c, f) in enumerate(zip(got.capture, got.frame, strict=True)):
        np.testing.assert_array_equal(got.world_mm[i], np.float32(doc[c][f]["world_coord"]))
        np.testing.assert_array_equal(got.valid[i], [v[0] for v in doc[c][f]["joint_valid"]])


def test_joints_bad_rows_are_named(tmp_path):
    rng = np.random.default_rng(9)
    doc = {"3": {"1": _joint_frame(rng), "2": _joint_frame(rng)}}
    doc["3"]["2"]["world_coord"] = doc["3"]["2"]["world_coord"][:41]
    with pytest.raises(InterHandFormatError, match=r"capture '3' frame '2' field 'world_coord' has shape \(41, 3\)"):
        load_interhand_joints(_write(tmp_path, "j.json", doc))
    doc["3"]["2"] = _joint_frame(rng, "both")
    with pytest.raises(InterHandFormatError, match="frame '2' field 'hand_type' is 'both'"):
        load_interhand_joints(_write(tmp_path, "j.json", doc))


# ---- keypoint orders ---------------------------------------------------------------------


def test_orders_are_permutations_of_the_same_joints():
    names = {order: set(n) for order, n in KEYPOINT_NAMES.items()}
    assert all(len(n) == 21 for n in KEYPOINT_NAMES.values())
    assert names["mano"] == names["ih26m"] == names["wrist_first"]


def test_orders_match_published_index_maps():
    # IntagHand's eval_interhand.py reorders MANO's 16 joints + 5 tips with this list, and the
    # InterHand2.6M-to-wrist-first map below is used by IH2.6M-based training code.
    intag_from_mano = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
    wrist_first_from_ih = [20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16]
    assert order_index("mano", "wrist_first").tolist() == intag_from_mano
    assert order_index("ih26m", "wrist_first").tolist() == wrist_first_from_ih
    assert keypoint_index("ih26m", "wrist") == 20 and keypoint_index("mano", "thumb1") == 13


@pytest.mark.parametrize("src", ["mano", "ih26m", "wrist_first"])
@pytest.mark.parametrize("dst", ["mano", "ih26m", "wrist_first"])
def test_conversions_round_trip(src, dst):
    x = np.random.default_rng(10).normal(size=(4, 21, 3))
    there = convert_keypoints(x, src, dst)
    np.testing.assert_array_equal(convert_keypoints(there, dst, src), x)
    named = {n: x[:, i] for i, n in enumerate(KEYPOINT_NAMES[src])}
    for i, n in enumerate(KEYPOINT_NAMES[dst]):
        np.testing.assert_array_equal(there[:, i], named[n])


def test_42_joint_array_layout_and_round_trip():
    rng = np.random.default_rng(11)
    right, left = rng.normal(size=(2, 5, 21, 3))
    joints = to_ih26m_42(right, left)
    assert joints.shape == (5, 42, 3)
    np.testing.assert_array_equal(joints[:, 20], right[:, 0])  # right wrist = IH2.6M root 20
    np.testing.assert_array_equal(joints[:, 41], left[:, 0])  # left wrist = root 41
    np.testing.assert_array_equal(joints[:, 21], left[:, keypoint_index("mano", "thumb4")])
    back_r, back_l = from_ih26m_42(joints)
    np.testing.assert_array_equal(back_r, right)
    np.testing.assert_array_equal(back_l, left)
    vis = rng.random((5, 2, 21)) > 0.5
    flat = to_ih26m_42(vis[:, 0], vis[:, 1], axis=-1)
    assert flat.shape == (5, 42)
    np.testing.assert_array_equal(from_ih26m_42(flat, axis=-1)[1], vis[:, 1])


def test_unknown_order_and_wrong_size_raise():
    with pytest.raises(ValueError, match="unknown keypoint order 'openpose'"):
        order_index("mano", "openpose")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected 21 keypoints"):
        convert_keypoints(np.zeros((20, 3)), "mano", "ih26m")


def test_colliding_capture_and_frame_keys_stay_distinct_through_ids_and_block_names(tmp_path):
    """Capture '1_2'/frame '3' and capture '1'/frame '2_3' (and '1/2'/'3' vs '1'/'2/3') once shared an image key."""
    from handsynth.ids import filename_to_id
    from handsynth.render.blocks import block_key, sample_name

    rng = np.random.default_rng(11)
    doc = {"1_2": {"3": {"right": _hand(rng), "left": _hand(rng)}},
           "1": {"2_3": {"right": _hand(rng), "left": _hand(rng)}, "2/3": {"right": _hand(rng), "left": _hand(rng)}},
           "1/2": {"3": {"right": _hand(rng), "left": _hand(rng)}}}
    table = load_interhand_mano(_write(tmp_path, MANO_NAME, doc))
    ids = list(table.meta["pose_id"])
    assert len(set(ids)) == 4 and len(set(table.meta["source_ref"])) == 4
    blocks = [block_key("p", "shard=00000", pid) for pid in ids]
    samples = [sample_name(f"{pid}/aug00/v00") for pid in ids]
    assert len(set(blocks)) == 4 and len(set(samples)) == 4, (blocks, samples)
    for pid, key, sample in zip(ids, blocks, samples):  # names decode to their ids, hence are injective
        assert filename_to_id(key.rsplit("/", 1)[-1].removesuffix(".tar")) == pid
        assert filename_to_id(sample.replace("~2E", ".")) == f"{pid}/aug00/v00"
    assert ids[0] == "ih26m/train/1_2/3"  # IH2.6M's decimal keys keep their readable ids


def test_mano_boolean_is_not_a_number(tmp_path):
    doc = _mano_doc(np.random.default_rng(12))
    doc["0"]["12"]["left"]["pose"][7] = True
    with pytest.raises(InterHandFormatError, match=r"capture '0' frame '12' hand 'left' field 'pose' value True at "
                                                   r"flat index 7 is a boolean, not a number"):
        load_interhand_mano(_write(tmp_path, MANO_NAME, doc))


def test_mano_oversized_record_is_refused_while_streaming(tmp_path):
    doc = _mano_doc(np.random.default_rng(13))
    doc["0"]["11"]["left"] = {"pose": [0.0] * 200_000}  # in a frame that would be skipped
    with pytest.raises(InterHandFormatError, match=r"capture '0' frame '11' holds more than 10000 values"):
        load_interhand_mano(_write(tmp_path, MANO_NAME, doc))


def test_mano_file_without_two_hand_frames_is_refused(tmp_path):
    doc = {"0": {"1": {"right": None, "left": None}, "2": {"left": None}}}
    with pytest.raises(InterHandFormatError, match=r"no frame has both hands \(2 frames read, 2 without"):
        load_interhand_mano(_write(tmp_path, MANO_NAME, doc))
