"""Forearms that continue a hand's open wrist, for real MANO and the stand-in alike.

Photographs of hands show forearms leaving the frame; a hand ending at the wrist is among the
largest tells of synthetic hand data (issue 19; HandSynthesis, CVPR 2025; DART, NeurIPS 2022
ships a wrist-extended hand for the same reason). MANO and the stand-in are open at the wrist
(one boundary loop, :meth:`HandModel.wrist_loop`), and a forearm here is a tube of rings that
starts ON that loop, so hand and forearm join without a gap:

- ring 0 is the posed wrist loop itself (copies of the hand's vertices);
- over the first :data:`BLEND_LENGTH` the rings blend from the loop's shape to an ellipse, and
  the axis turns on a circular arc from the loop's normal to the elbow direction;
- beyond, elliptical rings run straight toward the elbow, widening from the wrist to the upper
  forearm (adult anthropometry scaled by the shaped hand's length), rigidly attached to the wrist
  joint: the forearm follows ``global_orient`` and ``transl``;
- past the elbow (:data:`LENGTH` from the wrist) the tube runs on straight for an upper arm's
  length (:data:`UPPER_ARM_LENGTH`, an arm held straight: cameras frame the hands, and an arm
  ending at the elbow showed its cut end in a quarter of the views), and a flat cap closes it
  (:data:`REACH` from the wrist; the cameras keep that cut end out of the frame:
  :func:`handsynth.views.view_setup`).

The elbow direction is a unit vector in the hand's root frame (the axes ``global_orient``
rotates); :func:`elbow_direction` makes one from wrist flexion and deviation, and directions
outside the wrist's range of motion are refused. Labels follow contract C4: forearm 33 (right)
/ 34 (left), sleeve 35 / 36.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from handsynth.hand_model.model import HandModel
from handsynth.hand_model.uv import UVLayout
from handsynth.keypoints import TIP_VERTEX_IDS
from handsynth.rotations import aa_to_matrix

FOREARM_LABELS: dict[str, int] = {"right": 33, "left": 34}
SLEEVE_LABELS: dict[str, int] = {"right": 35, "left": 36}

#: Normal active range of motion of the wrist (degrees; AAOS): flexion 80, extension 70 (negative
#: flexion), ulnar deviation 30, radial deviation 20 (negative deviation).
FLEXION_RANGE_DEG = (-70.0, 80.0)
DEVIATION_RANGE_DEG = (-20.0, 30.0)
#: Wrist loop to the elbow (m): the visible forearm of an adult (wrist to elbow is ~25-27 cm).
LENGTH = 0.25
#: Elbow to the far end (m): an adult's upper arm (elbow to shoulder ~30 cm), straight on. Measured
#: at the demo's camera ranges (30 procedural poses x 4 views, both arms): the far end lay inside
#: the frame for 25% of the arms ending at the elbow, 11% with the upper arm. A view that would
#: show it is now drawn again; the upper arm keeps those redraws, and their bias on the views, fewer.
UPPER_ARM_LENGTH = 0.30
#: Wrist loop to the far end (m).
REACH = LENGTH + UPPER_ARM_LENGTH
#: Over this distance from the loop the rings blend from the loop's shape to an ellipse and the
#: axis turns to the elbow direction on a circular arc (m): long enough that at the end of the
#: wrist's range the arc's radius stays above the wrist's half-thickness (the inner side of the
#: tube does not fold through itself; tested).
BLEND_LENGTH = 0.04
#: Distances of the rings from the wrist loop (m): dense in the blend, every 2 cm to the elbow,
#: every 5 cm beyond (the cross-section no longer changes there).
RING_STATIONS = tuple(np.round(np.concatenate([np.linspace(0.0, BLEND_LENGTH, 9), np.arange(0.06, LENGTH, 0.02),
                                               [LENGTH], np.arange(LENGTH + 0.05, REACH - 0.025, 0.05), [REACH]]), 6))
#: Cross-section of an adult forearm, for a hand of :data:`REFERENCE_HAND_LENGTH` (m, full
#: widths): (distance from the wrist loop, width across, thickness palm to back). About 6 x 4 cm
#: at the wrist, widening over the muscle bellies to about 8.5 x 6 cm below the elbow.
TAPER = ((BLEND_LENGTH, 0.060, 0.040), (0.20, 0.085, 0.060))
#: Wrist joint to middle fingertip of the hand the taper is given for (m).
REFERENCE_HAND_LENGTH = 0.185


@dataclass(frozen=True)
class Forearm:
    """One side's forearms for a batch of posed hands.

    ``vertices`` (B, Nf, 3): ring by ring (L vertices each), then the far cap's centre; vertex
    ``i < L`` of ring 0 lies exactly on hand vertex ``hand_loop[i]``. ``faces`` (Ff, 3) index
    ``vertices`` and are wound like the hand's (outward). ``vertex_labels`` (Nf,) and
    ``face_labels`` (Ff,) hold the forearm's label, or the sleeve's from the cuff on; ``cuff`` is
    the vertex range [start, stop) from the sleeve cuff's ring to the end, None without a sleeve;
    ``uv`` lays the tube out around (u) and along (v); ``stations`` (K,) are the rings' distances
    from the wrist loop (m; :data:`RING_STATIONS` plus a sleeve's cuff ring), which accessories fit around.
    """

    vertices: torch.Tensor
    faces: np.ndarray
    hand_loop: np.ndarray
    vertex_labels: np.ndarray
    face_labels: np.ndarray
    cuff: tuple[int, int] | None
    uv: UVLayout
    stations: np.ndarray

    def far_end(self) -> torch.Tensor:
        """(B, L + 1, 3): the last ring and the cap's centre, the tube's cut end (cameras keep it
        out of the frame)."""
        return self.vertices[:, -(len(self.hand_loop) + 1):]

    def joined(self, hand_vertices: torch.Tensor, hand_faces: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Hand and forearm as one surface: vertices (B, V + Nf - L, 3) (the hand's first, ring 0
        welded onto the hand's wrist loop) and faces; ``hand_faces`` are the hand's open ones
        (:meth:`HandModel.open_faces`), and the result is closed."""
        n_loop, n_hand = len(self.hand_loop), hand_vertices.shape[1]
        index = np.concatenate([self.hand_loop, n_hand + np.arange(self.vertices.shape[1] - n_loop)])
        return (torch.cat([hand_vertices, self.vertices[:, n_loop:].to(hand_vertices.dtype)], dim=1),
                np.concatenate([np.asarray(hand_faces, dtype=np.int64), index[self.faces]]))


@dataclass(frozen=True)
class WristFrame:
    """Anatomical axes of a hand in its root frame (unit vectors): ``axis`` wrist -> middle
    knuckle, ``volar`` out of the palm, ``ulnar`` toward the little finger's side."""

    axis: np.ndarray
    volar: np.ndarray
    ulnar: np.ndarray

    @classmethod
    def of(cls, model: HandModel, side: str) -> "WristFrame":
        """The frame of ``model``'s ``side``, worked out once per model (by digest) and side: a
        pose's forearms ask for it a few times per elbow drawn, and each asks a forward pass."""
        key = (str(model.identity["digest"]), side)
        if key not in _WRIST_FRAMES:
            _WRIST_FRAMES[key] = cls._of(model, side)
        return _WRIST_FRAMES[key]

    @classmethod
    def _of(cls, model: HandModel, side: str) -> "WristFrame":
        kp = model.rest_keypoints(side).astype(np.float64)
        axis = _unit(kp[4] - kp[0])
        # index x little-finger knuckle points out of a right palm; a mirrored (left) hand flips it
        volar = np.cross(kp[1] - kp[0], kp[7] - kp[0]) * (1.0 if side == "right" else -1.0)
        volar = _unit(volar - (volar @ axis) * axis)
        ulnar = _unit(np.cross(volar, axis) * (1.0 if side == "right" else -1.0))
        if (kp[7] - kp[1]) @ ulnar < 0:
            raise ValueError(f"{model.name} ({side}): the little finger's knuckle is not on the ulnar side")
        return cls(axis, volar, ulnar)


_WRIST_FRAMES: dict[tuple[str, str], WristFrame] = {}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def elbow_direction(model: HandModel, side: str, flexion_deg: float = 0.0, deviation_deg: float = 0.0) -> np.ndarray:
    """Unit vector (3,) from the wrist toward the elbow, in the hand's root frame, for a wrist
    flexed by ``flexion_deg`` (toward the palm; negative: extension) and deviated by
    ``deviation_deg`` (toward the little finger; negative: toward the thumb)."""
    frame = WristFrame.of(model, side)
    phi, psi = np.deg2rad(flexion_deg), np.deg2rad(deviation_deg)
    # the forearm, seen from the hand, lies opposite the hand's axis, tilted away from the flexion
    toward_hand = (np.cos(phi) * np.cos(psi) * frame.axis - np.sin(phi) * np.cos(psi) * frame.volar
                   - np.sin(psi) * frame.ulnar)
    return -toward_hand


def wrist_angles(model: HandModel, side: str, elbow: np.ndarray) -> np.ndarray:
    """(flexion, deviation) in degrees (..., 2) of elbow directions (..., 3): the inverse of
    :func:`elbow_direction`."""
    frame = WristFrame.of(model, side)
    toward_hand = -_unit(np.asarray(elbow, dtype=np.float64))
    deviation = -np.arcsin(np.clip(toward_hand @ frame.ulnar, -1.0, 1.0))
    flexion = np.arctan2(-(toward_hand @ frame.volar), toward_hand @ frame.axis)
    return np.rad2deg(np.stack([flexion, deviation], axis=-1))


def _check_elbow(model: HandModel, side: str, elbow: np.ndarray) -> None:
    angles = wrist_angles(model, side, elbow).reshape(-1, 2)
    for name, values, (lo, hi) in (("flexion", angles[:, 0], FLEXION_RANGE_DEG),
                                   ("deviation", angles[:, 1], DEVIATION_RANGE_DEG)):
        bad = np.flatnonzero((values < lo - 1e-6) | (values > hi + 1e-6))
        if len(bad):
            raise ValueError(f"elbow direction {int(bad[0])} of the {side} hand: wrist {name} {values[bad[0]]:.1f} "
                             f"degrees is outside the wrist's range {lo:g}..{hi:g}")


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _turn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotations (..., 3, 3) taking unit vectors a onto b by the shortest way (a != -b)."""
    cross = torch.cross(a, b, dim=-1)
    sin, cos = cross.norm(dim=-1, keepdim=True), (a * b).sum(dim=-1, keepdim=True)
    return aa_to_matrix(cross / sin.clamp_min(1e-12) * torch.atan2(sin, cos))


@functools.lru_cache(maxsize=256)
def _topology(n_loop: int, stations: tuple[float, ...], cuff_ring: int | None, side: str) -> tuple[np.ndarray, ...]:
    """Faces, vertex labels, face labels and UV layout of a tube of ``len(stations)`` rings of
    ``n_loop`` vertices plus a far cap, its ring 0 running along the hand's wrist boundary.

    Kept per (loop, stations, cuff, side): a pose draws forearms several times (elbows, sleeves)
    and the per-face UV loop took 6 ms a call. The arrays are shared, so they are read-only."""
    rings = len(stations)
    ring = lambda k: k * n_loop + np.arange(n_loop)  # noqa: E731
    faces = []
    for k in range(rings - 1):
        a, b = ring(k), ring(k + 1)
        # the hand's boundary edge loop[i] -> loop[i + 1] is matched by ring 0's loop[i + 1] -> loop[i]
        faces += [np.stack([np.roll(a, -1), a, b], axis=1), np.stack([np.roll(a, -1), b, np.roll(b, -1)], axis=1)]
    centre = rings * n_loop
    last = ring(rings - 1)
    faces.append(np.stack([np.roll(last, -1), last, np.full(n_loop, centre)], axis=1))
    faces = np.concatenate(faces)
    vertex_labels = np.full(centre + 1, FOREARM_LABELS[side], dtype=np.int64)
    if cuff_ring is not None:
        vertex_labels[cuff_ring * n_loop:] = SLEEVE_LABELS[side]
    face_labels = vertex_labels[faces].min(axis=1) if cuff_ring is None else np.where(
        (vertex_labels[faces] == SLEEVE_LABELS[side]).all(axis=1), SLEEVE_LABELS[side], FOREARM_LABELS[side])
    # UVs: u around (a seam column doubled at u = 1), v along; the cap centre at the top edge
    u = np.arange(n_loop + 1) / n_loop
    v = np.asarray(stations) / stations[-1]
    uv = np.concatenate([np.stack(np.meshgrid(u, v), axis=-1).reshape(-1, 2), [[0.5, 1.0]]])
    vertex_ids = np.concatenate([(np.arange(rings)[:, None] * n_loop + np.arange(n_loop + 1) % n_loop).reshape(-1),
                                 [centre]])
    faces_uv = np.empty_like(faces)
    for f, tri in enumerate(faces):
        cols = {int(t) % n_loop for t in tri if t != centre}
        wrap = {0, n_loop - 1} <= cols                                   # a face across the seam
        faces_uv[f] = [rings * (n_loop + 1) if t == centre else
                       (t // n_loop) * (n_loop + 1) + t % n_loop + (n_loop if wrap and t % n_loop == 0 else 0)
                       for t in tri]
    layout = UVLayout(uv.astype(np.float32), faces_uv.astype(np.int32), vertex_ids.astype(np.int32))
    for array in (faces, vertex_labels, face_labels, layout.uv, layout.faces_uv, layout.vertex_ids):
        array.flags.writeable = False
    return faces, vertex_labels, face_labels, layout


def attach_forearm(model: HandModel, side: str, hand_vertices: torch.Tensor, global_orient: torch.Tensor,
                   betas: torch.Tensor, transl: torch.Tensor, elbow: np.ndarray | torch.Tensor | None = None, *,
                   sleeve_start: float | None = None) -> Forearm:
    """Forearms for posed hands of ``side``: ``hand_vertices`` (B, 778, 3) as ``model.forward``
    gives them for ``global_orient`` (B, 3), ``betas`` (B, 10), ``transl`` (B, 3); ``elbow``
    (3,) or (B, 3) unit directions in the hand's root frame (default: straight on, the wrist
    neither flexed nor deviated); ``sleeve_start`` (m from the wrist loop) places a cuff ring
    where a sleeve would begin."""
    loop = model.wrist_loop(side)
    frame = WristFrame.of(model, side)
    bsz = hand_vertices.shape[0]
    elbow = elbow_direction(model, side) if elbow is None else np.asarray(elbow, dtype=np.float64)
    elbow = np.broadcast_to(_unit(elbow), (bsz, 3))
    _check_elbow(model, side, elbow)
    stations = np.array(RING_STATIONS)
    cuff_ring = None
    if sleeve_start is not None:
        if not BLEND_LENGTH < sleeve_start < REACH:
            raise ValueError(f"sleeve_start {sleeve_start} m: a cuff lies between {BLEND_LENGTH} and {REACH} m from the wrist")
        stations = np.unique(np.append(stations, sleeve_start))
        cuff_ring = int(np.flatnonzero(stations == sleeve_start)[0])
    faces, vertex_labels, face_labels, layout = _topology(len(loop), tuple(stations.tolist()), cuff_ring, side)

    f64 = dict(dtype=torch.float64, device=hand_vertices.device)
    rot = aa_to_matrix(torch.as_tensor(global_orient, **f64))                              # (B, 3, 3)
    shaped = model.shaped(side, betas)
    wrist = shaped.rest_joints[:, 0].to(**f64)                                              # (B, 3)
    # anthropometry scales with the hand: wrist joint to middle fingertip of the shaped flat hand
    tip = shaped.v_shaped[:, TIP_VERTEX_IDS["middle"]].to(**f64)
    scale = (tip - wrist).norm(dim=-1)[:, None] / REFERENCE_HAND_LENGTH                    # (B, 1)
    shift = torch.as_tensor(transl, **f64)
    # the posed loop in the root frame (it moves with the hand's own skinning near the wrist)
    loop_world = hand_vertices[:, loop].to(**f64)
    loop_local = torch.einsum("bji,bvj->bvi", rot, loop_world - wrist[:, None] - shift[:, None]) + wrist[:, None]
    centre = loop_local.mean(dim=1)                                                         # (B, 3)
    offsets = loop_local - centre[:, None]
    rolled = torch.roll(offsets, -1, dims=1)
    normal = torch.nn.functional.normalize(torch.cross(offsets, rolled, dim=-1).sum(dim=1), dim=-1)
    axis = torch.as_tensor(frame.axis, **f64)
    start = torch.where((normal @ axis < 0)[:, None], normal, -normal)                      # away from the fingers
    across = torch.as_tensor(frame.ulnar, **f64).expand(bsz, 3)
    across = torch.nn.functional.normalize(across - (across * start).sum(-1, keepdim=True) * start, dim=-1)
    thick = torch.cross(start, across, dim=-1)
    theta = torch.atan2((offsets * thick[:, None]).sum(-1), (offsets * across[:, None]).sum(-1))   # (B, L)

    d = torch.as_tensor(np.array(elbow), **f64)
    s = torch.as_tensor(stations, **f64)
    # the axis: a circular arc turning from the loop's normal to the elbow direction over the
    # blend (constant curvature: the tightest bend a ring spacing allows), then straight on
    side_dir = d - (d * start).sum(-1, keepdim=True) * start
    sin_turn = side_dir.norm(dim=-1, keepdim=True)
    turn_angle = torch.atan2(sin_turn, (d * start).sum(-1, keepdim=True))                  # (B, 1)
    side_dir = side_dir / sin_turn.clamp_min(1e-12)
    curvature = turn_angle / BLEND_LENGTH
    arc = s.clamp(max=BLEND_LENGTH)[None, :]                                                # (1, K)
    phase = curvature * arc
    safe = curvature.clamp_min(1e-9)
    along = torch.where(curvature > 1e-9, torch.sin(phase) / safe, arc)                    # (B, K)
    across_arc = torch.where(curvature > 1e-9, (1 - torch.cos(phase)) / safe, 0.5 * curvature * arc ** 2)
    centres = (centre[:, None] + along[..., None] * start[:, None] + across_arc[..., None] * side_dir[:, None]
               + (s - BLEND_LENGTH).clamp(min=0.0)[None, :, None] * d[:, None])            # (B, K, 3)
    tangent = torch.cos(phase)[..., None] * start[:, None] + torch.sin(phase)[..., None] * side_dir[:, None]
    turn = _turn(start[:, None].expand_as(tangent), tangent)                                # (B, K, 3, 3)
    (s0, w0, t0), (s1, w1, t1) = TAPER
    grow = _smoothstep((s - s0) / (s1 - s0))
    half_w = 0.5 * scale * (w0 + (w1 - w0) * grow)                                          # (B, K)
    half_t = 0.5 * scale * (t0 + (t1 - t0) * grow)
    ellipse = (half_w[:, :, None, None] * torch.cos(theta)[:, None, :, None] * across[:, None, None]
               + half_t[:, :, None, None] * torch.sin(theta)[:, None, :, None] * thick[:, None, None])
    blend = _smoothstep(s / BLEND_LENGTH)[None, :, None, None]
    shape = (1 - blend) * offsets[:, None] + blend * ellipse                                # (B, K, L, 3)
    rings = centres[:, :, None] + torch.einsum("bkij,bklj->bkli", turn, shape)
    local = torch.cat([rings.reshape(bsz, -1, 3), centres[:, -1:]], dim=1)
    world = torch.einsum("bij,bvj->bvi", rot, local - wrist[:, None]) + wrist[:, None] + shift[:, None]
    world = world.to(hand_vertices.dtype)
    world[:, :len(loop)] = hand_vertices[:, loop]                                           # exactly on the hand
    return Forearm(world, faces, loop, vertex_labels, face_labels,
                   None if cuff_ring is None else (cuff_ring * len(loop), len(vertex_labels)), layout, stations)
