"""Benchmark pose deduplication at InterHand2.6M scale (~1.4M interacting frames).

The data imitate IH2.6M's redundancy: a few thousand base two-hand poses, each performed in
video sequences of 100-800 frames that wander slowly around it (a bounded, smooth drift of
finger curls, orientations and relative placement), plus ~1 mm per-frame keypoint noise, with
a per-sequence hand size. Keypoints come from a simple forward-kinematics skeleton in MANO order
with adult proportions (metres).

Printed: time, peak memory and number kept of ``dedup_poses`` on the full set; and as the
baseline, measured in the same run, brute-force greedy leader clustering (each pose against
all leaders so far, vectorised over the leaders) and the fast method on the same subsample,
with the brute force extrapolated to the full set by a cost model (per pose + per comparison)
fitted to its own per-block timings.

Usage: python benchmarks/dedup_bench.py [--n 1400000] [--threshold 10] [--subsample 20000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from handsynth.dedup import (  # noqa: E402
    FEATURE_DIM,
    check_min_spacing,
    dedup_features,
    dedup_poses,
)

# Right hand at rest, metres: wrist at the origin, fingers along +y, palm facing -z, thumb +x.
# Fingers in MANO joint order: index, middle, pinky, ring (joints 1-3, 4-6, 7-9, 10-12).
_FINGER_BASE = np.array([[0.022, 0.088, 0.0], [0.002, 0.092, 0.0], [-0.034, 0.078, 0.0],
                         [-0.017, 0.088, 0.0]])  # (4, 3) MCP joints
_FINGER_SPLAY = np.array([0.12, 0.0, -0.25, -0.12])  # (4,) rest direction in the palm plane
_FINGER_BONES = np.array([[0.040, 0.024, 0.020], [0.045, 0.028, 0.021], [0.032, 0.019, 0.018],
                          [0.042, 0.027, 0.021]])  # (4, 3) MCP-PIP, PIP-DIP, DIP-tip
_THUMB_BASE = np.array([0.020, 0.022, -0.008])  # CMC
_THUMB_BONES = np.array([0.040, 0.032, 0.026])  # CMC-MCP, MCP-IP, IP-tip
_THUMB_DIR = np.array([0.75, 0.6, -0.28]) / np.linalg.norm([0.75, 0.6, -0.28])
_THUMB_FLEX = np.array([-0.55, 0.45, -0.70]) / np.linalg.norm([-0.55, 0.45, -0.70])
# Fingertip order in MANO keypoints 16-20: thumb, index, middle, ring, pinky.
_TIP_OF_FINGER = {0: 17, 1: 18, 2: 20, 3: 19}


def hand_keypoints(flex: np.ndarray, abd: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Right-hand keypoints (F, 21, 3) in the hand frame from flexion (F, 5, 3) rad (thumb
    last), abduction (F, 5) rad and size factor (F,)."""
    f = len(flex)
    out = np.zeros((f, 21, 3))
    palm_normal = np.array([0.0, 0.0, -1.0])
    for i in range(4):
        angle = _FINGER_SPLAY[i] + abd[:, i]  # (F,)
        in_plane = np.stack([np.sin(angle), np.cos(angle), np.zeros(f)], -1)  # (F, 3)
        bend = np.cumsum(flex[:, i], axis=1)  # (F, 3) cumulative flexion along the chain
        dirs = (np.cos(bend)[..., None] * in_plane[:, None]
                + np.sin(bend)[..., None] * palm_normal)  # (F, 3, 3)
        chain = _FINGER_BASE[i] + np.cumsum(dirs * _FINGER_BONES[i][:, None], axis=1)
        out[:, 1 + 3 * i] = _FINGER_BASE[i]
        out[:, 2 + 3 * i : 4 + 3 * i] = chain[:, :2]
        out[:, _TIP_OF_FINGER[i]] = chain[:, 2]
    side = np.cross(_THUMB_DIR, _THUMB_FLEX)
    base_dir = _THUMB_DIR * np.cos(abd[:, 4:5]) + side * np.sin(abd[:, 4:5])  # (F, 3)
    bend = np.cumsum(flex[:, 4], axis=1)  # (F, 3)
    dirs = np.cos(bend)[..., None] * base_dir[:, None] + np.sin(bend)[..., None] * _THUMB_FLEX
    chain = _THUMB_BASE + np.cumsum(dirs * _THUMB_BONES[:, None], axis=1)  # (F, 3, 3)
    out[:, 13] = _THUMB_BASE
    out[:, 14:16] = chain[:, :2]
    out[:, 16] = chain[:, 2]
    return out * scale[:, None, None]


