"""Pose deduplication: one representative for every group of near-identical two-hand poses.

RenderIH starts from the interacting frames of InterHand2.6M (about 1.4M). They come from video,
so a pose repeats almost unchanged over many consecutive frames; removing similar poses leaves
3,680 distinct ones, which the later stages augment, optimise and render. This module decides
which poses are "similar" and which one stands for each group.

Distance. :func:`dedup_features` maps a two-hand pose to a vector ``f`` (millimetres) such that

    ||f_a - f_b||**2 = RMS_a,b**2 + ||rel_a - rel_b||**2,

where ``RMS`` is the root-mean-square distance between corresponding root-aligned keypoints over
all 42 keypoints (each hand's keypoints minus that hand's wrist; the two wrists contribute 0) and
``rel`` is the left wrist minus the right wrist. The two terms are the quadratic versions of the
two errors InterHand2.6M reports, MPJPE (root-aligned per hand) and MRRPE (relative root), so a
threshold of T mm means: articulation differs by at most T mm RMS (hence MPJPE <= T, since a mean
is at most the RMS) *and* the hands' relative placement differs by at most T mm, with the two
budgets shared in quadrature. Global orientation is kept (no Procrustes): the same hand shape
seen rotated is rendered differently and counts as a different pose. Being Euclidean, the
distance never grows under an orthonormal projection, which the spatial index relies on.

Clustering. :func:`dedup_poses` runs Hartigan's leader algorithm in a given order: a pose becomes
a kept representative ("leader") unless an earlier leader lies within the threshold, and each pose
maps to the *earliest* leader within the threshold. Hence no two kept poses are within the
threshold of each other and every pose is within the threshold of its representative; the result
depends only on the features, the threshold and the order, never on chunking or the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

from handsynth.pose_table import PoseTable

if TYPE_CHECKING:
    from handsynth.hand_model.model import HandModel

#: Number of MANO keypoints per hand (16 joints + 5 fingertips), index 0 = wrist.
N_KEYPOINTS = 21
#: Feature width: 20 root-aligned non-wrist keypoints x 3 per hand, + the relative wrist vector.
FEATURE_DIM = 2 * (N_KEYPOINTS - 1) * 3 + 3

# Spatial index. Features are projected on their top principal directions (an orthonormal
# projection never lengthens a difference, so a pair within T stays within T in the projection);
# the first _GRID_DIMS projected coordinates are hashed into cells of side T, so every leader
# within T of a query sits in one of the 3**_GRID_DIMS neighbouring cells. Candidates are then
# screened in _PROJ_DIMS projected coordinates before the exact full-dimension test.
_GRID_DIMS = 4
_PROJ_DIMS = 8
_PCA_SAMPLE = 16_384
# Slack on the projected screens, relative to the largest feature magnitude: float64 rounding
# of a projection is below ~1e-13 of it, so the screens stay conservative (they may pass a few
# extra candidates to the exact test, never drop one).
_SLACK = 1e-11
# Chunking (see _leader_clustering): chunk sizes adapt to hold about _TARGET_UNCOVERED poses
# not covered by earlier leaders; those are resolved _DENSE_CAP at a time (a cap x cap dense
# block), and a chunk is cut when more than _RECHECK_MAX remain after a round.
_CHUNK_MIN = 256
_CHUNK_MAX = 16_384
_DENSE_CAP = 256
_TARGET_UNCOVERED = 1_024
_RECHECK_MAX = 4_096
# Memory bounds: candidate pairs materialised at once (~120 bytes each) and rows per block of
# the exact float64 test.
_PAIR_BUDGET = 1 << 19
_EXACT_BLOCK = 8_192


@dataclass(frozen=True)
class DedupResult:
    """Outcome of :func:`dedup_poses`; all indices refer to rows of the input features."""

    keep: np.ndarray  # (K,) int64, sorted indices of the kept representatives
    representative: np.ndarray  # (N,) int64, earliest kept pose within the threshold
    cluster_size: np.ndarray  # (K,) int64, inputs each kept pose stands for (aligned with keep)


def dedup_features(keypoints_right: np.ndarray, keypoints_left: np.ndarray) -> np.ndarray:
    """Distance features (N, 123) float32 in mm for two-hand keypoints given in metres.

    Layout: right hand's 20 root-aligned keypoints (wrist dropped, it is always 0), left hand's
    20, each scaled by 1/sqrt(42), then the left-minus-right wrist vector; see the module
    docstring for the distance this induces.
    """
    right = _validated_keypoints(keypoints_right, "keypoints_right")  # (N, 21, 3)
    left = _validated_keypoints(keypoints_left, "keypoints_left")  # (N, 21, 3)
    if len(right) != len(left):
        raise ValueError(
            f"keypoints_right has {len(right)} rows but keypoints_left has {len(left)}; "
            "they must describe the same poses"
        )
    scale = 1000.0 / np.sqrt(2 * N_KEYPOINTS)  # metres -> mm, RMS over 42 keypoints
    half = (N_KEYPOINTS - 1) * 3
    out = np.empty((len(right), FEATURE_DIM), np.float32)
    # Row blocks keep the float64 temporaries small at 1.4M poses.
    for lo in range(0, len(right), _CHUNK_MAX):
        rk = right[lo : lo + _CHUNK_MAX].astype(np.float64)  # (b, 21, 3)
        lk = left[lo : lo + _CHUNK_MAX].astype(np.float64)  # (b, 21, 3)
        block = out[lo : lo + _CHUNK_MAX]  # (b, 123) view
        block[:, :half] = ((rk[:, 1:] - rk[:, :1]) * scale).reshape(len(rk), half)
        block[:, half : 2 * half] = ((lk[:, 1:] - lk[:, :1]) * scale).reshape(len(lk), half)
        block[:, 2 * half :] = (lk[:, 0] - rk[:, 0]) * 1000.0
    return out


def dedup_poses(
    features: np.ndarray, threshold_mm: float, order: np.ndarray | None = None
) -> DedupResult:
    """Greedy leader clustering of ``features`` (N, D) in ``order`` (default: input order).

    A pose is covered by a leader when their distance is <= ``threshold_mm``; kept poses are
    therefore pairwise farther apart than the threshold. Runs in chunks against a grid index of
    the leaders, so time grows with N times the leaders near each pose, and memory beyond the
    input is O(chunk + leaders), not O(N**2).
    """
    x = _validated_features(features)  # (N, D)
    threshold = _validated_threshold(threshold_mm)
    perm = _validated_order(order, len(x))  # (N,)
    n = len(x)
    if n == 0:
        empty = np.empty(0, np.int64)
        return DedupResult(keep=empty, representative=empty, cluster_size=empty)

    # The loop makes thousands of small BLAS calls; handing each to a pool of BLAS threads
    # costs more than the arithmetic (measured ~2.8x slower on 2 shared cores), so run single.
    with threadpool_limits(limits=1, user_api="blas"):
        rep_id, leaders = _leader_clustering(x, threshold, perm)
    representative = np.empty(n, np.int64)
    representative[perm] = leaders[rep_id]
    by_row = np.argsort(leaders, kind="stable")
    sizes = np.bincount(rep_id, minlength=len(leaders))
    return DedupResult(
        keep=leaders[by_row], representative=representative, cluster_size=sizes[by_row]
    )


def _leader_clustering(
    x: np.ndarray, threshold: float, perm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Leader id (N,) per processing position and input row (K,) per leader id.

    Each chunk of the order is first queried against the index of all earlier leaders; a pose
    covered there is final, since every leader created later has a larger id. The uncovered
    rest is resolved in rounds: the next ``_DENSE_CAP`` of them are clustered among themselves
    (:func:`_leaders_among`), and the remaining ones are checked against just the leaders that
    round created. If too many remain to re-check, the chunk is cut at the first of them and
    they are queried afresh with the next chunk; chunk sizes adapt so that a chunk holds about
    ``_TARGET_UNCOVERED`` uncovered poses.
    """
    n = len(x)
    grid = _Grid(x, threshold)
    index = _LeaderIndex(grid, x)
    rep_id = np.empty(n, np.int64)  # leader id (creation rank) per processing position
    leader_rows: list[np.ndarray] = []  # input rows of the leaders, in id order
    pos, chunk = 0, _CHUNK_MIN
    while pos < n:
        rows = perm[pos : pos + chunk]  # (c,)
        xq = x[rows]  # (c, D)
        pq = grid.project(xq)  # (c, k)
        best = index.earliest_within(xq, pq)  # (c,) leader id or -1
        pending = np.flatnonzero(best < 0)  # positions in the chunk still without a leader
        uncovered, done = len(pending), len(rows)
        while len(pending):
            head, pending = pending[:_DENSE_CAP], pending[_DENSE_CAP:]
            local_rep = _leaders_among(xq[head], threshold)  # (h,) into head
            is_new = local_rep == np.arange(len(head))
            best[head] = index.count + (np.cumsum(is_new) - 1)[local_rep]
            new = head[is_new]
            fresh = _LeaderIndex(grid, x, first_id=index.count)
            fresh.add(rows[new], pq[new])
            index.add(rows[new], pq[new])
            leader_rows.append(rows[new])
            if len(pending) > _RECHECK_MAX:
                done = int(pending[0])
                break
            best[pending] = fresh.earliest_within(xq[pending], pq[pending])
            pending = pending[best[pending] < 0]
        rep_id[pos : pos + done] = best[:done]
        pos += done
        grow = 2 * chunk if uncovered == 0 else chunk * _TARGET_UNCOVERED // uncovered
        chunk = int(np.clip(grow, _CHUNK_MIN, min(2 * chunk, _CHUNK_MAX)))
    return rep_id, np.concatenate(leader_rows)


