"""Anatomical joint limits of the hand: frames, angles, a differentiable loss and a report.

MANO's 15 finger rotations are axis-angle vectors in the model's rest axes, which say nothing
anatomical. Each joint gets a frame built from the rest skeleton (so it works for the real MANO
and the stand-in alike): columns (bend axis, splay axis, twist axis). A joint's rotation seen in
its frame, ``F^T R F``, is read as intrinsic X-Y-Z Euler angles = (bend, splay, twist).

Conventions (right hand; left hands are mirrored into right-hand equivalents first):
- twist axis: the bone from the joint to its child keypoint;
- fingers: positive bend = flexion (the bone turns toward the palm, i.e. the volar normal);
  positive splay = toward the little-finger (ulnar) side;
- thumb: positive bend = flexion across the palm (toward the little finger); positive splay =
  palmar abduction (away from the palm plane, to the volar side).
The anatomical limits below use these signs; the augmentation ranges of the reference
implementation count finger splay the other way (positive = toward the thumb), which
:mod:`handsynth.augment` accounts for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from handsynth.rotations import aa_to_matrix, euler_xyz_to_matrix, matrix_to_aa, matrix_to_euler_xyz

if TYPE_CHECKING:
    from handsynth.hand_model.model import HandModel

#: Names of the 15 finger joints in MANO order (joint 1..15).
JOINT_NAMES = (
    "index_mcp", "index_pip", "index_dip", "middle_mcp", "middle_pip", "middle_dip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "ring_mcp", "ring_pip", "ring_dip",
    "thumb_cmc", "thumb_mcp", "thumb_ip",
)
AXES = ("bend", "splay", "twist")
#: Child keypoint (MANO 21-keypoint order) of each finger joint 1..15: the next joint or the tip.
CHILD_KEYPOINT = (2, 3, 17, 5, 6, 18, 8, 9, 20, 11, 12, 19, 14, 15, 16)
THUMB_JOINTS = (12, 13, 14)  # 0-based rows of the thumb joints

#: Anatomical limits in degrees: joint -> ((bend lo, hi), (splay lo, hi), (twist lo, hi)).
#:
#: Sources. Flexion/extension and MCP abduction: active ranges of motion of Hume et al. 1990
#: ("Functional range of motion of the joints of the hand", J Hand Surg 15A) and the envelope
#: tabulated by Cobos et al. 2008 (IEEE ICRA, "Efficient human hand kinematics for manipulation
#: tasks"); thumb ranges after Kapandji (The Physiology of the Joints, vol. 1). Axial rotation
#: (twist) of the fingers is passive but real: about +-10 degrees at the MCP joints and +-5..7
#: degrees at the interphalangeal joints (Kapandji; Krishnan & Chipchase 1997, J Hand Ther 10,
#: "Passive axial rotation of the metacarpophalangeal joint"), and the collateral ligaments let
#: the PIP and DIP joints deviate sideways by a few degrees. Real hands and MANO fits of real
#: captures carry these few degrees, so no axis is pinned to (0, 0): real input inside these
#: ranges passes the projection unchanged.
_MCP_TWIST = (-10.0, 10.0)
_IP_SPLAY, _IP_TWIST = (-5.0, 5.0), (-7.0, 7.0)
ANATOMICAL_LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    "index_mcp": ((-25, 70), (-25, 15), _MCP_TWIST), "index_pip": ((-4, 110), _IP_SPLAY, _IP_TWIST),
    "index_dip": ((-8, 90), _IP_SPLAY, _IP_TWIST),
    "middle_mcp": ((-25, 80), (-15, 15), _MCP_TWIST), "middle_pip": ((-7, 100), _IP_SPLAY, _IP_TWIST),
    "middle_dip": ((-8, 90), _IP_SPLAY, _IP_TWIST),
    "pinky_mcp": ((-22, 70), (-20, 30), _MCP_TWIST), "pinky_pip": ((-8, 90), _IP_SPLAY, _IP_TWIST),
    "pinky_dip": ((-8, 90), _IP_SPLAY, _IP_TWIST),
    "ring_mcp": ((-25, 70), (-25, 15), _MCP_TWIST), "ring_pip": ((-10, 100), _IP_SPLAY, _IP_TWIST),
    "ring_dip": ((-8, 90), _IP_SPLAY, _IP_TWIST),
    # the thumb's carpometacarpal saddle joint also rotates axially in opposition; +-30 degrees.
    # Its MCP abducts/adducts ~+-10 degrees and rotates ~+-10 (Kapandji); the IP joint as a finger's.
    "thumb_cmc": ((-20, 40), (-30, 30), (-30, 30)), "thumb_mcp": ((-35, 50), (-10, 10), (-10, 10)),
    "thumb_ip": ((-10, 100), _IP_SPLAY, _IP_TWIST),
}
#: (15, 3, 2) in degrees.
JOINT_LIMITS = np.array([ANATOMICAL_LIMITS_DEG[n] for n in JOINT_NAMES], dtype=np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass
class AnatomicalFrames:
    """Per finger joint, an orthonormal frame (15, 3, 3): columns (bend, splay, twist) axes."""

    frames: torch.Tensor

    @classmethod
    def from_rest_keypoints(cls, rest_keypoints: np.ndarray) -> "AnatomicalFrames":
        """Frames from the RIGHT hand's 21 rest keypoints (MANO order, flat hand)."""
        kp = np.asarray(rest_keypoints, dtype=np.float64)
        if kp.shape != (21, 3):
            raise ValueError(f"rest keypoints must be (21, 3), got {kp.shape}")
        wrist, index_mcp, pinky_mcp = kp[0], kp[1], kp[7]
        volar = _unit(np.cross(index_mcp - wrist, pinky_mcp - wrist))
        ulnar = _unit(pinky_mcp - index_mcp)
        frames = np.zeros((15, 3, 3))
        for j in range(15):
            twist = _unit(kp[CHILD_KEYPOINT[j]] - kp[j + 1])
            # flexion turns the bone toward `toward`: the palm for fingers, across it for the thumb
            toward = ulnar if j in THUMB_JOINTS else volar
            toward = _unit(toward - twist * (toward @ twist))
            # right-handed (x, y, z): Rx(+a) turns z toward -y = `toward`; Ry(+b) turns z toward +x
            frames[j] = np.stack([np.cross(twist, toward), -toward, twist], axis=1)
        return cls(torch.as_tensor(frames, dtype=torch.float32))
    def to(self, device: torch.device | str) -> "AnatomicalFrames":
        return AnatomicalFrames(self.frames.to(device))