def rotate(points: np.ndarray, axis_angle: np.ndarray) -> np.ndarray:
    """Rotate points (F, J, 3) by Rodrigues' formula with axis-angle vectors (F, 3)."""
    theta = np.linalg.norm(axis_angle, axis=1, keepdims=True)  # (F, 1)
    k = axis_angle / np.maximum(theta, 1e-12)  # (F, 3)
    kx = np.cross(k[:, None], points)  # (F, J, 3)
    kd = np.einsum("fk,fjk->fj", k, points)[..., None]  # (F, J, 1)
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]  # (F, 1, 1)
    return points * c + kx * s + k[:, None] * kd * (1 - c)


def synthetic_interacting_frames(
    n: int, seed: int = 0, n_base: int = 3000, block: int = 20_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Right and left keypoints (b, 21, 3) float32 metres of video-like two-hand sequences,
    yielded in blocks of frames so the full keypoint arrays never need to exist at once."""
    rng = np.random.default_rng(seed)
    # Base poses: curls, spreads, hand orientations and relative placement.
    base_flex = rng.uniform(0.0, 1.4, (n_base, 2, 5, 3))
    base_abd = rng.uniform(-0.2, 0.2, (n_base, 2, 5))
    base_rot = rng.normal(0.0, 0.8, (n_base, 2, 3))
    base_rel = rng.normal([0.0, -0.12, 0.0], 0.05, (n_base, 3))
    lengths = []
    while sum(lengths) < n:
        lengths.append(int(rng.integers(100, 800)))
    lengths[-1] -= sum(lengths) - n
    seq_of_frame = np.repeat(np.arange(len(lengths)), lengths)  # (n,)
    t = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # frame within sequence
    pose = rng.integers(0, n_base, len(lengths))[seq_of_frame]  # (n,) base pose per frame
    scale = rng.uniform(0.9, 1.1, len(lengths))[seq_of_frame]  # (n,) hand size per sequence
    # Bounded, smooth drift around the base pose: a sum of 3 slow sinusoids per parameter.
    freq = rng.uniform(0.002, 0.02, (len(lengths), 3))
    phase = rng.uniform(0, 2 * np.pi, (len(lengths), 3, 49))
    # Drift amplitudes: finger flexion, abduction (rad), hand orientations (rad), placement (m).
    amp = np.repeat([0.08, 0.03, 0.05, 0.006], [30, 10, 6, 3])  # (49,)
    for lo in range(0, n, block):
        sl = slice(lo, min(lo + block, n))
        s, b, m = seq_of_frame[sl], pose[sl], sl.stop - sl.start
        wave = np.sin(2 * np.pi * freq[s][:, :, None] * t[sl][:, None, None] + phase[s])
        drift = (wave.sum(axis=1) / np.sqrt(3)) * amp  # (m, 49)
        flex = base_flex[b] + drift[:, :30].reshape(m, 2, 5, 3)
        abd = base_abd[b] + drift[:, 30:40].reshape(m, 2, 5)
        rot = base_rot[b] + drift[:, 40:46].reshape(m, 2, 3)
        rel = base_rel[b] + drift[:, 46:49]
        right = rotate(hand_keypoints(flex[:, 0], abd[:, 0], scale[sl]), rot[:, 0])
        left = rotate(hand_keypoints(flex[:, 1], abd[:, 1], scale[sl]), rot[:, 1])
        left[..., 0] *= -1.0  # the left hand is the mirror image of a right hand
        left += rel[:, None]
        right += rng.normal(0.0, 0.001, right.shape)  # ~1 mm annotation noise
        left += rng.normal(0.0, 0.001, left.shape)
        yield right.astype(np.float32), left.astype(np.float32)


def greedy_bruteforce(x: np.ndarray, threshold: float, block: int = 500):
    """Leader clustering comparing each pose with every leader so far (vectorised over the
    leaders). Returns the kept rows and, per block of rows, (seconds, comparisons)."""
    leaders = np.empty((len(x), x.shape[1]))
    keep: list[int] = []
    timings = []
    for lo in range(0, len(x), block):
        t0, comparisons = time.perf_counter(), 0
        for i in range(lo, min(lo + block, len(x))):
            row = x[i].astype(np.float64)
            d2 = ((leaders[: len(keep)] - row) ** 2).sum(axis=1)
            comparisons += len(keep)
            if not (d2 <= threshold * threshold).any():
                leaders[len(keep)] = row
                keep.append(i)
        timings.append((time.perf_counter() - t0, comparisons))
    return np.asarray(keep), np.asarray(timings)


def leader_comparisons(keep: np.ndarray, n: int) -> int:
    """Comparisons brute force makes in input order: per pose, the leaders created before it."""
    return int((n - 1 - keep).sum())


def brute_force_cost_model(timings: np.ndarray, block: int) -> tuple[float, float]:
    """Seconds per pose and per pose-leader comparison, fitted (non-negative least squares) to
    the per-block timings: the per-pose Python overhead dominates while leaders are few, so a
    cost per comparison alone would overstate the extrapolation."""
    design = np.stack([np.full(len(timings), block), timings[:, 1]], axis=1)
    (per_pose, per_comparison), _ = nnls(design, timings[:, 0])
    return per_pose, per_comparison


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_400_000, help="interacting frames to generate")
    ap.add_argument("--threshold", type=float, default=10.0, help="dedup threshold in mm")
    ap.add_argument("--subsample", type=int, default=20_000, help="rows for the brute force")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    feats = np.empty((args.n, FEATURE_DIM), np.float32)
    lo = 0
    for right, left in synthetic_interacting_frames(args.n, args.seed):
        feats[lo : lo + len(right)] = dedup_features(right, left)
        lo += len(right)
    print(f"generated {args.n:,} frames + features in {time.perf_counter() - t0:.1f} s "
          f"({feats.nbytes / 2**20:.0f} MiB of features)")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    res = dedup_poses(feats, args.threshold)
    t_full = time.perf_counter() - t0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok, dmin, _ = check_min_spacing(feats[res.keep], args.threshold)
    print(f"dedup_poses full: n={args.n:,} threshold={args.threshold} mm kept={len(res.keep):,} "
          f"time={t_full:.2f} s  max RSS {rss_before:.0f} -> {rss_after:.0f} MiB  "
          f"spacing ok={ok} (min {dmin:.2f} mm)")

    tracemalloc.start()
    dedup_poses(feats, args.threshold)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"dedup_poses full: peak memory allocated beyond the input {peak / 2**20:.0f} MiB "
          "(tracemalloc, separate run)")

    # Baseline on a contiguous subsample (keeps the video structure).
    block = 500
    sub = feats[: args.subsample // block * block]
    t0 = time.perf_counter()
    keep_bf, timings = greedy_bruteforce(sub, args.threshold, block)
    t_bf = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_sub = dedup_poses(sub, args.threshold)
    t_fast_sub = time.perf_counter() - t0
    same = np.array_equal(keep_bf, res_sub.keep)
    print(f"subsample n={len(sub):,}: brute force {t_bf:.2f} s, fast {t_fast_sub:.3f} s "
          f"(x{t_bf / t_fast_sub:.0f}), kept {len(keep_bf):,}, same keep set: {same}")
    per_pose, per_cmp = brute_force_cost_model(timings, block)
    full_comps = leader_comparisons(res.keep, args.n)
    t_bf_full = args.n * per_pose + full_comps * per_cmp
    print(f"brute force cost model: {per_pose * 1e6:.1f} us per pose + {per_cmp * 1e9:.2f} ns "
          f"per comparison; full set: {full_comps:.3e} comparisons -> {t_bf_full:.0f} s "
          f"(x{t_bf_full / t_full:.0f} the fast method's {t_full:.1f} s)")


if __name__ == "__main__":
    main()
