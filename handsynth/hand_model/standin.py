"""A generated STAND-IN for the MANO hand model, in MANO's exact file schema.

MANO's model files cannot be redistributed, yet the pipeline has to run everywhere. This module
builds, deterministically, a right hand in MANO's schema: ``v_template`` (778, 3), ``f``
(1552, 3), ``J_regressor`` (16, 778), ``weights`` (778, 16), ``posedirs`` (778, 3, 135),
``shapedirs`` (778, 3, 10), ``kintree_table`` (2, 16), ``hands_components`` (45, 45),
``hands_mean`` (45,), so that ``smplx.MANO`` loads it through the same code path as the real
files. It is NOT MANO: no MANO data went into it.

Its surface is the MIT-licensed rigged generic hand of the WebXR input profiles
(``@webxr-input-profiles/assets``, ``generic-hand/right.glb``, fetched by
``scripts/fetch_assets.sh``): an artist-modelled hand with tapered fingers, knuckles, palm pads,
interdigital webbing and nails' relief, skinned to the 25 WebXR joints.

Construction (all in metres, right hand; fingers along +x, palm facing -y, thumb on the -z side):
1. read the glb's mesh, joints and skin; weld its UV-seam duplicates into one closed genus-0
   surface; move the wrist joint to the origin, turn the middle finger's base onto +x and the
   palm onto -y, and scale to an adult hand (wrist to middle fingertip ``HAND_LENGTH_MM``);
   remove the glb's flat wrist cut, so the hand is open at the wrist like MANO (one boundary
   loop, where :mod:`handsynth.hand_model.forearm` attaches a forearm);
2. quadric decimation and longest-edge splits to exactly 778 vertices (a disc: F = 2V - 2 - L
   for a wrist loop of L vertices);
3. fingertip vertices moved to the InterHand2.6M family's indices
   (:data:`handsynth.keypoints.TIP_VERTEX_IDS`), so that a loader's own MANO layer on our
   parameters finds the same 21 keypoints as we do;
4. the skeleton in MANO's order from the WebXR joints (a proximal phalanx's joint is the MCP,
   the thumb's metacarpal joint its CMC; the other metacarpals fold into the wrist), and the
   skinning weights from the glb's skin, its 25 joints summed into MANO's 16;
5. a joint regressor reproducing the skeleton from the surrounding vertices (non-negative
   weights summing to one), shape blend shapes from skeletal edits (size, finger lengths, palm
   width, thickness, girth, ...), and a pose PCA basis from a finger-synergy model;
6. pose correctives (``posedirs``) regressed from volume-preserving targets over poses of each
   joint (:mod:`handsynth.hand_model.correctives`): there is no scan data to learn them from,
   and without them a bent finger collapses at its joints.

The glb's own UVs do not survive step 2; :mod:`handsynth.hand_model.uv` lays the stand-in out
like real MANO.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from handsynth.assets import NPM_HAND_PACKAGE, assets_dir
from handsynth.hand_model import correctives
from handsynth.keypoints import TIP_VERTEX_IDS

#: Version of the generator; part of the model identity recorded in every manifest.
STANDIN_VERSION = "standin-hand-6"

NUM_VERTS = 778
NUM_JOINTS = 16
#: MANO's kinematic tree: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
#: First joint of each finger chain (MANO order) and its tip name.
FINGER_CHAINS = {"index": 1, "middle": 4, "pinky": 7, "ring": 10, "thumb": 13}

#: Where the glb lies below the assets folder (``IH_ASSETS_DIR``, default ``<repo>/.local/assets``).
GLB_PATH = f"{NPM_HAND_PACKAGE}/dist/profiles/generic-hand/right.glb"
#: Wrist joint to the middle fingertip of the adult stand-in (mm); adults measure about 180-190.
HAND_LENGTH_MM = 186.0
#: WebXR joint (glTF node name) that each of MANO's 16 joints sits at.
MANO_JOINT_NODES = (
    "wrist",
    "index-finger-phalanx-proximal", "index-finger-phalanx-intermediate", "index-finger-phalanx-distal",
    "middle-finger-phalanx-proximal", "middle-finger-phalanx-intermediate", "middle-finger-phalanx-distal",
    "pinky-finger-phalanx-proximal", "pinky-finger-phalanx-intermediate", "pinky-finger-phalanx-distal",
    "ring-finger-phalanx-proximal", "ring-finger-phalanx-intermediate", "ring-finger-phalanx-distal",
    "thumb-metacarpal", "thumb-phalanx-proximal", "thumb-phalanx-distal",
)
#: WebXR joint whose bone ends at each fingertip, per finger.
TIP_NODES = {"thumb": "thumb-tip", "index": "index-finger-tip", "middle": "middle-finger-tip",
             "ring": "ring-finger-tip", "pinky": "pinky-finger-tip"}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass(frozen=True)
class RiggedHand:
    """A skinned right-hand mesh: vertices (V, 3), faces (F, 3), weights over MANO's joints (V, 16),
    MANO's 16 joints and the 5 fingertip points (thumb, index, middle, ring, pinky) of its rig."""

    vertices: np.ndarray
    faces: np.ndarray
    weights: np.ndarray
    joints: np.ndarray
    tips: np.ndarray


