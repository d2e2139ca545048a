"""A documented library of everyday hand gestures and grasps, as anatomical joint angles.

The stand-in has no captured poses, so what "natural fingers" means is written down here: 32
gestures and grasps of daily life (signs, pinches, power and precision grasps after Feix et al.
2016, "The GRASP taxonomy of human grasp types", IEEE THMS), each as per-finger curls in the
anatomical frames of :mod:`handsynth.joint_limits`. Three rules of real fingers hold in every one:

- **DIP ~ 2/3 PIP**: the distal joint is driven by the same tendons as the middle one (Rijpkema
  & Girard 1991; used by most hand models), so its bend is two thirds of the PIP bend;
- **convergence**: curled fingers point toward the scaphoid tubercle (Kapandji), i.e. index and
  middle deviate ulnarly, ring and little radially, a few degrees per 90 degrees of flexion, and
  the ulnar fingers supinate (twist) a little as they flex, the index pronates;
- **thumb opposition**: palmar abduction of the thumb's CMC joint comes with axial pronation.

The library is the naturalness discriminator's "real" set and the source of the stand-in's synergy
basis (:mod:`handsynth.synergies`); :func:`gesture_samples` adds small natural variations that keep
the rules. Angles are model independent; :func:`handsynth.joint_limits.hand_pose_from_angles`
builds a model's MANO ``hand_pose`` from them through its joint frames.
"""

from __future__ import annotations

import numpy as np

from handsynth.joint_limits import JOINT_LIMITS, JOINT_NAMES

FINGERS = ("index", "middle", "ring", "pinky")
#: Row (0-based, MANO order) of each finger's MCP joint; PIP and DIP follow.
FINGER_ROW = {f: JOINT_NAMES.index(f"{f}_mcp") for f in FINGERS}
THUMB_ROW = JOINT_NAMES.index("thumb_cmc")
#: DIP bend per degree of PIP bend (tendon coupling).
DIP_PER_PIP = 2.0 / 3.0
#: Convergence per 90 degrees of finger flexion (MCP + PIP, halved): splay of the PIP/DIP joints and
#: twist of the MCP, degrees (positive splay = ulnar, as in joint_limits).
CONVERGENCE_SPLAY = {"index": 3.0, "middle": 1.5, "ring": -2.0, "pinky": -3.5}
CONVERGENCE_TWIST = {"index": -3.0, "middle": 0.0, "ring": 3.0, "pinky": 5.0}
#: Axial pronation of the thumb CMC per degree of palmar abduction.
THUMB_PRONATION = 0.4

