"""Augmentation stays in range, is seeded, and keeps root, shape and translation."""

from __future__ import annotations

import numpy as np
import pytest

from handsynth import augment
from handsynth.sources.procedural import generate_interacting_poses


@pytest.fixture(scope="module")
def distinct(hand_model):
    table = generate_interacting_poses(hand_model, 6, seed=4)
    table.meta["distinct_pose_id"] = table.meta["pose_id"]
    return table


def test_every_augmented_angle_is_inside_the_augmentation_ranges(hand_model, distinct):
    table, report = augment.augment_pose_table(hand_model, distinct, 30, "shard=00000")
    assert len(table) == 6 * 30
    assert augment.table_range_violation_deg(hand_model, table).max() <= augment.RANGE_TOLERANCE_DEG
    # augmentation explores beyond the anatomical limits: the optimizer's job to fix
    assert report["share_violating"] > 0.1
    assert set(report["max_violation_deg"]) == set(augment.AUGMENTATION_RANGES_DEG)


def test_augmentation_is_seeded_by_pose_and_varies_by_index(hand_model, distinct):
    a, _ = augment.augment_pose_table(hand_model, distinct, 5, "shard=00000")
    b, _ = augment.augment_pose_table(hand_model, distinct, 5, "shard=00000")
    for key in a.arrays:
        assert np.array_equal(a.arrays[key], b.arrays[key])
    hp = a.arrays["right_hand_pose"].reshape(6, 5, 45)
    assert np.abs(hp[:, 1:] - hp[:, :1]).max(axis=2).min() > 1e-3     # copies differ
    assert list(a.meta["aug_index"][:5]) == [0, 1, 2, 3, 4]
    assert (a.meta["distinct_pose_id"].to_numpy()[:5] == distinct.pose_ids[0]).all()
    for key in ("right_global_orient", "left_betas", "left_transl"):
        assert np.array_equal(a.arrays[key], np.repeat(distinct.arrays[key], 5, axis=0))


def test_out_of_range_angles_are_moved_inside():
    angles = np.zeros((15, 3))
    angles[1, 0] = 200.0     # index PIP beyond its range [-8, 110]
    angles[2, 0] = 300.0     # index DIP so far beyond [-8, 90] that the 120 degree cap can't reach it
    angles[0, 1] = -50.0     # index MCP splay below its range
    out = augment.augment_angles(angles, np.random.default_rng(0), 20)
    assert augment.augmentation_range_violation(out).max() < 1e-9
    assert (np.abs(out[:, 1, 0] - 200.0) <= 120.0).all()
    assert np.allclose(out[:, 2, 0], 90.0)      # stepped onto the nearer bound