def _signs(like: torch.Tensor) -> torch.Tensor:
    """(15, 3) signs from Euler angles to anatomical ones.

    Ry(+b) turns a finger toward the thumb side, but the limits count ulnar splay as positive
    (flexion toward the palm, ulnar splay and the bone's twist axis form a left-handed triple
    on a right hand); the thumb's +b is palmar abduction, as counted.
    """
    s = torch.ones(15, 3, dtype=like.dtype, device=like.device)
    s[:12, 1] = -1.0
    return s


def joint_angles(full_pose: torch.Tensor, frames: AnatomicalFrames) -> torch.Tensor:
    """(B, 15, 3) or (B, 45) right-hand full finger pose -> (B, 15, 3) (bend, splay, twist) radians."""
    aa = full_pose.reshape(-1, 15, 3)
    f = frames.frames.to(aa.device, aa.dtype)
    local = f.transpose(-1, -2) @ aa_to_matrix(aa) @ f    # (B, 15, 3, 3) in anatomical axes
    return matrix_to_euler_xyz(local) * _signs(aa)


def compose_pose(angles: torch.Tensor, frames: AnatomicalFrames) -> torch.Tensor:
    """Inverse of :func:`joint_angles`: (B, 15, 3) radians -> (B, 15, 3) axis-angle."""
    f = frames.frames.to(angles.device, angles.dtype)
    return matrix_to_aa(f @ euler_xyz_to_matrix(angles * _signs(angles)) @ f.transpose(-1, -2))