def _mano_joint_of_node(name: str) -> int:
    """MANO joint that carries the skin of a WebXR joint: metacarpals fold into the wrist, tips into
    their distal phalanx."""
    if name in MANO_JOINT_NODES:
        return MANO_JOINT_NODES.index(name)
    if name.endswith("-tip"):
        return MANO_JOINT_NODES.index(name.replace("-tip", "-phalanx-distal"))
    if name.endswith("-metacarpal"):
        return 0
    raise ValueError(f"unexpected WebXR joint {name!r}")


def read_webxr_hand(path: Path) -> RiggedHand:
    """The glb's skinned mesh as a closed surface, its skin summed into MANO's 16 joints (glb frame)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"stand-in hand: {path} not found. The stand-in is built from the MIT-licensed WebXR generic hand; "
            "run scripts/fetch_assets.sh (it fetches @webxr-input-profiles/assets@1.0.20 with npm) "
            "or point IH_ASSETS_DIR at a folder holding it.")
    data = path.read_bytes()
    if data[:4] != b"glTF" or len(data) < 28:
        raise ValueError(f"{path}: not a binary glTF file")
    json_len = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20:20 + json_len])
    bin_len = struct.unpack_from("<I", data, 20 + json_len)[0]
    binary = data[28 + json_len:28 + json_len + bin_len]

    def accessor(i: int) -> np.ndarray:
        a = gltf["accessors"][i]
        view = gltf["bufferViews"][a["bufferView"]]
        dtype = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}[a["componentType"]]
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[a["type"]]
        if view.get("byteStride", dtype().itemsize * width) != dtype().itemsize * width:
            raise ValueError(f"{path}: interleaved accessor {i} is not supported")
        offset = view.get("byteOffset", 0) + a.get("byteOffset", 0)
        return np.frombuffer(binary, dtype=dtype, count=a["count"] * width, offset=offset).reshape(a["count"], width)

    prim = gltf["meshes"][0]["primitives"][0]
    attrs = prim["attributes"]
    positions = accessor(attrs["POSITION"]).astype(np.float64)
    faces = accessor(prim["indices"]).reshape(-1, 3).astype(np.int64)
    skin = gltf["skins"][0]
    names = [gltf["nodes"][n]["name"] for n in skin["joints"]]
    # joint positions in the mesh's bind space: inverse of each inverse bind matrix (column-major)
    ibm = accessor(skin["inverseBindMatrices"]).reshape(-1, 4, 4).astype(np.float64).transpose(0, 2, 1)
    node_pos = {name: np.linalg.inv(m)[:3, 3] for name, m in zip(names, ibm)}
    to_mano = np.array([_mano_joint_of_node(n) for n in names])
    joint_ids, joint_w = accessor(attrs["JOINTS_0"]).astype(np.int64), accessor(attrs["WEIGHTS_0"]).astype(np.float64)
    weights = np.zeros((len(positions), NUM_JOINTS))
    for k in range(joint_ids.shape[1]):
        np.add.at(weights, (np.arange(len(positions)), to_mano[joint_ids[:, k]]), joint_w[:, k])
    # weld the copies a UV seam makes of one vertex
    _, first, inverse = np.unique(np.round(positions, 6), axis=0, return_index=True, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    joints = np.stack([node_pos[n] for n in MANO_JOINT_NODES])
    tips = np.stack([node_pos[TIP_NODES[n]] for n in ("thumb", "index", "middle", "ring", "pinky")])
    hand = RiggedHand(positions[first], faces, weights[first] / weights[first].sum(axis=1, keepdims=True), joints, tips)
    _, edge_counts = np.unique(_edges(hand.faces), axis=0, return_counts=True)
    if _euler_characteristic(hand.vertices, hand.faces) != 2 or not (edge_counts == 2).all():
        raise ValueError(f"{path}: the welded hand mesh is not a closed genus-0 surface")
    return hand


def _to_standin_frame(hand: RiggedHand) -> RiggedHand:
    """Wrist at the origin, middle finger's MCP on +x, palm facing -y, adult size."""
    x = _unit(hand.joints[4] - hand.joints[0])
    palm = np.cross(hand.joints[1] - hand.joints[0], hand.joints[7] - hand.joints[0])  # out of a right palm
    palm = _unit(palm - (palm @ x) * x)
    rot = np.stack([x, -palm, np.cross(x, -palm)])
    f = lambda p: (p - hand.joints[0]) @ rot.T  # noqa: E731
    moved = RiggedHand(f(hand.vertices), hand.faces, hand.weights, f(hand.joints), f(hand.tips))
    tip = moved.vertices[_tip_vertices(moved)[2]]
    scale = HAND_LENGTH_MM / 1000.0 / np.linalg.norm(tip)
    return RiggedHand(moved.vertices * scale, moved.faces, moved.weights, moved.joints * scale, moved.tips * scale)


