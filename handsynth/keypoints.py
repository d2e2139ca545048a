"""The three 21-keypoint orders met in two-hand data, and conversions between them.

Each consumer numbers a hand's keypoints differently, and a silent mix-up yields plausible but
wrong metrics, so every order is defined here once by joint *names* and the index maps are
derived from those names rather than typed out by hand:

- ``"mano"``: the project's order (see docs/ARCHITECTURE.md): the 16 MANO joints
  (wrist; index, middle, pinky, ring MCP/PIP/DIP; thumb CMC/MCP/IP) then the 5 fingertips
  thumb, index, middle, ring, pinky.
- ``"ih26m"``: InterHand2.6M's per-hand order: each finger tip to base (thumb, index, middle,
  ring, pinky), wrist last. The 42-joint IH2.6M array is the right hand (0-20, root 20) followed
  by the left hand (21-41, root 41).
- ``"wrist_first"``: IntagHand-style order: wrist, then thumb, index, middle, ring, pinky, each
  from base to tip.

Base-to-tip names per finger are ``<finger>1..4``: for the thumb 1 = CMC, 2 = MCP, 3 = IP,
4 = tip; for the other fingers 1 = MCP, 2 = PIP, 3 = DIP, 4 = tip (IH2.6M's ``thumb1`` is the
joint MANO calls the thumb CMC).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Order = Literal["mano", "ih26m", "wrist_first"]

FINGERS: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")

#: The fingertip keypoints are these vertices of MANO's 778-vertex mesh, per finger: the
#: InterHand2.6M family's convention, which loaders running their own MANO layer on exported
#: parameters use (IntagHand ``models/manolayer.py`` ``ManoLayer.forward``; InterHand2.6M's
#: ``J_regressor_mano_ih26m.npy`` picks the same thumb, index, ring and pinky vertices and the
#: middle one's neighbour 445). smplx's ``VERTEX_IDS['mano']`` (744, 320, 443, 554, 671) differ by
#: a vertex or three, which on real MANO moves a tip by a few millimetres. The generated stand-in
#: places its fingertips at exactly these indices.
TIP_VERTEX_IDS: dict[str, int] = {"thumb": 745, "index": 317, "middle": 444, "ring": 556, "pinky": 673}


def _base_to_tip(finger: str) -> list[str]:
    return [f"{finger}{k}" for k in range(1, 5)]


#: Joint names of each order, position = index in that order.
KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "mano": tuple(
        ["wrist"]
        + [f"{f}{k}" for f in ("index", "middle", "pinky", "ring", "thumb") for k in (1, 2, 3)]
        + [f"{f}4" for f in FINGERS]
    ),
    "ih26m": tuple([n for f in FINGERS for n in reversed(_base_to_tip(f))] + ["wrist"]),
    "wrist_first": tuple(["wrist"] + [n for f in FINGERS for n in _base_to_tip(f)]),
}

NUM_KEYPOINTS = 21

#: Index of each hand's root (wrist) in the 42-joint IH2.6M array.
IH26M_ROOT: dict[str, int] = {"right": 20, "left": 41}

#: Slice of each hand in the 42-joint IH2.6M array (right first, as IH2.6M stores it).
IH26M_HAND: dict[str, slice] = {"right": slice(0, 21), "left": slice(21, 42)}


def order_index(src: Order, dst: Order) -> np.ndarray:
    """Gather indices ``idx`` (21,) such that ``x_dst = x_src[..., idx, :]``."""
    for order in (src, dst):
        if order not in KEYPOINT_NAMES:
            raise ValueError(f"unknown keypoint order {order!r}; known: {sorted(KEYPOINT_NAMES)}")
    position = {name: i for i, name in enumerate(KEYPOINT_NAMES[src])}
    return np.array([position[name] for name in KEYPOINT_NAMES[dst]], dtype=np.int64)


def keypoint_index(order: Order, name: str) -> int:
    """Position of a named keypoint (e.g. ``"middle1"`` = middle MCP) in an order."""
    return KEYPOINT_NAMES[order].index(name)


def convert_keypoints(x: np.ndarray, src: Order, dst: Order, axis: int = -2) -> np.ndarray:
    """Reorder keypoints along ``axis`` (size 21) from order ``src`` to ``dst``.

    ``axis=-2`` suits coordinates ``(..., 21, D)``; use ``axis=-1`` for per-keypoint scalars
    such as visibility ``(..., 21)``.
    """
    x = np.asarray(x)
    if x.shape[axis] != NUM_KEYPOINTS:
        raise ValueError(f"expected {NUM_KEYPOINTS} keypoints on axis {axis}, got shape {x.shape}")
    return np.take(x, order_index(src, dst), axis=axis)


def to_ih26m_42(right: np.ndarray, left: np.ndarray, src: Order = "mano", axis: int = -2) -> np.ndarray:
    """Stack two hands ``(..., 21, D)`` in order ``src`` into IH2.6M's ``(..., 42, D)`` array."""
    return np.concatenate(
        [convert_keypoints(right, src, "ih26m", axis), convert_keypoints(left, src, "ih26m", axis)],
        axis=axis,
    )


def from_ih26m_42(joints: np.ndarray, dst: Order = "mano", axis: int = -2) -> tuple[np.ndarray, np.ndarray]:
    """Split IH2.6M's ``(..., 42, D)`` array into ``(right, left)``, each ``(..., 21, D)`` in ``dst``."""
    joints = np.asarray(joints)
    if joints.shape[axis] != 2 * NUM_KEYPOINTS:
        raise ValueError(f"expected {2 * NUM_KEYPOINTS} joints on axis {axis}, got shape {joints.shape}")
    right, left = np.split(joints, 2, axis=axis)
    return convert_keypoints(right, "ih26m", dst, axis), convert_keypoints(left, "ih26m", dst, axis)
