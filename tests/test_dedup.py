"""Tests of pose deduplication against an independent brute-force leader clustering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from handsynth import dedup
from handsynth.dedup import (
    FEATURE_DIM,
    check_min_spacing,
    dedup_features,
    dedup_poses,
)


def bruteforce_leaders(x: np.ndarray, threshold: float, order=None) -> tuple[list, np.ndarray]:
    """O(N^2) reference: keep in order unless an earlier leader is within the threshold;
    each pose maps to the earliest leader within the threshold."""
    order = np.arange(len(x)) if order is None else order
    dist = cdist(x.astype(np.float64), x.astype(np.float64))  # (N, N)
    leaders: list[int] = []
    rep = np.empty(len(x), np.int64)
    for i in order:
        covered = [j for j in leaders if dist[i, j] <= threshold]
        if covered:
            rep[i] = covered[0]
        else:
            leaders.append(int(i))
            rep[i] = i
    return sorted(leaders), rep


def clustered(n: int, n_centres: int, spread: float, seed: int, dim: int = FEATURE_DIM):
    """Points (n, dim) float32 around random centres, shuffled: groups of near-duplicates.

    Each point lies at a uniform random distance in [0, spread) from its centre, so pairwise
    distances within a group vary (isotropic noise would make them all nearly equal in 123-D).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 60.0, (n_centres, dim))
    labels = rng.integers(0, n_centres, n)
    direction = rng.normal(size=(n, dim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    pts = centres[labels] + direction * rng.uniform(0.0, spread, (n, 1))
    return pts.astype(np.float32)


def video_walk(n: int, step: float, seed: int, dim: int = FEATURE_DIM) -> np.ndarray:
    """A video-like sequence (n, dim): low-dimensional random walk plus jitter."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 6)))[0]  # (dim, 6)
    walk = np.cumsum(rng.normal(0.0, step, (n, 6)), axis=0) @ basis.T
    return (walk + rng.normal(0.0, 0.3, (n, dim))).astype(np.float32)


@pytest.fixture
def small_chunks(monkeypatch):
    """Force tiny chunks, dense blocks and re-check limits so every branch of the loop runs."""
    monkeypatch.setattr(dedup, "_CHUNK_MIN", 16)
    monkeypatch.setattr(dedup, "_CHUNK_MAX", 64)
    monkeypatch.setattr(dedup, "_DENSE_CAP", 8)
    monkeypatch.setattr(dedup, "_TARGET_UNCOVERED", 24)
    monkeypatch.setattr(dedup, "_RECHECK_MAX", 20)
    monkeypatch.setattr(dedup, "_PAIR_BUDGET", 50)
    monkeypatch.setattr(dedup, "_EXACT_BLOCK", 7)


def assert_guarantees(x: np.ndarray, threshold: float, res) -> None:
    n = len(x)
    assert np.all(np.diff(res.keep) > 0)
    assert res.representative.shape == (n,)
    assert set(np.unique(res.representative)) == set(res.keep)
    assert np.array_equal(res.representative[res.keep], res.keep)
    d_rep = np.linalg.norm(x.astype(np.float64) - x[res.representative], axis=1)
    assert d_rep.max() <= threshold
    ok, dmin, _ = check_min_spacing(x[res.keep], threshold)
    assert ok and dmin > threshold
    assert res.cluster_size.sum() == n
    counts = np.bincount(res.representative, minlength=n)[res.keep]
    assert np.array_equal(res.cluster_size, counts)


def test_exact_duplicates_collapse_to_first_occurrence():
    rng = np.random.default_rng(1)
    base = rng.normal(0.0, 50.0, (5, FEATURE_DIM)).astype(np.float32)
    labels = rng.permutation(np.repeat(np.arange(5), [1, 7, 30, 2, 60]))
    x = base[labels]
    res = dedup_poses(x, threshold_mm=0.5)
    first = np.array([np.flatnonzero(labels == k)[0] for k in range(5)])
    assert np.array_equal(res.keep, np.sort(first))
    assert np.array_equal(res.representative, first[labels])
    assert np.array_equal(res.cluster_size, np.bincount(labels)[labels[res.keep]])


def test_points_farther_apart_than_threshold_all_survive():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 40.0, (500, FEATURE_DIM)).astype(np.float32)
    d = cdist(x.astype(np.float64), x.astype(np.float64))
    np.fill_diagonal(d, np.inf)
    threshold = 0.999 * d.min()
    res = dedup_poses(x, threshold)
    assert np.array_equal(res.keep, np.arange(500))
    assert np.array_equal(res.representative, np.arange(500))
    assert np.all(res.cluster_size == 1)


def test_distance_equal_to_threshold_counts_as_covered():
    """Covered means <= threshold, so kept poses are strictly farther apart than it."""
    x = np.zeros((3, FEATURE_DIM), np.float32)
    x[1, 7] = 4.0  # exactly 4 mm from x[0]
    x[2, 7] = 8.0  # exactly 4 mm from x[1], 8 mm from x[0]
    assert np.array_equal(dedup_poses(x, 4.0).keep, [0, 2])
    assert np.array_equal(dedup_poses(x, 4.0).representative, [0, 0, 2])
    assert np.array_equal(dedup_poses(x, 3.999).keep, [0, 1, 2])
    assert np.array_equal(dedup_poses(x, 8.0).keep, [0])


@pytest.mark.parametrize(
    "make, threshold",
    [
        (lambda: clustered(2000, 60, spread=12.0, seed=3), 10.0),
        (lambda: clustered(2000, 60, spread=12.0, seed=4), 4.0),
        (lambda: clustered(2000, 30, spread=40.0, seed=5), 30.0),
        (lambda: video_walk(2500, step=1.5, seed=6), 5.0),
        (lambda: video_walk(2500, step=1.5, seed=7), 25.0),
    ],
)
def test_matches_bruteforce_reference(make, threshold):
    x = make()
    keep, rep = bruteforce_leaders(x, threshold)
    res = dedup_poses(x, threshold)
    assert 1 < len(keep) < len(x)  # a non-trivial case
    assert np.array_equal(res.keep, keep)
    assert np.array_equal(res.representative, rep)
    assert_guarantees(x, threshold, res)


def test_small_chunks_give_the_same_answer(small_chunks):
    """Cut chunks, several dense rounds and pair batches must not change the result."""
    for x, threshold in [(video_walk(1500, 1.5, seed=8), 6.0), (clustered(1500, 40, 12.0, 9), 9.0)]:
        keep, rep = bruteforce_leaders(x, threshold)
        res = dedup_poses(x, threshold)
        assert np.array_equal(res.keep, keep)
        assert np.array_equal(res.representative, rep)
        assert_guarantees(x, threshold, res)


def test_order_sets_who_leads():
    x = video_walk(1500, step=1.5, seed=10)
    order = np.random.default_rng(11).permutation(len(x))
    keep, rep = bruteforce_leaders(x, 7.0, order)
    res = dedup_poses(x, 7.0, order=order)
    assert np.array_equal(res.keep, keep)
    assert np.array_equal(res.representative, rep)
    assert not np.array_equal(res.keep, dedup_poses(x, 7.0).keep)


def test_deterministic_and_independent_of_input_copy():
    x = clustered(3000, 80, spread=15.0, seed=12)
    a = dedup_poses(x, 8.0)
    b = dedup_poses(x.astype(np.float64), 8.0)
    for field in ("keep", "representative", "cluster_size"):
        assert np.array_equal(getattr(a, field), getattr(b, field))


def test_empty_input():
    res = dedup_poses(np.empty((0, FEATURE_DIM), np.float32), 5.0)
    assert len(res.keep) == len(res.representative) == len(res.cluster_size) == 0


def hands(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random hand-sized keypoints (n, 21, 3) in metres for both hands."""
    rng = np.random.default_rng(seed)
    right = rng.normal(0.0, 0.05, (n, 21, 3))
    left = rng.normal(0.0, 0.05, (n, 21, 3)) + np.array([0.0, -0.12, 0.0])
    return right, left


def test_features_distance_is_rms_of_root_aligned_keypoints_and_relative_wrist():
    right, left = hands(1, seed=13)
    f0 = dedup_features(right, left)
    assert f0.shape == (1, FEATURE_DIM) and f0.dtype == np.float32

    # Moving the whole scene changes nothing.
    shift = np.array([0.3, -0.2, 1.0])
    assert np.allclose(dedup_features(right + shift, left + shift), f0, atol=1e-3)

    # Moving the left hand rigidly by 7 mm changes only the relative placement: 7 mm.
    moved = left + np.array([0.0, 0.007, 0.0])
    assert np.linalg.norm(dedup_features(right, moved) - f0) == pytest.approx(7.0, rel=1e-4)

    # Moving 20 right-hand keypoints by 6 mm (wrist fixed): RMS over 42 keypoints.
    bent = right.copy()
    bent[:, 1:] += np.array([0.006, 0.0, 0.0])
    expected = np.sqrt(20 * 6.0**2 / 42)
    assert np.linalg.norm(dedup_features(bent, left) - f0) == pytest.approx(expected, rel=1e-4)


def test_features_match_rms_definition_on_random_pairs():
    right, left = hands(50, seed=14)
    f = dedup_features(right, left).astype(np.float64)
    ra = (right - right[:, :1]) * 1000.0  # (n, 21, 3) mm, root-aligned
    la = (left - left[:, :1]) * 1000.0
    rel = (left[:, 0] - right[:, 0]) * 1000.0
    for a, b in [(0, 1), (2, 30), (49, 7)]:
        sq = ((ra[a] - ra[b]) ** 2).sum() + ((la[a] - la[b]) ** 2).sum()
        expected = np.sqrt(sq / 42 + ((rel[a] - rel[b]) ** 2).sum())
        assert np.linalg.norm(f[a] - f[b]) == pytest.approx(expected, rel=1e-5)


def test_check_min_spacing_finds_the_closest_pair():
    rng = np.random.default_rng(15)
    x = rng.normal(0.0, 100.0, (300, FEATURE_DIM))
    x[217] = x[42] + 3.0 / np.sqrt(FEATURE_DIM)  # 3 mm apart
    ok, dmin, pair = check_min_spacing(x, 5.0)
    assert not ok
    assert dmin == pytest.approx(3.0)
    assert pair == (42, 217)
    ok, _, _ = check_min_spacing(np.delete(x, 217, axis=0), 5.0)
    assert ok


def test_check_min_spacing_on_exact_duplicates_and_tiny_inputs():
    x = np.random.default_rng(16).normal(0.0, 50.0, (40, FEATURE_DIM))
    x[31] = x[5]
    ok, dmin, pair = check_min_spacing(x, 1.0)
    assert (ok, dmin, pair) == (False, 0.0, (5, 31))
    assert check_min_spacing(x[:1], 1.0) == (True, float("inf"), None)


def test_bad_inputs_are_named():
    right, left = hands(4, seed=17)
    with pytest.raises(ValueError, match=r"keypoints_left must have shape \(N, 21, 3\)"):
        dedup_features(right, left[:, :16])
    with pytest.raises(ValueError, match="4 rows but keypoints_left has 3"):
        dedup_features(right, left[:3])
    bad = right.copy()
    bad[2, 5, 1] = np.nan
    with pytest.raises(ValueError, match="keypoints_right row 2 has NaN"):
        dedup_features(bad, left)

    x = clustered(20, 3, 5.0, seed=18)
    x[11, 3] = np.inf
    with pytest.raises(ValueError, match="features row 11 has NaN or infinite"):
        dedup_poses(x, 5.0)
    x = clustered(20, 3, 5.0, seed=18)
    for t in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="threshold_mm must be a positive finite"):
            dedup_poses(x, t)
    with pytest.raises(ValueError, match="order is not a permutation: row 19 never appears"):
        dedup_poses(x, 5.0, order=np.r_[np.arange(19), 0])
    with pytest.raises(ValueError, match="order entry 3 is outside 0..19"):
        dedup_poses(x, 5.0, order=np.r_[np.arange(3), 20, np.arange(4, 20)])
    with pytest.raises(ValueError, match="order must be an integer array of shape"):
        dedup_poses(x, 5.0, order=np.arange(10))
    with pytest.raises(ValueError, match="too small for features of magnitude"):
        dedup_poses(x * 1e12, 1e-6)