def _open_wrist(hand: RiggedHand) -> RiggedHand:
    """Remove the glb's flat wrist cut, leaving an open wrist loop as real MANO has.

    The cut is the one planar patch facing away from the fingers. Without it the surface is a
    disc (genus 0, one boundary loop), like MANO's: forearms attach at that loop
    (:mod:`handsynth.hand_model.forearm`), and :meth:`HandModel.faces` closes it with a flat cap
    for renders and checks, one code path for both models.
    """
    import trimesh

    mesh = trimesh.Trimesh(hand.vertices, hand.faces, process=False)
    normals = mesh.face_normals
    facing_back = np.flatnonzero(normals[:, 0] < -0.7)
    seed_face = facing_back[np.argmax(mesh.area_faces[facing_back])]
    flat = (normals @ normals[seed_face]) > np.cos(np.deg2rad(3.0))
    pairs = mesh.face_adjacency[flat[mesh.face_adjacency].all(axis=1)]
    cut = np.zeros(len(hand.faces), dtype=bool)
    for comp in trimesh.graph.connected_components(pairs, nodes=np.flatnonzero(flat)):
        if seed_face in comp:
            cut[comp] = True
    used = np.unique(hand.faces[~cut])
    v, f = _clean(hand.vertices, hand.faces[~cut])
    opened = RiggedHand(v, f, hand.weights[used], hand.joints, hand.tips)
    if not _is_disc(opened.vertices, opened.faces):
        raise ValueError("stand-in hand: removing the wrist cut of the glb did not leave a surface with one open loop")
    return opened