def limit_violation(angles: torch.Tensor, limits_deg: np.ndarray = JOINT_LIMITS) -> torch.Tensor:
    """Degrees outside the limits, (B, 15, 3); zero inside."""
    deg = torch.rad2deg(angles)
    lim = torch.as_tensor(limits_deg, dtype=deg.dtype, device=deg.device)
    return torch.relu(lim[..., 0] - deg) + torch.relu(deg - lim[..., 1])


def project_angles(angles: torch.Tensor) -> torch.Tensor:
    """Anatomical angles (..., 15, 3) radians clamped onto the limits: only what lies outside moves
    (each axis onto its nearer bound); real poses inside the ranges pass unchanged."""
    lim = torch.deg2rad(torch.as_tensor(JOINT_LIMITS, dtype=angles.dtype, device=angles.device))
    return angles.clamp(lim[..., 0], lim[..., 1])


def limit_loss_from_angles(angles: torch.Tensor) -> torch.Tensor:
    """Smooth anatomy loss per pose (B,) from anatomical angles (B, 15, 3): squared radians outside."""
    lim = torch.deg2rad(torch.as_tensor(JOINT_LIMITS, dtype=angles.dtype, device=angles.device))
    over = torch.relu(lim[..., 0] - angles) + torch.relu(angles - lim[..., 1])
    return (over ** 2).sum(dim=(-1, -2))


def joint_limit_loss(full_pose: torch.Tensor, frames: AnatomicalFrames) -> torch.Tensor:
    """Smooth anatomy loss per pose (B,): squared violation in radians, summed over joints/axes."""
    return limit_loss_from_angles(joint_angles(full_pose, frames))


def max_violation_deg(full_pose: torch.Tensor, frames: AnatomicalFrames) -> torch.Tensor:
    """Largest violation over all joints and axes, per pose (B,) in degrees."""
    with torch.no_grad():
        return limit_violation(joint_angles(full_pose, frames)).amax(dim=(-1, -2))


def violation_report(full_pose: torch.Tensor, frames: AnatomicalFrames) -> pd.DataFrame:
    """Per pose, the largest violation of each joint in degrees (columns = joint names)."""
    with torch.no_grad():
        v = limit_violation(joint_angles(full_pose, frames)).amax(dim=-1).cpu().numpy()
    return pd.DataFrame(v, columns=list(JOINT_NAMES))


def mirror_pose(pose: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Axis-angle of the mirror image (x -> -x): (x, y, z) -> (x, -y, -z); its own inverse.

    A left hand's rotations mirrored this way are those of the equivalent right hand, so every
    anatomical computation runs on right hands only.
    """
    shape = pose.shape
    sign = np.array([1.0, -1.0, -1.0]) if isinstance(pose, np.ndarray) else torch.tensor(
        [1.0, -1.0, -1.0], dtype=pose.dtype, device=pose.device)
    return (pose.reshape(*shape[:-1], -1, 3) * sign).reshape(shape)


def hand_pose_from_angles(model: "HandModel", side: str, angles_deg: np.ndarray, frames: AnatomicalFrames) -> np.ndarray:
    """MANO ``hand_pose`` (N, 45) of ``side`` for right-equivalent anatomical angles (N, 15, 3) in
    degrees, composed in float64 through the model's joint frames (a left hand gets the mirror)."""
    full = compose_pose(torch.as_tensor(np.deg2rad(angles_deg), dtype=torch.float64),
                        AnatomicalFrames(frames.frames.double())).reshape(-1, 45)
    if side == "left":
        full = mirror_pose(full)
    return (full - model.hands_mean(side).double().cpu()).numpy().astype(np.float32)