# per finger: (MCP bend, PIP bend, MCP splay); thumb: (CMC bend, CMC palmar abduction, MCP bend, IP bend)
_OPEN, _CURL = (0, 0, 0), (68, 88, 0)
#: name -> (index, middle, ring, pinky, thumb).
GESTURES: dict[str, tuple[tuple[float, ...], ...]] = {
    "flat_hand": (_OPEN, _OPEN, _OPEN, _OPEN, (0, 0, 0, 0)),
    "relaxed": ((15, 20, -2), (20, 25, 0), (25, 30, 2), (30, 35, 4), (5, 15, 10, 10)),
    "spread": ((0, 0, -15), (0, 0, -3), (0, 0, 10), (0, 0, 22), (-10, 10, 0, 0)),
    "wave": ((-10, 0, -10), (-10, 0, -2), (-10, 0, 8), (-10, 0, 15), (-10, 5, 0, 0)),
    "salute": ((5, 5, 3), (5, 5, 0), (5, 5, -3), (5, 5, -5), (15, 5, 10, 5)),
    "fist": (_CURL, (75, 88, 0), _CURL, _CURL, (30, 10, 40, 40)),
    "loose_fist": ((55, 70, 0), (60, 75, 0), (65, 75, 0), (70, 75, 0), (20, 15, 25, 25)),
    "thumb_tuck": (_CURL, _CURL, _CURL, _CURL, (35, 0, 45, 60)),
    "point": ((5, 5, 0), _CURL, _CURL, _CURL, (25, 10, 30, 30)),
    "victory": ((5, 5, -10), (5, 5, 5), _CURL, _CURL, (30, 15, 35, 35)),
    "three": (_OPEN, _OPEN, _OPEN, _CURL, (35, 20, 40, 45)),
    "four": ((0, 0, -5), _OPEN, (0, 0, 5), (0, 0, 10), (35, 25, 40, 50)),
    "thumbs_up": (_CURL, _CURL, _CURL, _CURL, (-10, 5, 0, 0)),
    "ok_sign": ((45, 55, 0), (15, 15, 0), (10, 10, 5), (10, 5, 10), (25, 28, 20, 25)),
    "call_me": (_CURL, _CURL, _CURL, ((0, 0, 15)), (-10, 10, 0, 0)),
    "rock": ((5, 5, -5), _CURL, _CURL, (0, 0, 10), (20, 15, 30, 30)),
    "pistol": ((0, 0, 0), (0, 0, 0), _CURL, _CURL, (-10, 30, 0, 0)),
    "tip_pinch": ((40, 60, 0), (25, 30, 0), (25, 30, 0), (30, 35, 0), (25, 30, 20, 30)),
    "pad_pinch": ((35, 35, 0), (20, 20, 0), (20, 25, 0), (25, 30, 0), (20, 26, 15, 15)),
    "lateral_pinch": ((60, 70, 0), (65, 75, 0), (70, 75, 0), (70, 75, 0), (10, 10, 20, 15)),
    "tripod": ((35, 45, 0), (35, 45, 0), (45, 55, 0), (50, 60, 0), (25, 30, 20, 25)),
    "pen_grip": ((30, 40, 0), (35, 50, 0), (60, 70, 0), (65, 75, 0), (20, 25, 20, 20)),
    "large_cylinder": ((40, 35, 0), (45, 40, 0), (45, 45, 0), (50, 45, 0), (20, 26, 15, 10)),
    "small_cylinder": ((60, 70, 0), (65, 75, 0), (65, 75, 0), (70, 75, 0), (25, 24, 30, 25)),
    "sphere_grasp": ((35, 40, -10), (35, 40, -2), (40, 45, 6), (45, 45, 12), (20, 28, 15, 20)),
    "disk_grasp": ((30, 30, -12), (30, 30, -3), (30, 35, 8), (35, 35, 15), (15, 30, 10, 10)),
    "hook": ((5, 80, 0), (5, 85, 0), (5, 85, 0), (5, 80, 0), (0, 5, 5, 5)),
    "tabletop": ((68, 0, 0), (75, 0, 0), (68, 0, 0), (68, 0, 0), (10, 20, 10, 5)),
    "cupped": ((20, 25, 2), (20, 25, 0), (20, 25, -2), (25, 30, -4), (15, 20, 10, 10)),
    "typing": ((25, 35, 0), (25, 40, 0), (25, 40, 0), (25, 40, 0), (5, 15, 10, 10)),
    "card_hold": ((25, 10, 0), (25, 10, 0), (25, 15, 0), (30, 15, 0), (10, 20, 15, 5)),
    "palm_press": ((-15, -2, 0), (-15, -3, 0), (-15, -3, 0), (-15, -3, 0), (-5, 5, -10, -5)),
}


def gesture_angles_deg(spec: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """(15, 3) anatomical angles in degrees of one gesture, with the coupling rules applied."""
    a = np.zeros((15, 3))
    for finger, (mcp, pip, splay) in zip(FINGERS, spec[:4]):
        r = FINGER_ROW[finger]
        flex = (mcp + pip) / 2.0 / 90.0
        a[r] = (mcp, splay, CONVERGENCE_TWIST[finger] * flex)
        a[r + 1] = (pip, CONVERGENCE_SPLAY[finger] * flex, 0.0)
        a[r + 2] = (DIP_PER_PIP * pip, CONVERGENCE_SPLAY[finger] * flex, 0.0)
    cmc, abduction, mcp, ip = spec[4]
    a[THUMB_ROW] = (cmc, abduction, THUMB_PRONATION * abduction)
    a[THUMB_ROW + 1] = (mcp, 0.0, 0.0)
    a[THUMB_ROW + 2] = (ip, 0.0, 0.0)
    return a


def library_deg() -> np.ndarray:
    """(G, 15, 3) degrees: every gesture of :data:`GESTURES`, in its order."""
    return np.stack([gesture_angles_deg(spec) for spec in GESTURES.values()])


def gesture_samples(per_gesture: int, rng: np.random.Generator) -> np.ndarray:
    """(G * per_gesture, 15, 3) degrees: natural variations of each gesture, within the limits.

    Each sample perturbs the gesture's own parameters (per-finger MCP and PIP bends by a few
    degrees, MCP splays, thumb) and re-applies the coupling rules, plus a small independent jitter
    of every twist and splay (real hands are not exactly on any rule).
    """
    out = []
    for spec in GESTURES.values():
        for _ in range(per_gesture):
            fingers = [(m + rng.normal(0, 6), p + rng.normal(0, 8), s + rng.normal(0, 3)) for m, p, s in spec[:4]]
            thumb = tuple(v + rng.normal(0, 5) for v in spec[4])
            a = gesture_angles_deg((*fingers, thumb))
            a[:, 1:] += rng.normal(0.0, 1.0, size=(15, 2))
            out.append(np.clip(a, JOINT_LIMITS[..., 0], JOINT_LIMITS[..., 1]))
    return np.stack(out)