def _tip_vertices(hand: RiggedHand) -> list[int]:
    """Per finger (thumb, index, middle, ring, pinky): the surface vertex farthest along its distal bone."""
    distal = {"thumb": 15, "index": 3, "middle": 6, "ring": 12, "pinky": 9}
    out = []
    for k, name in enumerate(("thumb", "index", "middle", "ring", "pinky")):
        j = distal[name]
        own = np.flatnonzero(hand.weights.argmax(axis=1) == j)
        d = _unit(hand.tips[k] - hand.joints[j])
        out.append(int(own[np.argmax((hand.vertices[own] - hand.joints[j]) @ d)]))
    return out


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


def _decimated_mesh(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The open hand surface with exactly NUM_VERTS vertices, still a disc (one wrist loop).

    Quadric decimation can pinch an edge into a non-manifold one at high aggressiveness, so a few
    settings are tried in a fixed order and the first result of the right topology is kept.
    """
    import fast_simplification

    wrist_loop = 16  # the glb's, and MANO's; decimation may shorten it by a vertex or two
    reduction = 1.0 - (2 * NUM_VERTS - 2 - wrist_loop - 24) / len(faces)
    for agg in (5.0, 4.0, 3.0, 6.0):
        v, f = fast_simplification.simplify(verts.astype(np.float32), faces, target_reduction=reduction, agg=agg)
        v, f = _clean(v.astype(np.float64), f.astype(np.int64))
        if len(v) <= NUM_VERTS and _is_disc(v, f):
            v, f = _split_longest_edges(v, f, NUM_VERTS)
            if _is_disc(v, f):
                return v, f
    raise RuntimeError("could not decimate the stand-in surface to an open genus-0 mesh of 778 vertices")


def _transfer_weights(hand: RiggedHand, verts: np.ndarray) -> np.ndarray:
    """Skinning weights (V, 16) at new surface points: the source skin interpolated at the closest
    point of the source surface; weights below 1e-3 dropped so that each vertex follows few bones."""
    import trimesh

    source = trimesh.Trimesh(hand.vertices, hand.faces, process=False)
    closest, _, tri = trimesh.proximity.closest_point(source, verts)
    bary = trimesh.triangles.points_to_barycentric(source.triangles[tri], closest)
    w = np.einsum("vk,vkj->vj", np.clip(bary, 0.0, 1.0), hand.weights[hand.faces[tri]])
    w[w < 1e-3] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def _edges(f: np.ndarray) -> np.ndarray:
    return np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)


def _euler_characteristic(v: np.ndarray, f: np.ndarray) -> int:
    return len(v) - len(np.unique(_edges(f), axis=0)) + len(f)


def _is_disc(v: np.ndarray, f: np.ndarray) -> bool:
    """A genus-0 surface with exactly one boundary loop (MANO's topology: open at the wrist)."""
    from handsynth.hand_model.parts import boundary_loops

    _, counts = np.unique(_edges(f), axis=0, return_counts=True)
    if counts.max() > 2 or _euler_characteristic(v, f) != 1:
        return False
    try:
        return len(boundary_loops(f, "stand-in")) == 1
    except ValueError:  # a boundary that touches itself
        return False


def _clean(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop degenerate faces and unreferenced vertices."""
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    used = np.unique(f)
    remap = -np.ones(len(v), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]



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


def _shape_blend_shapes(verts: np.ndarray, weights: np.ndarray, joints: np.ndarray, tips: np.ndarray) -> np.ndarray:
    """Ten shape directions (V, 3, 10), each one standard deviation of a skeletal edit.

    Each edit stretches bones and/or scales cross-sections; skin follows its bones through the
    skinning weights, so the shape space stays consistent with the joint regressor.
    """
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


#: The poses ``docs/standin_hand.png`` shows, as anatomical (bend, splay, twist) angles in degrees
#: of the finger joints (index, middle, pinky, ring: MCP, PIP, DIP; thumb: CMC, MCP, IP). The fist
#: is a natural one (fingertips short of the palm, the thumb along the index): no finger passes
#: through another, which tests check.
PICTURE_POSES_DEG: dict[str, dict[str, tuple[float, float, float]]] = {
    "open": {"fingers": (0.0, 0.0, 0.0), "thumb": (0.0, 0.0, 0.0)},
    "grasp": {"fingers": (40.0, 40.0, 40.0), "thumb": (40.0, 40.0, 40.0)},
    "fist": {"fingers": (75.0, 90.0, 45.0), "thumb": (0.0, 30.0, 35.0)},
}


def picture_pose(rest_keypoints: np.ndarray, name: str) -> np.ndarray:
    """Full finger pose (45,) (not relative to ``hands_mean``) of one of :data:`PICTURE_POSES_DEG`,
    each joint bent about its own flexion axis."""
    bends = PICTURE_POSES_DEG[name]
    angles = np.zeros((1, 15, 3))
    for finger, first in FINGER_CHAINS.items():
        angles[0, first - 1:first + 2, 0] = bends["thumb" if finger == "thumb" else "fingers"]
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


#: Ranges (degrees: bend, splay, twist) the pose correctives are fitted over, per joint kind: the
#: anatomical range of each axis with a margin (fixed here, so that revised joint limits elsewhere
#: do not silently change the model).
CORRECTIVE_RANGES_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    "mcp": ((-30, 95), (-25, 25), (-15, 15)), "pip": ((-10, 115), (-10, 10), (-10, 10)),
    "dip": ((-15, 95), (-10, 10), (-10, 10)), "thumb_cmc": ((-25, 55), (-35, 35), (-35, 35)),
    "thumb_mcp": ((-40, 60), (-15, 15), (-15, 15)), "thumb_ip": ((-15, 105), (-10, 10), (-10, 10)),
}
#: Poses per joint the correctives are fitted on.
CORRECTIVE_SAMPLES = 48


def _corrective_samples(rest_keypoints: np.ndarray, seed: int = 0) -> dict[int, np.ndarray]:
    """Per MANO joint 1..15, full finger poses (M, 45) that turn that joint alone: bends evenly over
    its range, splay and twist drawn within theirs."""
    rng = np.random.default_rng(seed)
    kinds = ["mcp", "pip", "dip"] * 4 + ["thumb_cmc", "thumb_mcp", "thumb_ip"]
    samples = {}
    for row, kind in enumerate(kinds):
        (b0, b1), (s0, s1), (t0, t1) = CORRECTIVE_RANGES_DEG[kind]
        angles = np.zeros((CORRECTIVE_SAMPLES, 15, 3))
        angles[:, row, 0] = np.linspace(b0, b1, CORRECTIVE_SAMPLES)
        angles[:, row, 1] = rng.uniform(s0, s1, CORRECTIVE_SAMPLES)
        angles[:, row, 2] = rng.uniform(t0, t1, CORRECTIVE_SAMPLES)
        samples[row + 1] = _anatomical_pose(rest_keypoints, angles)
    return samples


def _reorder_for_tips(verts: np.ndarray, faces: np.ndarray, tip_ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permute vertices so each fingertip vertex (thumb, index, ...) sits at MANO's index.

    Returns the new vertices, faces and the permutation (new vertex i = old vertex ``perm[i]``).
    """
    order = np.lexsort((verts[:, 2], verts[:, 0]))  # a stable, readable base order
    perm = order.copy()
    for name, tip in zip(("thumb", "index", "middle", "ring", "pinky"), tip_ids):
        src, dst = int(np.flatnonzero(perm == tip)[0]), TIP_VERTEX_IDS[name]
        perm[[src, dst]] = perm[[dst, src]]
    inverse = np.argsort(perm)
    return verts[perm], inverse[faces], perm


#: Modules whose code decides the stand-in's arrays (the generator, the correctives' fit, the
#: anatomical frames its relaxed pose and samples are built in, the tip convention).
BUILD_MODULES = ("handsynth.hand_model.standin", "handsynth.hand_model.correctives", "handsynth.hand_model.parts",
                 "handsynth.joint_limits", "handsynth.rotations", "handsynth.keypoints")


def build_key() -> str:
    """Digest of the code that generates the stand-in: its version, the glb's pinned path and the
    source of :data:`BUILD_MODULES`. A cached stand-in made by other code is made again, even when
    nobody bumped :data:`STANDIN_VERSION` (a comment-only edit just regenerates the same arrays)."""
    import importlib

    h = hashlib.sha256(f"{STANDIN_VERSION}\n{GLB_PATH}\n".encode())
    for name in BUILD_MODULES:
        h.update(Path(importlib.import_module(name).__file__).read_bytes())
    return h.hexdigest()[:16]


def generate_standin_model(glb_path: Path | None = None) -> dict[str, np.ndarray]:
    """The right-hand stand-in as a dict in MANO's file schema (what ``MANO_RIGHT.npz`` holds)."""
    hand = _open_wrist(_to_standin_frame(read_webxr_hand(Path(glb_path) if glb_path else assets_dir() / GLB_PATH)))
    verts, faces = _decimated_mesh(hand.vertices, hand.faces)
    weights = _transfer_weights(hand, verts)
    decimated = RiggedHand(verts, faces, weights, hand.joints, hand.tips)
    verts, faces, perm = _reorder_for_tips(verts, faces, _tip_vertices(decimated))
    weights = weights[perm]
    # a fingertip rides on its distal bone alone, so skeleton-only keypoints are exact
    for name, distal in (("thumb", 15), ("index", 3), ("middle", 6), ("ring", 12), ("pinky", 9)):
        weights[TIP_VERTEX_IDS[name]] = np.eye(NUM_JOINTS)[distal]
    joints = hand.joints
    tips = verts[list(TIP_VERTEX_IDS.values())]
    regressor = _joint_regressor(verts, joints)
    # anatomical frames from exactly the keypoints the model will produce at rest
    rest_keypoints = np.concatenate([regressor @ verts, tips])
    hands_mean = relaxed_hands_mean(rest_keypoints)
    kintree = np.stack([PARENTS.astype(np.int64), np.arange(NUM_JOINTS)])
    kintree[0, 0] = 4294967295  # as in MANO's files (uint32 -1)
    return {
        "v_template": verts.astype(np.float64),
        "f": faces.astype(np.uint32),
        "J_regressor": regressor,
        "J": joints,
        "weights": weights,
        "posedirs": correctives.fit_pose_correctives(verts, faces, weights, regressor @ verts, PARENTS,
                                                     _corrective_samples(rest_keypoints)),
        "shapedirs": _shape_blend_shapes(verts, weights, joints, tips),
        "kintree_table": kintree,
        "hands_components": _pose_synergies(rest_keypoints, hands_mean),
        "hands_mean": hands_mean,
        "hands_coeffs": np.zeros((1, 45)),
        "bs_style": np.array("lbs"),
        "bs_type": np.array("lrotmin"),
        "standin_version": np.array(STANDIN_VERSION),
        "build_key": np.array(build_key()),
    }


def mirror_model(right: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The left hand as the mirror (x -> -x) of a right model, with faces re-wound."""
    left = dict(right)
    m = np.array([-1.0, 1.0, 1.0])
    left["v_template"] = right["v_template"] * m
    left["J"] = right["J"] * m
    left["f"] = right["f"][:, [0, 2, 1]]
    left["shapedirs"] = right["shapedirs"] * m[None, :, None]
    # a mirrored rotation M R M has axis-angle (x, -y, -z), and pose features M (R - I) M: entry
    # (a, b) of each joint's block changes sign with m_a m_b; the corrective itself is mirrored too
    feature_sign = np.tile(np.outer(m, m).reshape(-1), NUM_JOINTS - 1)
    left["posedirs"] = right["posedirs"] * m[None, :, None] * feature_sign[None, None, :]
    am = np.tile(np.array([1.0, -1.0, -1.0]), 15)
    left["hands_mean"] = right["hands_mean"] * am
    left["hands_components"] = right["hands_components"] * am[None, :]
    return left
