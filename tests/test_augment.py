"""Augmentation stays in range, keeps finger coupling, is seeded by stable ids, and keeps root,
shape and translation; on the stand-in and on the MANO-like test model."""

from __future__ import annotations

import numpy as np
import pytest

from handsynth import augment, gestures, synergies
from handsynth.joint_limits import AnatomicalFrames
from handsynth.sources.procedural import generate_interacting_poses


def _distinct(model, n: int, seed: int = 4):
    table = generate_interacting_poses(model, n, seed=seed)
    table.meta["distinct_pose_id"] = table.meta["pose_id"]
    return table


@pytest.fixture(scope="module")
def distinct(hand_model):
    return _distinct(hand_model, 6)


def test_every_augmented_angle_is_inside_the_augmentation_ranges(each_hand_model):
    distinct = _distinct(each_hand_model, 4)
    table, report = augment.augment_pose_table(each_hand_model, distinct, 30, seed=0)
    assert len(table) == 4 * 30
    assert augment.table_range_violation_deg(each_hand_model, table).max() <= augment.RANGE_TOLERANCE_DEG
    # augmentation explores beyond the anatomical limits (the optimizer's job to fix) ...
    assert report["share_violating"] > 0.05
    assert set(report["max_violation_deg"]) == set(augment.REFERENCE_RANGES_DEG)
    # ... but keeps the distal joints coupled to the middle ones, as the source poses are
    assert report["coupling_source"]["share_over_20deg"] < 0.05
    assert report["coupling"]["share_over_20deg"] < 0.05, report["coupling"]


def test_augmentation_moves_twist_and_splay_and_fingers_together(hand_model, distinct):
    table, _ = augment.augment_pose_table(hand_model, distinct, 30, seed=0)
    frames = AnatomicalFrames.from_rest_keypoints(hand_model.rest_keypoints("right"))
    after = augment.right_equivalent_angles(hand_model, table, "right", frames).reshape(6, 30, 15, 3)
    before = augment.right_equivalent_angles(hand_model, distinct, "right", frames)
    moved = after - before[:, None]
    assert (moved[..., 1:].std(axis=(0, 1)) > 0.5).all()          # every twist and splay axis moves
    bends = moved[:, :, [gestures.FINGER_ROW[f] + 1 for f in gestures.FINGERS], 0].reshape(-1, 4)
    corr = np.corrcoef(bends.T)
    neighbours = [corr[k, k + 1] for k in range(3)]                # index-middle, middle-ring, ring-pinky
    assert min(neighbours) > 0.3, corr                             # neighbouring fingers curl together


def test_augmentation_is_seeded_by_pose_and_index_not_by_batch(hand_model, distinct):
    a, _ = augment.augment_pose_table(hand_model, distinct, 5, seed=0)
    b, _ = augment.augment_pose_table(hand_model, distinct, 5, seed=0)
    for key in a.arrays:
        assert np.array_equal(a.arrays[key], b.arrays[key])
    hp = a.arrays["right_hand_pose"].reshape(6, 5, 45)
    assert np.abs(hp[:, 1:] - hp[:, :1]).max(axis=2).min() > 1e-3     # copies differ
    assert list(a.meta["aug_index"][:5]) == [0, 1, 2, 3, 4]
    assert (a.meta["distinct_pose_id"].to_numpy()[:5] == distinct.pose_ids[0]).all()
    for key in ("right_global_orient", "left_betas", "left_transl"):
        assert np.array_equal(a.arrays[key], np.repeat(distinct.arrays[key], 5, axis=0))
    # more input poses, in another order: the copies of the existing poses do not change
    more = _distinct(hand_model, 9)
    order = np.array([8, 2, 7, 0, 1, 6, 3, 4, 5])
    c, _ = augment.augment_pose_table(hand_model, more.take(order), 5, seed=0)
    ids = list(c.pose_ids)
    for i, pid in enumerate(a.pose_ids):
        j = ids.index(pid)
        assert c.meta["seed"].iloc[j] == a.meta["seed"].iloc[i]
        for key in a.arrays:
            assert np.array_equal(c.arrays[key][j], a.arrays[key][i]), (pid, key)
    other, _ = augment.augment_pose_table(hand_model, distinct, 5, seed=1)
    assert not np.array_equal(other.arrays["right_hand_pose"], a.arrays["right_hand_pose"])


def test_out_of_range_angles_are_moved_inside_and_offsets_shortened_per_finger():
    basis = synergies.gesture_basis()
    angles = np.zeros((15, 3))
    angles[1, 0] = 200.0     # index PIP beyond its range [-8, 110]
    angles[0, 1] = -50.0     # index MCP splay below its range
    angles[5, 0] = 90.0      # middle DIP on its upper bound
    offsets = basis.offsets(np.random.default_rng(0), 50)
    out = augment.augment_angles(angles, offsets)
    assert augment.augmentation_range_violation(out).max() < 1e-9
    start = np.clip(angles, augment.range_table()[..., 0], augment.range_table()[..., 1])
    for rows in synergies.FINGER_GROUPS:      # each finger moves along +-t x its own offset
        r = list(rows)
        moved, d = (out[:, r] - start[r]).reshape(50, -1), offsets[:, r].reshape(50, -1)
        t = (moved * d).sum(1) / (d * d).sum(1)
        assert np.allclose(moved, t[:, None] * d, atol=1e-9) and (np.abs(t) <= 1 + 1e-12).all()
    assert (np.abs(out[:, 3:6, 0] - start[3:6, 0]).max(axis=1) > 1.0).mean() > 0.3     # the middle finger still moves