def check_min_spacing(
    features_kept: np.ndarray, threshold_mm: float
) -> tuple[bool, float, tuple[int, int] | None]:
    """Independently verify that kept poses are pairwise at least ``threshold_mm`` apart.

    Uses a k-d tree's exact 2-nearest-neighbour query in full dimension (fine for thousands of
    rows). Returns ``(ok, min_distance_mm, (i, j))`` with the closest pair's row indices, or
    ``(True, inf, None)`` for fewer than two rows.
    """
    x = _validated_features(features_kept, "features_kept").astype(np.float64)  # (K, D)
    threshold = _validated_threshold(threshold_mm)
    if len(x) < 2:
        return True, float("inf"), None
    dist, nbr = cKDTree(x).query(x, k=2)  # (K, 2) each
    rows = np.arange(len(x))
    # With exact duplicates the tree may list the twin first and the point itself second.
    other = np.where(nbr[:, 0] == rows, nbr[:, 1], nbr[:, 0])  # (K,)
    i = int(np.argmin(dist[:, 1]))
    j = int(other[i])
    min_dist = float(dist[i, 1])
    return min_dist >= threshold, min_dist, (min(i, j), max(i, j))


class _Grid:
    """Projection of features onto principal directions and hashing into cells of side T.

    Cell keys are a linear hash of the integer cell coordinates over the first ``_GRID_DIMS``
    projected dims, so the key of a neighbouring cell is the cell's key plus the key of the
    offset; a hash collision only adds candidates that the distance tests then reject.
    """

    def __init__(self, x: np.ndarray, threshold: float) -> None:
        self.threshold = threshold
        self.mean, self.basis = _principal_directions(x)  # (D,), (D, k)
        self.shift = self.mean @ self.basis  # (k,) projected mean
        dims = min(_GRID_DIMS, self.basis.shape[1])
        magnitude = max(float(x.max()), -float(x.min()), threshold)
        if 2.0 * np.sqrt(x.shape[1]) * magnitude / threshold > 2.0**52:
            raise ValueError(
                f"threshold_mm={threshold!r} is too small for features of magnitude "
                f"{magnitude:.3g}: grid cells would exceed float64 integer precision"
            )
        self.cell = threshold + _SLACK * magnitude
        self.proj_radius2 = self.cell**2
        rng = np.random.default_rng(0x5EED)
        self.mult = rng.integers(1, 2**63, size=dims, dtype=np.uint64) | 1  # (g,) odd
        offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * dims, indexing="ij"), -1)
        self.offset_keys = self._hash(offsets.reshape(-1, dims))  # (3**g,)

    def project(self, xq: np.ndarray) -> np.ndarray:
        """Projected coordinates (c, k) float64 of feature rows (c, D)."""
        return xq.astype(np.float64) @ self.basis - self.shift

    def keys(self, pq: np.ndarray) -> np.ndarray:
        """Cell keys (c,) uint64 of projected points (c, k)."""
        return self._hash(np.floor(pq[:, : len(self.mult)] / self.cell))

    def _hash(self, cells: np.ndarray) -> np.ndarray:
        """Keys (c,) uint64 of integer cell coordinates (c, g); wraps modulo 2**64."""
        return (cells.astype(np.int64).view(np.uint64) * self.mult).sum(axis=1, dtype=np.uint64)


