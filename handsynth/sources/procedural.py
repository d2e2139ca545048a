"""Seeded procedural generator of interacting two-hand poses: the default ``raw_poses`` source.

InterHand2.6M cannot be shipped, so the pipeline's default input is synthesised: each pose
follows one of a few interaction templates (palm to palm, interlocked fingers, clasped hands, one
hand holding a finger of the other, fingertips touching, hand over hand, fist in palm). A template
fixes how the two palms face each other and how far each finger curls; every pose then draws its
own jitter of orientation, curl, splay and hand shape, turns the whole scene by a random rotation,
and slides the left hand along the template's approach direction until the hands (nearly) touch.
Vertex distances alone let a palm slip between the other hand's sparse vertices, so the slide is
followed by a back-off along the approach direction, checked with no-gradient whole-hand depths,
until the hands no longer overlap: the optimizer cannot undo a palm inside a palm, because root
rotations stay frozen (IH2.6M input keeps its real roots and translations, as in the paper).

Orientations are given as world directions of each hand's finger axis and palm (volar) normal;
the rest frame of either hand is read off the model's rest skeleton, so the generator works
unchanged with real MANO or the stand-in. Finger curls are anatomical angles composed through
:mod:`handsynth.joint_limits`, so the raw poses start inside (or near) the joint limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from handsynth import joint_limits
from handsynth.hand_model.model import HandModel
from handsynth.penetration import PenetrationField
from handsynth.pose_table import PoseTable, from_hands
from handsynth.seeds import rng_for, seed_for

SOURCE = "procedural"
#: MANO-order joint indices (1..15) of each finger's three joints, base to tip.
FINGER_JOINTS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12), "thumb": (13, 14, 15)}
#: Share of a finger's curl that each joint takes (base, middle, distal).
CURL_SHARE = {"finger": (1.0, 1.15, 0.75), "thumb": (0.5, 0.8, 0.9)}
#: Back-off along the approach direction: candidate shifts (m) evaluated in one batch, and the
#: depth (m) below which the hands count as apart (the grids' own error is a fraction of a mm).
BACK_OFF_STEPS = np.arange(0.0, 0.0805, 0.001)
BACK_OFF_TOLERANCE = 2e-4
#: Standard deviation (degrees) of the twist and splay every joint gets on top of the template:
#: real hands carry a few degrees of both (see the limits in :mod:`handsynth.joint_limits`).
TWIST_SPLAY_STD_DEG = 2.0


@dataclass(frozen=True)
class Interaction:
    """How two hands meet. Directions in a canonical world frame; curls in degrees (lo, hi)."""

    right_finger: tuple[float, float, float]
    right_palm: tuple[float, float, float]
    left_finger: tuple[float, float, float]
    left_palm: tuple[float, float, float]
    left_offset: tuple[float, float, float]   # left wrist relative to the right wrist (m)
    approach: tuple[float, float, float]      # direction the left hand moves to reach the right
    right_curl: tuple[float, float]
    left_curl: tuple[float, float]
    close: bool = True                        # slide into contact (False: wrap-around, keep placement)
    right_index_curl: tuple[float, float] | None = None


INTERACTIONS: dict[str, Interaction] = {
    "palm_to_palm": Interaction((0, 1, 0), (-1, 0, 0), (0, 1, 0), (1, 0, 0), (-0.05, 0, 0), (1, 0, 0), (0, 15), (0, 15)),
    "fingertips_touching": Interaction(
        (-0.5, 0.866, 0), (-0.866, -0.5, 0), (0.5, 0.866, 0), (0.866, -0.5, 0), (-0.17, 0, 0), (1, 0, 0), (10, 30), (10, 30)),
    "interlocked_fingers": Interaction(
        (0, 0.82, 0.57), (-1, 0, 0), (0, 0.82, -0.57), (1, 0, 0), (-0.035, 0.0, 0.0), (1, 0, 0), (35, 65), (35, 65), close=False),
    "clasped": Interaction((0, 1, 0), (-1, 0, 0), (0, 0, -1), (1, 0, 0), (-0.035, 0.045, 0.03), (1, 0, 0), (45, 75), (45, 75)),
    "finger_hold": Interaction(
        (0, 1, 0), (0, 0, 1), (0, 0, 1), (1, 0, 0), (-0.045, 0.10, -0.05), (1, 0, 0), (70, 90), (55, 80),
        right_index_curl=(0, 12)),
    "hand_over_hand": Interaction((0, 0, -1), (0, -1, 0), (-0.7, 0, -0.7), (0, -1, 0), (0.06, 0.04, 0.0), (0, -1, 0), (5, 30), (5, 30)),
    "fist_in_palm": Interaction((0, 0, -1), (0, -1, 0), (0, 1, 0), (0, 0, 1), (0.0, -0.03, -0.16), (0, 0, 1), (80, 95), (0, 20)),
}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def hand_frame(keypoints: np.ndarray, side: str) -> np.ndarray:
    """Rotation (3,3) whose columns are the finger axis, palm (volar) normal and their cross.

    Read from 21 MANO-order keypoints: finger axis = wrist -> middle MCP; the palm normal comes
    from the index and pinky MCPs, its sign flipped for the left (mirrored) hand.
    """
    wrist, index_mcp, middle_mcp, pinky_mcp = keypoints[0], keypoints[1], keypoints[4], keypoints[7]
    f = _unit(middle_mcp - wrist)
    n = np.cross(index_mcp - wrist, pinky_mcp - wrist) * (1.0 if side == "right" else -1.0)
    n = _unit(n - f * (n @ f))
    return np.stack([f, n, np.cross(f, n)], axis=1)


def _world_frame(finger, palm) -> np.ndarray:
    f = _unit(finger)
    n = _unit(np.asarray(palm, float) - f * (f @ np.asarray(palm, float)))
    return np.stack([f, n, np.cross(f, n)], axis=1)


def _finger_angles(rng: np.random.Generator, n: int, curl: tuple[float, float],
                   index_curl: tuple[float, float] | None = None) -> np.ndarray:
    """Anatomical angles (n, 15, 3) [bend, splay, twist] in radians for curl ranges in degrees."""
    angles = np.zeros((n, 15, 3))
    base = rng.uniform(*curl, size=n)
    for finger, joints in FINGER_JOINTS.items():
        c = base + rng.normal(0.0, 8.0, size=n)
        if finger == "index" and index_curl is not None:
            c = rng.uniform(*index_curl, size=n)
        share = CURL_SHARE["thumb" if finger == "thumb" else "finger"]
        for k, j in enumerate(joints):
            lo, hi = joint_limits.JOINT_LIMITS[j - 1, 0]
            angles[:, j - 1, 0] = np.deg2rad(np.clip(c * share[k], lo, hi))
        angles[:, joints[0] - 1, 1] = np.deg2rad(rng.normal(0.0, 4.0, size=n))
    angles[:, :, 1:] += np.deg2rad(rng.normal(0.0, TWIST_SPLAY_STD_DEG, size=(n, 15, 2)))
    lim = np.deg2rad(joint_limits.JOINT_LIMITS[:, 1:])
    angles[:, :, 1:] = np.clip(angles[:, :, 1:], lim[..., 0], lim[..., 1])
    return angles


def _pose_from_angles(model: HandModel, side: str, angles: np.ndarray,
                      frames: joint_limits.AnatomicalFrames) -> np.ndarray:
    """Anatomical angles -> MANO ``hand_pose`` (n, 45) of the given side (relative to hands_mean)."""
    full = joint_limits.compose_pose(torch.as_tensor(angles, dtype=torch.float32), frames).reshape(-1, 45)
    if side == "left":
        full = joint_limits.mirror_pose(full)
    return (full - model.hands_mean(side).cpu()).numpy()


def generate_interacting_poses(model: HandModel, n: int, seed: int = 0,
                               interactions: tuple[str, ...] | None = None,
                               contact_gap_mm: tuple[float, float] = (0.5, 4.0)) -> PoseTable:
    """``n`` two-hand poses in or near contact; row i depends only on (seed, i)."""
    if contact_gap_mm[0] <= 0 or contact_gap_mm[1] < contact_gap_mm[0]:
        raise ValueError(f"contact_gap_mm must be a range of positive millimetres, got {contact_gap_mm} "
                         "(distances between two vertex sets never reach 0)")
    names = tuple(interactions or INTERACTIONS)
    unknown = [x for x in names if x not in INTERACTIONS]
    if unknown:
        raise ValueError(f"unknown interaction(s) {unknown}; known: {sorted(INTERACTIONS)}")
    frames = joint_limits.AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    rest_frame = {s: hand_frame(model.rest_keypoints(s), s) for s in ("right", "left")}
    field = PenetrationField(model) if any(INTERACTIONS[x].close for x in names) else None
    rows, hands = [], {s: {k: [] for k in ("global_orient", "hand_pose", "betas", "transl")} for s in ("right", "left")}
    for i in range(n):
        row_seed = seed_for(SOURCE, seed, i)
        rng = rng_for(SOURCE, seed, i)
        name = names[int(rng.integers(len(names)))]
        spec = INTERACTIONS[name]
        betas = np.clip(rng.normal(0.0, 0.8, 10), -2.5, 2.5)
        scene = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        jitter = {s: Rotation.from_rotvec(rng.normal(0, np.deg2rad(8.0), 3)).as_matrix() for s in ("right", "left")}
        placed = {}
        for side in ("right", "left"):
            finger = spec.right_finger if side == "right" else spec.left_finger
            palm = spec.right_palm if side == "right" else spec.left_palm
            world = scene @ jitter[side] @ _world_frame(finger, palm)
            curl = spec.right_curl if side == "right" else spec.left_curl
            index_curl = spec.right_index_curl if side == "right" else None
            hand_pose = _pose_from_angles(model, side, _finger_angles(rng, 1, curl, index_curl), frames)[0]
            placed[side] = (Rotation.from_matrix(world @ rest_frame[side].T).as_rotvec(), hand_pose)
        offset = scene @ (np.asarray(spec.left_offset) + rng.normal(0, 0.006, 3))
        approach = scene @ _unit(spec.approach)
        centre = rng.normal(0.0, 0.05, 3)
        wrist = {"right": centre, "left": centre + offset}
        if spec.close:
            gap = rng.uniform(*contact_gap_mm) / 1000.0
            wrist["left"] = _slide_into_contact(model, placed, betas, wrist, approach, gap)
            wrist["left"] = _back_off(model, field, placed, betas, wrist, approach)
        for side in ("right", "left"):
            orient, hand_pose = placed[side]
            root = _root_joint(model, side, betas)
            hands[side]["global_orient"].append(orient)
            hands[side]["hand_pose"].append(hand_pose)
            hands[side]["betas"].append(betas)
            hands[side]["transl"].append(wrist[side] - root)
        rows.append({
            "pose_id": f"proc/{seed}/{i:07d}",
            "source": SOURCE,
            "source_ref": f"procedural:{name};seed={seed};index={i}",
            "seed": row_seed,
            "interaction": name,
        })
    meta = pd.DataFrame(rows).astype({"pose_id": "string", "source": "string", "source_ref": "string",
                                      "interaction": "string", "seed": "int64"})
    return from_hands(meta, {s: {k: np.asarray(v) for k, v in hands[s].items()} for s in hands}).validate(
        f"procedural poses (seed={seed})")


def _root_joint(model: HandModel, side: str, betas: np.ndarray) -> np.ndarray:
    z = np.zeros((1, 3))
    out = model.forward_numpy(side, {"global_orient": z, "hand_pose": np.zeros((1, 45)), "betas": betas[None], "transl": z})
    return out.joints[0, 0].cpu().numpy().astype(np.float64)


def _hand_vertices(model: HandModel, side: str, placed, betas, wrist) -> np.ndarray:
    orient, hand_pose = placed[side]
    transl = wrist - _root_joint(model, side, betas)
    out = model.forward_numpy(side, {"global_orient": orient[None], "hand_pose": hand_pose[None],
                                     "betas": betas[None], "transl": transl[None]})
    return out.vertices[0].cpu().numpy().astype(np.float64)


def _slide_into_contact(model: HandModel, placed, betas, wrist, approach, gap: float) -> np.ndarray:
    """Left wrist position where, coming from far along ``approach``, the hands first get within ``gap``."""
    right = cKDTree(_hand_vertices(model, "right", placed, betas, wrist["right"]))
    left_rel = _hand_vertices(model, "left", placed, betas, np.zeros(3))

    def distance(s: float) -> float:
        return float(right.query(left_rel + wrist["left"] + s * approach)[0].min())

    s, step = -0.15, 0.005
    while distance(s + step) > gap:
        s += step
        if s > 0.15:  # never came within the gap (a wrapped placement): keep the template's
            return wrist["left"]
    lo, hi = s, s + step  # distance(lo) > gap >= distance(hi)
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if distance(mid) > gap else (lo, mid)
    return wrist["left"] + lo * approach


def _back_off(model: HandModel, field: PenetrationField, placed, betas, wrist, approach) -> np.ndarray:
    """Left wrist moved back against ``approach`` by the smallest shift (1 mm steps) after which
    neither hand is inside the other (no-gradient grid depths, all shifts in one batch)."""
    k = len(BACK_OFF_STEPS)
    dev = model.device
    hands = {}
    for side in ("right", "left"):
        orient, hand_pose = placed[side]
        transl = wrist[side] - _root_joint(model, side, betas)
        shifts = -BACK_OFF_STEPS[:, None] * approach[None] if side == "left" else np.zeros((k, 3))
        hands[side] = {key: torch.as_tensor(np.asarray(v, dtype=np.float32), device=dev) for key, v in {
            "global_orient": np.repeat(orient[None], k, 0), "hand_pose": np.repeat(hand_pose[None], k, 0),
            "betas": np.repeat(betas[None], k, 0), "transl": transl[None] + shifts}.items()}
    with torch.no_grad():
        verts = {s: model.forward(s, **hands[s]).vertices for s in hands}
        depths = field.depths(hands, verts)
        deepest = torch.maximum(depths["right"].amax(1), depths["left"].amax(1)).cpu().numpy()
    free = np.flatnonzero(deepest <= BACK_OFF_TOLERANCE)
    step = BACK_OFF_STEPS[free[0]] if len(free) else BACK_OFF_STEPS[-1]
    return wrist["left"] - step * approach
