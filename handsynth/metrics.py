"""Two-hand 3D pose metrics in millimetres, batched over samples, on IH2.6M's 42-joint order.

The RenderIH paper compares estimators trained with and without synthetic data on InterHand2.6M
with the metrics below; each follows the code that defined it so numbers are comparable:

- **MPJPE**: mean joint distance after subtracting each hand's wrist (IH2.6M's root), per hand.
  As in IH2.6M's evaluation, a hand's joints count only when its root is valid too.
- **PA-MPJPE**: MPJPE after the similarity transform (rotation, scale, translation) that best
  aligns each predicted hand to its ground truth (Procrustes / Umeyama).
- **SA-MPJPE**: scale-aligned, as in IntagHand's evaluation: both hands centred on their middle
  MCP joint, the prediction scaled so its wrist-to-middle-MCP length equals the ground truth's.
- **MRRPE**: distance between predicted and true right-wrist-to-left-wrist vectors; the only
  metric here that sees the hands' relative placement.

Inputs are ``(N, 42, 3)`` arrays (right hand 0-20, left 21-41, see :mod:`handsynth.keypoints`)
in millimetres and an optional ``valid`` mask ``(N, 42)``. Per-sample functions return ``(N, 2)``
(right, left) or ``(N,)`` arrays with NaN where nothing valid remains; :func:`evaluate` averages.
"""

from __future__ import annotations

import numpy as np

from handsynth.keypoints import IH26M_HAND, IH26M_ROOT, keypoint_index
from handsynth.pose_table import SIDES

NUM_JOINTS = 42

#: Per side, the 42-array index of the middle MCP joint (IntagHand's centre for SA-MPJPE).
MIDDLE_MCP: dict[str, int] = {s: IH26M_HAND[s].start + keypoint_index("ih26m", "middle1") for s in SIDES}


