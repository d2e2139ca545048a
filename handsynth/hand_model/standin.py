"""A generated STAND-IN for the MANO hand model, in MANO's exact file schema.

MANO's model files cannot be redistributed, yet the pipeline has to run everywhere. This module
builds, deterministically and from anthropometric numbers alone, a right hand in MANO's schema:
``v_template`` (778, 3), ``f`` (1552, 3), ``J_regressor`` (16, 778), ``weights`` (778, 16),
``posedirs`` (778, 3, 135), ``shapedirs`` (778, 3, 10), ``kintree_table`` (2, 16),
``hands_components`` (45, 45), ``hands_mean`` (45,), so that ``smplx.MANO`` loads it through the
same code path as the real files. It is NOT MANO: no scan data went into it.

Construction (all in metres, right hand; fingers along +x, palm facing -y, thumb on the -z side):
1. a skeleton with adult proportions (hand length ~18.5 cm; see ``FINGER_SEGMENTS_MM``);
2. an implicit surface: tapered capsules per phalanx, smoothly blended into a palm, a thenar
   pad and a short wrist stub; marching cubes, then quadric decimation and longest-edge splits
   to exactly 778 vertices (a closed genus-0 surface, so F = 2V - 4 = 1552);
3. fingertip vertices moved to MANO's indices (thumb 744, index 320, middle 443, ring 554,
   pinky 671) so the 21 keypoints come out exactly as with MANO;
4. skinning weights: a soft-min over distances to the bones of the nearest bone's chain, so
   skin blends smoothly across each joint and never leaks to a neighbouring finger;
5. a joint regressor reproducing the skeleton from the surrounding vertices (non-negative
   weights summing to one), shape blend shapes from skeletal edits (size, finger lengths, palm
   width, thickness, girth, ...), and a pose PCA basis from a finger-synergy model.

Pose correctives (``posedirs``) are zero: the stand-in has no scan data to learn them from.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

#: Version of the generator; part of the model identity recorded in every manifest.
STANDIN_VERSION = "standin-hand-2"

NUM_VERTS = 778
NUM_JOINTS = 16
#: MANO's kinematic tree: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
#: smplx VERTEX_IDS['mano']: fingertip vertex per finger.
TIP_VERTEX_IDS = {"thumb": 744, "index": 320, "middle": 443, "ring": 554, "pinky": 671}
#: First joint of each finger chain (MANO order) and its tip name.
FINGER_CHAINS = {"index": 1, "middle": 4, "pinky": 7, "ring": 10, "thumb": 13}

#: Segment lengths (mm): (proximal, middle, distal) phalanx for fingers; (metacarpal, proximal,
#: distal) for the thumb. Chosen so that crease-to-tip lengths match adult means
#: (thumb 49.5, index 63.9, middle 70.7, ring 65.5, little 53.3 mm).
FINGER_SEGMENTS_MM = {
    "index": (41.0, 23.5, 20.0),
    "middle": (44.0, 27.5, 21.0),
    "ring": (41.0, 25.5, 20.0),
    "pinky": (33.0, 19.5, 17.5),
    "thumb": (40.0, 28.0, 22.5),
}
#: Radii (mm) at the base joint, the two inner joints and the tip of each finger.
FINGER_RADII_MM = {
    "index": (8.6, 8.2, 7.5, 6.6),
    "middle": (8.9, 8.5, 7.8, 6.9),
    "ring": (8.4, 8.0, 7.3, 6.5),
    "pinky": (7.6, 7.1, 6.5, 5.8),
    "thumb": (11.0, 9.8, 9.0, 7.6),
}
#: MCP joint centres (mm) of the four fingers, wrist at the origin.
MCP_MM = {
    "index": (90.0, 0.0, -27.0),
    "middle": (93.0, 0.0, -6.0),
    "ring": (88.0, 0.0, 14.0),
    "pinky": (80.0, -1.5, 32.0),
}
#: Splay of the rest pose (deg about the palm normal, + toward the pinky side).
REST_SPLAY_DEG = {"index": -7.0, "middle": 1.5, "ring": 6.5, "pinky": 13.0}
THUMB_CMC_MM = (24.0, -9.0, -20.0)
THUMB_DIRECTION = (0.64, -0.28, -0.72)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rest_skeleton() -> tuple[np.ndarray, np.ndarray]:
    """Joints (16, 3) and fingertips (5, 3; thumb, index, middle, ring, pinky) in metres."""
    joints = np.zeros((NUM_JOINTS, 3))
    tips = {}
    for name, first in FINGER_CHAINS.items():
        if name == "thumb":
            base = np.array(THUMB_CMC_MM) / 1000.0
            direction = _unit(np.array(THUMB_DIRECTION))
            # the thumb bends slightly toward the palm along its length
            bend = _unit(np.array([0.0, -1.0, 0.0]) - direction * direction[1] * -1.0)
            dirs = [direction, _unit(direction + 0.12 * bend), _unit(direction + 0.2 * bend)]
        else:
            base = np.array(MCP_MM[name]) / 1000.0
            a = np.deg2rad(REST_SPLAY_DEG[name])
            d = np.array([np.cos(a), 0.0, np.sin(a)])
            dirs = [d, d, d]
        p = base
        for k, length in enumerate(FINGER_SEGMENTS_MM[name]):
            if k < 3:
                if k == 0:
                    joints[first] = p
                else:
                    joints[first + k] = p
            p = p + dirs[k] * length / 1000.0
        tips[name] = p
    tip_order = ["thumb", "index", "middle", "ring", "pinky"]
    return joints, np.stack([tips[n] for n in tip_order])


def _segments() -> list[tuple[int, np.ndarray, np.ndarray, float, float]]:
    """Bone capsules (joint index, start, end, r_start, r_end) in metres."""
    joints, tips = rest_skeleton()
    tip_of = dict(zip(["thumb", "index", "middle", "ring", "pinky"], tips))
    segs = []
    for name, first in FINGER_CHAINS.items():
        radii = np.array(FINGER_RADII_MM[name]) / 1000.0
        chain = [joints[first], joints[first + 1], joints[first + 2], tip_of[name]]
        for k in range(3):
            segs.append((first + k, chain[k], chain[k + 1], radii[k], radii[k + 1]))
    return segs


def _capsule_sdf(p: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Approximate signed distance to a tapered capsule; (P,3) -> (P,)."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    closest = a + t[:, None] * ab
    return np.linalg.norm(p - closest, axis=1) - (ra + (rb - ra) * t)


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _palm_sdf(p: np.ndarray) -> np.ndarray:
    """Palm: metacarpal capsules blended with a flattened rounded slab and a thenar pad."""
    joints, _ = rest_skeleton()
    d = np.full(len(p), np.inf)
    starts = {"index": (12.0, 0.0, -14.0), "middle": (12.0, 0.0, -3.0), "ring": (12.0, 0.0, 8.0), "pinky": (14.0, -1.0, 18.0)}
    for name, first in FINGER_CHAINS.items():
        if name == "thumb":
            continue
        a = np.array(starts[name]) / 1000.0
        # metacarpals are flattened dorso-volarly: measure in a frame with y stretched
        scale = np.array([1.0, 1.45, 1.0])
        d = np.minimum(d, _capsule_sdf(p * scale, a * scale, joints[first] * scale, 0.0115, 0.0105))
    # thenar eminence: from the heel of the hand to the thumb MCP
    thenar = _capsule_sdf(p, np.array([0.012, -0.010, -0.010]), joints[14] - np.array([0.004, -0.002, -0.002]), 0.015, 0.0095)
    d = _smooth_min(d, thenar, 0.010)
    # hypothenar pad on the little-finger side
    hypo = _capsule_sdf(p, np.array([0.015, -0.006, 0.016]), np.array([0.062, -0.006, 0.026]), 0.013, 0.011)
    d = _smooth_min(d, hypo, 0.010)
    # wrist stub, elliptical (wider than thick), closing the mesh proximally
    wscale = np.array([1.0, 1.75, 1.0])
    wrist = _capsule_sdf(p * wscale, np.array([-0.018, 0.0, 0.0]), np.array([0.014, 0.0, 0.0]), 0.026, 0.026)
    return _smooth_min(d, wrist, 0.012)


def hand_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance (approximately metric) of points (P,3) to the rest hand surface."""
    fingers = np.full(len(p), np.inf)
    d = _palm_sdf(p)
    for joint, a, b, ra, rb in _segments():
        cap = _capsule_sdf(p, a, b, ra, rb)
        if joint in (1, 4, 7, 10, 13):
            d = _smooth_min(d, cap, 0.006)  # proximal segments blend into the palm
        else:
            fingers = np.minimum(fingers, cap)
    return np.minimum(d, fingers)


