"""Finger synergies: the space augmentation moves in, and the coupling statistic of a pose set.

Real fingers do not move joint by joint: the distal joint follows the middle one (DIP ~ 2/3 PIP)
and neighbouring fingers curl together. Offsetting every joint independently (RenderIH's
augmentation) breaks both and gives claw-like fingers. Here an augmentation offset is drawn from
a Gaussian with the covariance of natural hand poses, in the anatomical angles of
:mod:`handsynth.joint_limits` (right-equivalent hands, degrees, 45 = 15 joints x (bend, splay,
twist)): directions the data never moves along (DIP - 2/3 PIP, for one) get no offset at all.

The natural poses are, for real MANO, MANO's own PCA training poses (``hands_mean +
hands_coeffs @ hands_components`` of the model file); for the stand-in (and any model file without
``hands_coeffs``), the gesture library of :mod:`handsynth.gestures` with its natural variations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from handsynth import gestures, joint_limits
from handsynth.gestures import DIP_PER_PIP, FINGER_ROW
from handsynth.seeds import rng_for

if TYPE_CHECKING:
    from handsynth.hand_model.model import HandModel

#: A finger counts as uncoupled when its DIP bend is this far (degrees) from 2/3 of its PIP bend.
COUPLING_THRESHOLD_DEG = 20.0
#: Natural variations per gesture in the stand-in's pose set (32 gestures x 40 = 1280 hands).
SAMPLES_PER_GESTURE = 40
#: Fewer captured poses than this in a model file's ``hands_coeffs``: use the gesture library.
MIN_CAPTURED_POSES = 100
#: Rows of the 45 angles that belong to one finger (MCP, PIP, DIP) or the thumb (CMC, MCP, IP).
FINGER_GROUPS = tuple(range(r, r + 3) for r in (*FINGER_ROW.values(), gestures.THUMB_ROW))


@dataclass(frozen=True)
class SynergyBasis:
    """Principal directions (K, 15, 3) of natural poses with their standard deviations (K,), degrees."""

    components: np.ndarray
    std_deg: np.ndarray
    source: str

    @classmethod
    def from_angles(cls, angles_deg: np.ndarray, source: str) -> "SynergyBasis":
        """PCA of natural poses (N, 15, 3) in degrees; directions without variance are dropped."""
        x = np.asarray(angles_deg, dtype=np.float64).reshape(len(angles_deg), 45)
        _, s, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
        std = s / np.sqrt(max(len(x) - 1, 1))
        keep = std > 1e-6 * std.max()
        return cls(vt[keep].reshape(-1, 15, 3), std[keep], source)

    def offsets(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 15, 3) degrees drawn from N(0, covariance of the natural poses)."""
        z = rng.standard_normal((n, len(self.std_deg))) * self.std_deg
        return np.einsum("nk,kjc->njc", z, self.components)


def gesture_basis() -> SynergyBasis:
    """The stand-in's synergies: PCA of the gesture library's natural variations (fixed seed)."""
    samples = gestures.gesture_samples(SAMPLES_PER_GESTURE, rng_for("gesture samples", SAMPLES_PER_GESTURE))
    return SynergyBasis.from_angles(samples, f"gesture library ({len(samples)} hands)")


def basis_for(model: "HandModel") -> SynergyBasis:
    """MANO's own pose space where the model file has captured poses, else the gesture library."""
    if model.is_standin:
        return gesture_basis()
    from handsynth.hand_model import mano_files

    folder = Path(model.identity["source"])
    path = next(p for p in (folder / "MANO_RIGHT.pkl", folder / "MANO_RIGHT.npz") if p.is_file())
    arrays = mano_files.read_mano_file(path)
    coeffs = np.asarray(arrays.get("hands_coeffs", np.zeros((0, 45))), dtype=np.float64).reshape(-1, 45)
    if len(coeffs) < MIN_CAPTURED_POSES:
        return gesture_basis()
    full = arrays["hands_mean"][None] + coeffs @ np.asarray(arrays["hands_components"], np.float64)
    frames = joint_limits.AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    angles = joint_limits.joint_angles(torch.as_tensor(full), joint_limits.AnatomicalFrames(frames.frames.double()))
    return SynergyBasis.from_angles(np.rad2deg(angles.numpy()), f"MANO hands_coeffs ({len(coeffs)} hands)")


def coupling_error_deg(angles_deg: np.ndarray) -> np.ndarray:
    """|DIP - 2/3 PIP| bend (N, 4) in degrees of the four fingers of each hand (N, 15, 3)."""
    rows = np.array(list(FINGER_ROW.values()))
    return np.abs(angles_deg[:, rows + 2, 0] - DIP_PER_PIP * angles_deg[:, rows + 1, 0])


def coupling_loss(angles: torch.Tensor, tolerance_deg: float) -> torch.Tensor:
    """Per hand (B,): squared radians by which |DIP - 2/3 PIP| exceeds ``tolerance_deg`` (a hinge:
    fingers within the tolerance feel nothing), summed over the four fingers of (B, 15, 3) radians."""
    rows = torch.as_tensor(list(FINGER_ROW.values()), device=angles.device)
    gap = (angles[:, rows + 2, 0] - DIP_PER_PIP * angles[:, rows + 1, 0]).abs()
    return torch.relu(gap - np.deg2rad(tolerance_deg)).pow(2).sum(dim=-1)


def coupling_stats(angles_deg: np.ndarray) -> dict[str, float]:
    """Share of fingers with |DIP - 2/3 PIP| > :data:`COUPLING_THRESHOLD_DEG` and the median gap."""
    err = coupling_error_deg(angles_deg)
    if err.size == 0:
        return {"share_over_20deg": 0.0, "median_deg": 0.0, "fingers": 0}
    return {"share_over_20deg": round(float((err > COUPLING_THRESHOLD_DEG).mean()), 4),
            "median_deg": round(float(np.median(err)), 2), "fingers": int(err.size)}