class _LeaderIndex:
    """Leaders (as rows of ``x``) with their projections, sorted by grid cell key.

    Leader ids start at ``first_id`` and follow the order of :meth:`add`. Features stay in
    ``x`` (no copy), so the index costs O(k) floats per leader.
    """

    def __init__(self, grid: _Grid, x: np.ndarray, first_id: int = 0) -> None:
        self.grid = grid
        self.x = x  # (N, D) all features
        self.first_id = first_id
        self.x_row = np.empty(_DENSE_CAP, np.int64)  # (capacity,) row of x per leader
        self.proj = np.empty((_DENSE_CAP, grid.basis.shape[1]), np.float64)  # (capacity, k)
        self.size = 0
        self.sorted_keys = np.empty(0, np.uint64)  # (L,) cell keys, ascending
        self.sorted_slots = np.empty(0, np.int64)  # (L,) slots of x_row/proj in that order

    @property
    def count(self) -> int:
        """The id the next added leader gets."""
        return self.first_id + self.size

    def add(self, x_rows: np.ndarray, proj: np.ndarray) -> None:
        """Append new leaders, rows (m,) of ``x`` projected to (m, k); ids continue ``count``."""
        m = len(x_rows)
        if self.size + m > len(self.x_row):
            cap = max(2 * len(self.x_row), self.size + m)
            self.x_row = _grown(self.x_row, cap)
            self.proj = _grown(self.proj, cap)
        slots = np.arange(self.size, self.size + m)
        self.x_row[slots] = x_rows
        self.proj[slots] = proj
        self.size += m
        keys = self.grid.keys(proj)
        by_key = np.argsort(keys, kind="stable")  # np.insert keeps argument order at ties
        keys, slots = keys[by_key], slots[by_key]
        where = np.searchsorted(self.sorted_keys, keys, side="right")
        self.sorted_keys = np.insert(self.sorted_keys, where, keys)
        self.sorted_slots = np.insert(self.sorted_slots, where, slots)

    def earliest_within(self, xq: np.ndarray, pq: np.ndarray) -> np.ndarray:
        """Id (c,) of the earliest leader within the threshold of each query, -1 if none."""
        c = len(xq)
        none = np.iinfo(np.int64).max
        best = np.full(c, none)
        if self.size:
            ucell, inv = np.unique(self.grid.keys(pq), return_inverse=True)  # (U,), (c,)
            inv = inv.reshape(-1)
            nkeys = ucell[:, None] + self.grid.offset_keys[None, :]  # (U, 3**g)
            lo = np.searchsorted(self.sorted_keys, nkeys, side="left")  # (U, 3**g)
            cnt = np.searchsorted(self.sorted_keys, nkeys, side="right") - lo  # (U, 3**g)
            bounds = np.cumsum(cnt.sum(axis=1)[inv])  # (c,) running candidate-pair count
            start = 0
            while start < c:
                # Largest query batch whose candidate pairs fit the budget (at least one query).
                base = bounds[start - 1] if start else 0
                stop = max(start + 1, int(np.searchsorted(bounds, base + _PAIR_BUDGET, "right")))
                q, slots = self._candidates(lo[inv[start:stop]], cnt[inv[start:stop]])
                q += start
                self._keep_earliest(best, q, slots, xq, pq)
                start = stop
        found = best != none
        best[found] += self.first_id
        best[~found] = -1
        return best

    def _candidates(self, lo: np.ndarray, cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs (query (P,), leader slot (P,)) from per-query cell ranges (b, 3**g)."""
        owner = np.repeat(np.arange(len(lo)), lo.shape[1])  # (b * 3**g,)
        lo, cnt = lo.reshape(-1), cnt.reshape(-1)
        nonempty = cnt > 0
        lo, cnt, owner = lo[nonempty], cnt[nonempty], owner[nonempty]
        first = np.cumsum(cnt) - cnt  # (r,) start of each range in the pair list
        at = np.arange(int(cnt.sum())) + np.repeat(lo - first, cnt)  # (P,) sorted positions
        return np.repeat(owner, cnt), self.sorted_slots[at]

    def _keep_earliest(
        self, best: np.ndarray, q: np.ndarray, slots: np.ndarray, xq: np.ndarray, pq: np.ndarray
    ) -> None:
        """Lower ``best[q]`` to ``slots`` for candidate pairs that pass the distance tests.

        Slots follow id order, so the smallest slot is the earliest leader.
        """
        diff = self.proj[slots] - pq[q]  # (P, k)
        near = np.einsum("ij,ij->i", diff, diff) <= self.grid.proj_radius2
        q, slots = q[near], slots[near]
        near = _within(self.x, self.x_row[slots], xq, q, self.grid.threshold)
        np.minimum.at(best, q[near], slots[near])


def _within(
    a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray, threshold: float
) -> np.ndarray:
    """Pairwise ``||a[ia] - b[ib]|| <= threshold`` (P,) in float64: the one exact coverage test.

    Gathers and compares in blocks of pairs so the temporaries stay a few MB whatever P is.
    """
    out = np.empty(len(ia), bool)
    for lo in range(0, len(ia), _EXACT_BLOCK):
        blk = slice(lo, lo + _EXACT_BLOCK)
        diff = a[ia[blk]].astype(np.float64) - b[ib[blk]]  # (p, D)
        out[blk] = np.einsum("ij,ij->i", diff, diff) <= threshold * threshold
    return out


def _leaders_among(xu: np.ndarray, threshold: float) -> np.ndarray:
    """Leader clustering of a small block (u, D) on its own: earliest leader (u,) per row.

    Pairwise squared distances come from the Gram matrix (one BLAS call); only pairs whose
    Gram value lies within its rounding bound of the threshold are re-decided by :func:`_within`,
    so the outcome matches the exact test used everywhere else.
    """
    u = len(xu)
    x64 = xu.astype(np.float64)  # (u, D)
    sq = np.einsum("ij,ij->i", x64, x64)  # (u,)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x64 @ x64.T)  # (u, u)
    t2 = threshold * threshold
    close = d2 <= t2  # (u, u)
    unsure = np.nonzero(np.abs(d2 - t2) <= 1e-12 * (sq[:, None] + sq[None, :]) + 1e-12 * t2)
    close[unsure] = _within(xu, unsure[0], xu, unsure[1], threshold)
    rep = np.full(u, -1, np.int64)
    for j in range(u):
        if rep[j] < 0:  # no earlier leader of this block covers j: j leads
            rep[(rep < 0) & close[j]] = j
    return rep


def _principal_directions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and top principal directions (D, k) from an evenly strided row sample.

    Any orthonormal basis keeps the index exact; principal directions only make it selective.
    """
    step = max(1, len(x) // _PCA_SAMPLE)
    sample = x[::step].astype(np.float64)  # (S, D)
    mean = sample.mean(axis=0)
    cov = sample.T @ sample / len(sample) - np.outer(mean, mean)  # (D, D), no centred copy
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    k = min(_PROJ_DIMS, x.shape[1])
    return mean, np.ascontiguousarray(vecs[:, ::-1][:, :k])


def _grown(a: np.ndarray, rows: int) -> np.ndarray:
    out = np.empty((rows,) + a.shape[1:], a.dtype)
    out[: len(a)] = a
    return out


def _validated_keypoints(kp: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(kp)
    if a.ndim != 3 or a.shape[1:] != (N_KEYPOINTS, 3):
        raise ValueError(f"{name} must have shape (N, {N_KEYPOINTS}, 3), got {a.shape}")
    _check_finite(a.reshape(len(a), -1), name, "coordinates")
    return a


def _validated_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {x.shape}")
    _check_finite(x, name, "values")
    return np.ascontiguousarray(x)


def _check_finite(rows: np.ndarray, name: str, what: str) -> None:
    """Raise naming the first row (N, k) of ``name`` with a NaN or infinity.

    A float64 row sum is finite iff the row is, barring overflow of huge values, which the
    exact check of the suspect rows then clears; this avoids an (N, k) boolean temporary.
    """
    if not np.issubdtype(rows.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {rows.dtype}")
    suspects = np.flatnonzero(~np.isfinite(rows.sum(axis=1, dtype=np.float64)))
    bad = suspects[~np.isfinite(rows[suspects]).all(axis=1)]
    if len(bad):
        raise ValueError(f"{name} row {int(bad[0])} has NaN or infinite {what}")


def _validated_threshold(threshold_mm: float) -> float:
    t = float(threshold_mm)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"threshold_mm must be a positive finite distance, got {threshold_mm!r}")
    return t


def _validated_order(order: np.ndarray | None, n: int) -> np.ndarray:
    if order is None:
        return np.arange(n, dtype=np.int64)
    perm = np.asarray(order)
    if perm.shape != (n,) or not np.issubdtype(perm.dtype, np.integer):
        raise ValueError(f"order must be an integer array of shape ({n},), got {perm.shape}")
    seen = np.zeros(n, bool)
    inside = (perm >= 0) & (perm < n)
    if not inside.all():
        raise ValueError(f"order entry {int(np.argmin(inside))} is outside 0..{n - 1}")
    seen[perm] = True
    if not seen.all():
        raise ValueError(f"order is not a permutation: row {int(np.argmin(seen))} never appears")
    return perm.astype(np.int64)


# ---- the pipeline step -------------------------------------------------------------------------


def pose_features(model: "HandModel", table: PoseTable, batch: int = 65_536) -> np.ndarray:
    """Dedup features (N, 123) of a pose table, from skeleton-only keypoints (cheap for 1.4M rows)."""
    import torch

    keypoints = {}
    with torch.no_grad():
        for side in ("right", "left"):
            h = table.hand(side)
            chunks = []
            for s in range(0, len(table), batch):
                t = [torch.as_tensor(h[k][s:s + batch], device=model.device)
                     for k in ("global_orient", "hand_pose", "betas", "transl")]
                chunks.append(model.keypoints_fk(side, *t).cpu().numpy())
            keypoints[side] = np.concatenate(chunks) if chunks else np.zeros((0, N_KEYPOINTS, 3), np.float32)
    return dedup_features(keypoints["right"], keypoints["left"])


def remove_similar_poses(model: "HandModel", table: PoseTable, threshold_mm: float, shard_size: int) -> PoseTable:
    """RenderIH's dedup step: one kept pose per cluster, with its cluster size and shard key.

    Kept poses keep their input order; shard ``i`` holds kept poses ``i*shard_size`` onwards and
    is named ``shard=00012``, the key of its dynamic partition.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    result = dedup_poses(pose_features(model, table), threshold_mm)
    kept = table.take(result.keep)
    kept.meta["distinct_pose_id"] = kept.meta["pose_id"].astype("string")
    kept.meta["cluster_size"] = result.cluster_size.astype(np.int64)
    kept.meta["shard"] = pd.Series([f"shard={i // shard_size:05d}" for i in range(len(kept))], dtype="string")
    return kept