def _surface_mesh(voxel: float = 0.0011) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of :func:`hand_sdf` -> dense closed mesh (vertices, faces)."""
    from skimage.measure import marching_cubes

    joints, tips = rest_skeleton()
    pts = np.vstack([joints, tips, [[-0.02, 0.0, 0.0]]])
    lo, hi = pts.min(axis=0) - 0.03, pts.max(axis=0) + 0.03
    axes = [np.arange(lo[i], hi[i] + voxel, voxel) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    values = np.concatenate([hand_sdf(chunk) for chunk in np.array_split(grid, 16)])
    volume = values.reshape(len(axes[0]), len(axes[1]), len(axes[2]))
    if volume[0].min() <= 0 or volume[-1].min() <= 0 or volume[:, 0].min() <= 0 or volume[:, -1].min() <= 0 \
            or volume[:, :, 0].min() <= 0 or volume[:, :, -1].min() <= 0:
        raise RuntimeError("stand-in hand surface touches the sampling box")
    verts, faces, _, _ = marching_cubes(volume, level=0.0, spacing=(voxel,) * 3)
    return verts + lo, faces.astype(np.int64)


def _split_longest_edges(verts: np.ndarray, faces: np.ndarray, n_target: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the longest edge until the closed mesh has ``n_target`` vertices (+1 V, +2 F each)."""
    verts, faces = [v for v in verts], [list(f) for f in faces]
    while len(verts) < n_target:
        best, best_len = None, -1.0
        for fi, f in enumerate(faces):
            for k in range(3):
                a, b = f[k], f[(k + 1) % 3]
                length = float(np.linalg.norm(verts[a] - verts[b]))
                if length > best_len:
                    best, best_len = (fi, k), length
        fi, k = best
        a, b = faces[fi][k], faces[fi][(k + 1) % 3]
        m = len(verts)
        verts.append((verts[a] + verts[b]) / 2)
        for gi, g in enumerate(list(faces)):
            for j in range(3):
                if (g[j], g[(j + 1) % 3]) in ((a, b), (b, a)):
                    u, v, w = g[j], g[(j + 1) % 3], g[(j + 2) % 3]
                    faces[gi] = [u, m, w]
                    faces.append([m, v, w])
                    break
    return np.array(verts), np.array(faces, dtype=np.int64)