def _inputs(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"ground truth must have shape (N, {NUM_JOINTS}, 3), got {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if valid is None:
        valid = np.ones(gt.shape[:2], dtype=bool)
    valid = np.asarray(valid).astype(bool)
    if valid.shape == (*gt.shape[:2], 1):  # IH2.6M stores joint_valid as (42, 1) per sample
        valid = valid[..., 0]
    if valid.shape != gt.shape[:2]:
        raise ValueError(f"valid mask must have shape {gt.shape[:2]}, got {valid.shape}")
    return pred, gt, valid


def _hands(x: np.ndarray) -> np.ndarray:
    """``(N, 42, ...)`` -> ``(N, 2, 21, ...)`` with hand axis (right, left)."""
    return np.stack([x[:, IH26M_HAND[s]] for s in SIDES], axis=1)


def _hand_mean(err: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of ``err (N, 2, 21)`` over valid joints per hand -> ``(N, 2)``; NaN if none valid."""
    count = valid.sum(axis=-1)
    total = np.where(valid, err, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def root_relative(joints: np.ndarray) -> np.ndarray:
    """Subtract each hand's wrist: ``(N, 42, 3)`` -> ``(N, 42, 3)``."""
    joints = np.asarray(joints, dtype=np.float64)
    out = joints.copy()
    for s in SIDES:
        out[:, IH26M_HAND[s]] -= joints[:, IH26M_ROOT[s], None]
    return out


def _root_valid(valid: np.ndarray, *index: dict[str, int]) -> np.ndarray:
    """``(N, 2, 21)`` joint mask, cleared for hands whose reference joints are not all valid."""
    hands = _hands(valid)
    for ref in index:
        hands = hands & np.stack([valid[:, ref[s]] for s in SIDES], axis=1)[..., None]
    return hands


def mpjpe(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Wrist-relative mean per-joint position error per sample and hand, ``(N, 2)``."""
    pred, gt, valid = _inputs(pred, gt, valid)
    err = np.linalg.norm(root_relative(pred) - root_relative(gt), axis=-1)  # (N, 42)
    return _hand_mean(_hands(err), _root_valid(valid, IH26M_ROOT))


def procrustes_align(pred: np.ndarray, gt: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Apply to ``pred (B, J, 3)`` the similarity transform that best maps it onto ``gt``.

    Weighted Umeyama: minimises ``sum_j w_j |s R p_j + T - g_j|^2`` with ``R`` a proper rotation.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    w = np.ones(pred.shape[:-1]) if weights is None else np.asarray(weights, dtype=np.float64)  # (B, J)
    wsum = np.maximum(w.sum(axis=-1), 1e-12)[:, None, None]  # (B, 1, 1)
    mu_p = (w[..., None] * pred).sum(axis=1, keepdims=True) / wsum  # (B, 1, 3)
    mu_g = (w[..., None] * gt).sum(axis=1, keepdims=True) / wsum
    p, g = pred - mu_p, gt - mu_g  # (B, J, 3)
    cov = np.einsum("bj,bji,bjk->bik", w, g, p) / wsum  # (B, 3, 3) = sum w g p^T
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U) * np.linalg.det(Vt))  # (B,) reflection guard
    D = np.ones_like(S)
    D[:, 2] = d
    rot = U @ (D[..., None] * Vt)  # (B, 3, 3)
    var_p = (w * (p**2).sum(axis=-1)).sum(axis=-1) / wsum[:, 0, 0]  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = (S * D).sum(axis=-1) / var_p  # (B,)
    return scale[:, None, None] * p @ rot.transpose(0, 2, 1) + mu_g


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-hand Procrustes-aligned mean per-joint position error, ``(N, 2)``."""
    pred, gt, valid = _inputs(pred, gt, valid)
    n = len(gt)
    hp, hg, hv = _hands(pred).reshape(2 * n, 21, 3), _hands(gt).reshape(2 * n, 21, 3), _hands(valid).reshape(2 * n, 21)
    aligned = procrustes_align(hp, hg, hv)  # (2N, 21, 3)
    err = np.linalg.norm(aligned - hg, axis=-1).reshape(n, 2, 21)
    return _hand_mean(err, hv.reshape(n, 2, 21))


def sa_mpjpe(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """IntagHand's scale-aligned error per sample and hand, ``(N, 2)``."""
    pred, gt, valid = _inputs(pred, gt, valid)
    out = []
    for s in SIDES:
        c, r = MIDDLE_MCP[s], IH26M_ROOT[s]
        p, g = pred[:, IH26M_HAND[s]] - pred[:, c, None], gt[:, IH26M_HAND[s]] - gt[:, c, None]  # (N, 21, 3)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.linalg.norm(gt[:, r] - gt[:, c], axis=-1) / np.linalg.norm(pred[:, r] - pred[:, c], axis=-1)
        out.append(np.linalg.norm(p * scale[:, None, None] - g, axis=-1))  # (N, 21)
    return _hand_mean(np.stack(out, axis=1), _root_valid(valid, IH26M_ROOT, MIDDLE_MCP))


def mrrpe(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean relative-root position error per sample, ``(N,)``; NaN where a wrist is not valid."""
    pred, gt, valid = _inputs(pred, gt, valid)
    rt, lf = IH26M_ROOT["right"], IH26M_ROOT["left"]
    err = np.linalg.norm((pred[:, lf] - pred[:, rt]) - (gt[:, lf] - gt[:, rt]), axis=-1)
    return np.where(valid[:, rt] & valid[:, lf], err, np.nan)


def evaluate(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """All metrics averaged over samples (each sample-hand counts once), in millimetres.

    Keys: ``{mpjpe,pa_mpjpe,sa_mpjpe}_{right,left,both}``, ``mrrpe`` and ``samples``.
    """
    pred, gt, valid = _inputs(pred, gt, valid)
    out: dict[str, float] = {}
    for name, fn in (("mpjpe", mpjpe), ("pa_mpjpe", pa_mpjpe), ("sa_mpjpe", sa_mpjpe)):
        per = fn(pred, gt, valid)  # (N, 2)
        for h, s in enumerate(SIDES):
            out[f"{name}_{s}"] = _nanmean(per[:, h])
        out[f"{name}_both"] = _nanmean(per)
    out["mrrpe"] = _nanmean(mrrpe(pred, gt, valid))
    out["samples"] = float(len(gt))
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")