def _decimated_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Closed mesh with exactly NUM_VERTS vertices (genus 0, so 2V-4 faces).

    Quadric decimation can pinch an edge into a non-manifold one at high aggressiveness, so a few
    settings are tried in a fixed order and the first closed genus-0 result is kept.
    """
    import fast_simplification

    verts, faces = _surface_mesh()
    target_faces = 2 * NUM_VERTS - 4
    reduction = 1.0 - (target_faces - 24) / len(faces)
    for agg in (5.0, 4.0, 3.0, 6.0):
        v, f = fast_simplification.simplify(verts.astype(np.float32), faces, target_reduction=reduction, agg=agg)
        v, f = _clean(v.astype(np.float64), f.astype(np.int64))
        if len(v) <= NUM_VERTS and _euler_characteristic(v, f) == 2 and _is_closed_manifold(f):
            v, f = _split_longest_edges(v, f, NUM_VERTS)
            if len(f) == target_faces and _euler_characteristic(v, f) == 2 and _is_closed_manifold(f):
                return v, f
    raise RuntimeError("could not decimate the stand-in surface to a closed genus-0 mesh of 778 vertices")


def _edges(f: np.ndarray) -> np.ndarray:
    return np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)


def _euler_characteristic(v: np.ndarray, f: np.ndarray) -> int:
    return len(v) - len(np.unique(_edges(f), axis=0)) + len(f)


def _is_closed_manifold(f: np.ndarray) -> bool:
    """Every edge shared by exactly two faces."""
    _, counts = np.unique(_edges(f), axis=0, return_counts=True)
    return bool((counts == 2).all())


def _clean(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop degenerate faces and unreferenced vertices."""
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    used = np.unique(f)
    remap = -np.ones(len(v), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def _bone_distances(verts: np.ndarray) -> np.ndarray:
    """Distance (V, 16) of each vertex to the bone(s) each joint rotates."""
    joints, tips = rest_skeleton()
    dist = np.full((len(verts), NUM_JOINTS), np.inf)
    for joint, a, b, _, _ in _segments():
        ab = b - a
        t = np.clip(((verts - a) @ ab) / (ab @ ab), 0, 1)
        dist[:, joint] = np.linalg.norm(verts - (a + t[:, None] * ab), axis=1)
    # the wrist joint drives the palm: its "bones" run from the wrist to the MCPs and the thumb CMC
    wrist_bones = [joints[c] for c in (1, 4, 7, 10)] + [joints[13]]
    for end in wrist_bones:
        a = np.array([-0.02, 0.0, 0.0])
        ab = end - a
        t = np.clip(((verts - a) @ ab) / (ab @ ab), 0, 1)
        dist[:, 0] = np.minimum(dist[:, 0], np.linalg.norm(verts - (a + t[:, None] * ab), axis=1))
    return dist


def skinning_weights(verts: np.ndarray, tau: float = 0.0022) -> np.ndarray:
    """Soft-min skinning over the nearest bone, its parent and its children -> (V, 16).

    Restricting each vertex to one kinematic chain keeps a finger's skin from following its
    neighbour; the soft-min over distances blends 50/50 exactly at a joint and fades over
    about a finger radius on either side.
    """
    dist = _bone_distances(verts)
    nearest = dist.argmin(axis=1)
    allowed = np.zeros_like(dist, dtype=bool)
    allowed[np.arange(len(verts)), nearest] = True
    parent = PARENTS[nearest]
    has_parent = parent >= 0
    allowed[np.flatnonzero(has_parent), parent[has_parent]] = True
    for j in range(NUM_JOINTS):
        for child in np.flatnonzero(PARENTS == j):
            allowed[nearest == j, child] = True
    rel = np.where(allowed, dist - dist.min(axis=1, keepdims=True), np.inf)
    w = np.exp(-rel / tau)
    w[w < 1e-3] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def _joint_regressor(verts: np.ndarray, joints: np.ndarray, k: int = 24) -> np.ndarray:
    """Non-negative, sum-to-one weights over nearby vertices reproducing each joint."""
    reg = np.zeros((NUM_JOINTS, len(verts)))
    for j, target in enumerate(joints):
        idx = np.argsort(np.linalg.norm(verts - target, axis=1))[:k]
        # rows: x, y, z and a heavily weighted sum-to-one constraint
        a = np.vstack([verts[idx].T, 10.0 * np.ones(k)])
        b = np.concatenate([target, [10.0]])
        w, _ = nnls(a, b)
        reg[j, idx] = w / w.sum()
    return reg


def _shape_blend_shapes(verts: np.ndarray, weights: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Ten shape directions (V, 3, 10), each one standard deviation of a skeletal edit.

    Each edit stretches bones and/or scales cross-sections; skin follows its bones through the
    skinning weights, so the shape space stays consistent with the joint regressor.
    """
    joints_tips = rest_skeleton()
    _, tips = joints_tips
    child_end = np.zeros_like(joints)
    tip_of_chain = {1: tips[1], 4: tips[2], 7: tips[4], 10: tips[3], 13: tips[0]}
    for j in range(1, NUM_JOINTS):
        children = np.flatnonzero(PARENTS == j)
        child_end[j] = joints[children[0]] if len(children) else tip_of_chain[j - 2]
    bone_dir = np.zeros_like(joints)
    bone_dir[1:] = _unit(child_end[1:] - joints[1:])
    finger_of = {j: name for name, first in FINGER_CHAINS.items() for j in range(first, first + 3)}

    def stretch(factors: dict[int, float]) -> np.ndarray:
        """Lengthen bone j by factor eps_j; children translate with the bone's distal end."""
        offset = np.zeros_like(joints)  # translation of each joint
        for j in range(1, NUM_JOINTS):
            p = PARENTS[j]
            if p > 0:
                length = np.linalg.norm(joints[j] - joints[p])
                offset[j] = offset[p] + factors.get(p, 0.0) * length * bone_dir[p]
        disp = np.zeros_like(verts)
        for j in range(1, NUM_JOINTS):
            axial = ((verts - joints[j]) @ bone_dir[j]).clip(min=0.0)
            disp += weights[:, j:j + 1] * (offset[j] + factors.get(j, 0.0) * axial[:, None] * bone_dir[j])
        return disp

    def radial(scale_y: float, scale_r: float) -> np.ndarray:
        """Scale distance from each bone's axis: along the palm normal (y) and all round."""
        disp = np.zeros_like(verts)
        for j in range(NUM_JOINTS):
            if j == 0:
                rel = verts * np.array([0.0, 1.0, 0.0])
            else:
                rel = verts - joints[j]
                rel = rel - (rel @ bone_dir[j])[:, None] * bone_dir[j]
            d = scale_r * rel + scale_y * rel * np.array([0.0, 1.0, 0.0])
            disp += weights[:, j:j + 1] * d
        return disp

    def finger_stretch(names: tuple[str, ...], eps: float) -> np.ndarray:
        return stretch({j: eps for j, n in finger_of.items() if n in names})

    palm_width = weights[:, :1] * verts * np.array([0, 0, 0.06])
    for name, first in FINGER_CHAINS.items():
        shift = np.array([0, 0, 0.06 * joints[first][2]])
        palm_width += weights[:, first:first + 3].sum(axis=1, keepdims=True) * shift
    palm_length = weights[:, :1] * verts * np.array([0.05, 0, 0])
    for name, first in FINGER_CHAINS.items():
        shift = np.array([0.05 * joints[first][0], 0, 0])
        palm_length += weights[:, first:first + 3].sum(axis=1, keepdims=True) * shift
    dirs = [
        0.06 * verts,                                               # 0 overall size
        stretch({j: 0.08 for j in (3, 6, 9, 12, 15)}),              # 1 distal phalanx length
        palm_width,                                                 # 2 palm width
        radial(0.08, 0.0),                                          # 3 thickness
        radial(0.0, 0.07),                                          # 4 girth
        finger_stretch(("thumb",), 0.06),                           # 5 thumb length
        finger_stretch(("index",), 0.05),                           # 6 index length
        finger_stretch(("ring", "pinky"), 0.05),                    # 7 ring / little length
        palm_length,                                                # 8 palm length
        finger_stretch(("middle",), 0.05),                          # 9 middle length
    ]
    return np.stack(dirs, axis=-1)


def _anatomical_pose(rest_keypoints: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Axis-angle pose (N, 45) of anatomical (bend, splay, twist) angles (N, 15, 3) in degrees."""
    import torch

    from handsynth import joint_limits

    frames = joint_limits.AnatomicalFrames.from_rest_keypoints(rest_keypoints)
    angles = torch.as_tensor(np.deg2rad(angles_deg), dtype=torch.float64)
    pose = joint_limits.compose_pose(angles, joint_limits.AnatomicalFrames(frames.frames.double()))
    return pose.reshape(-1, 45).numpy()


def relaxed_hands_mean(rest_keypoints: np.ndarray) -> np.ndarray:
    """A relaxed, slightly curled hand (45,) — the pose MANO's ``hands_mean`` also encodes.

    Built from anatomical angles so that it bends each joint about its own flexion axis only.
    """
    angles = np.zeros((1, 15, 3))
    for name, first in FINGER_CHAINS.items():
        for k, bend in enumerate((8.0, 12.0, 10.0) if name == "thumb" else (12.0, 17.0, 10.0)):
            angles[0, first - 1 + k, 0] = bend
    return _anatomical_pose(rest_keypoints, angles)[0]


def _pose_synergies(rest_keypoints: np.ndarray, hands_mean: np.ndarray, seed: int = 0) -> np.ndarray:
    """Orthonormal PCA basis (45, 45) of a finger-synergy pose model (rows = components).

    Poses are drawn as a shared grasp curl plus per-finger curls and spreads (anatomical
    angles), then PCA'd around ``hands_mean`` like MANO's basis.
    """
    rng = np.random.default_rng(seed)
    n = 4000
    grasp = rng.uniform(-10.0, 75.0, n)
    angles = np.zeros((n, 15, 3))
    for name, first in FINGER_CHAINS.items():
        curl = grasp + rng.normal(0.0, 20.0, n)
        for k, gain in enumerate((0.8, 1.1, 0.7)):
            angles[:, first - 1 + k, 0] = curl * gain
        angles[:, first - 1, 1] = rng.normal(0.0, 7.0, n)
    x = _anatomical_pose(rest_keypoints, angles) - hands_mean
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=True)
    return vt


def _reorder_for_tips(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute vertices so each fingertip (farthest along its distal bone) sits at MANO's index."""
    joints, tips = rest_skeleton()
    order = np.lexsort((verts[:, 2], verts[:, 0]))  # a stable, readable base order
    verts, inverse = verts[order], np.argsort(order)
    faces = inverse[faces]
    perm = np.arange(len(verts))
    tip_names = ["thumb", "index", "middle", "ring", "pinky"]
    distal = {"thumb": 15, "index": 3, "middle": 6, "ring": 12, "pinky": 9}
    for name, tip in zip(tip_names, tips):
        # the surface point just beyond the end of the distal bone
        target = tip + _unit(tip - joints[distal[name]]) * FINGER_RADII_MM[name][3] / 1000.0
        src = int(np.argmin(np.linalg.norm(verts[perm] - target, axis=1)))
        dst = TIP_VERTEX_IDS[name]
        perm[[src, dst]] = perm[[dst, src]]
    verts = verts[perm]
    inverse = np.argsort(perm)
    return verts, inverse[faces]


def generate_standin_model() -> dict[str, np.ndarray]:
    """The right-hand stand-in as a dict in MANO's file schema (what ``MANO_RIGHT.npz`` holds)."""
    verts, faces = _decimated_mesh()
    verts, faces = _reorder_for_tips(verts, faces)
    joints, _ = rest_skeleton()
    weights = skinning_weights(verts)
    regressor = _joint_regressor(verts, joints)
    # anatomical frames from exactly the keypoints the model will produce at rest
    rest_keypoints = np.concatenate([regressor @ verts, verts[list(TIP_VERTEX_IDS.values())]])
    hands_mean = relaxed_hands_mean(rest_keypoints)
    kintree = np.stack([PARENTS.astype(np.int64), np.arange(NUM_JOINTS)])
    kintree[0, 0] = 4294967295  # as in MANO's files (uint32 -1)
    return {
        "v_template": verts.astype(np.float64),
        "f": faces.astype(np.uint32),
        "J_regressor": regressor,
        "J": joints,
        "weights": weights,
        "posedirs": np.zeros((NUM_VERTS, 3, 9 * (NUM_JOINTS - 1))),
        "shapedirs": _shape_blend_shapes(verts, weights, joints),
        "kintree_table": kintree,
        "hands_components": _pose_synergies(rest_keypoints, hands_mean),
        "hands_mean": hands_mean,
        "hands_coeffs": np.zeros((1, 45)),
        "bs_style": np.array("lbs"),
        "bs_type": np.array("lrotmin"),
        "standin_version": np.array(STANDIN_VERSION),
    }


def mirror_model(right: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The left hand as the mirror (x -> -x) of a right model, with faces re-wound."""
    left = dict(right)
    m = np.array([-1.0, 1.0, 1.0])
    left["v_template"] = right["v_template"] * m
    left["J"] = right["J"] * m
    left["f"] = right["f"][:, [0, 2, 1]]
    left["shapedirs"] = right["shapedirs"] * m[None, :, None]
    left["posedirs"] = right["posedirs"] * m[None, :, None]
    # a mirrored rotation M R M has axis-angle (x, -y, -z)
    am = np.tile(np.array([1.0, -1.0, -1.0]), 15)
    left["hands_mean"] = right["hands_mean"] * am
    left["hands_components"] = right["hands_components"] * am[None, :]
    return left
