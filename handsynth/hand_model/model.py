"""Two MANO hands behind one interface, for real MANO files and the generated stand-in alike.

Both sources end in ``smplx.MANO``: files are read by :mod:`mano_files` (pickles through an
allow-list unpickler, ``.npz`` with ``allow_pickle=False``), validated, and handed over as a
``data_struct``. smplx never opens a file itself, because its own loader calls ``pickle.load`` /
``np.load(allow_pickle=True)``, which run code planted in a model file. The stand-in is written
as ``MANO_RIGHT.npz`` / ``MANO_LEFT.npz`` and read back exactly as a user's ``.npz`` files are.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import smplx
import torch
import torch.nn.functional as F
from smplx.utils import Struct

from handsynth import keypoints
from handsynth.hand_model import mano_files, parts, standin, uv
from handsynth.rotations import aa_to_matrix

log = logging.getLogger(__name__)

SIDES = ("right", "left")
#: Fingertip vertices, thumb, index, middle, ring, pinky (the InterHand2.6M family's, see keypoints).
TIP_VERTEX_IDS = tuple(keypoints.TIP_VERTEX_IDS.values())
#: The joint whose bone carries each fingertip (thumb IP, index/middle/ring/pinky DIP).
TIP_PARENT_JOINTS = (15, 3, 6, 12, 9)
TIP_IDS_T = torch.tensor(TIP_VERTEX_IDS)


@dataclass
class HandOutput:
    vertices: torch.Tensor   # (B, 778, 3) metres
    joints: torch.Tensor     # (B, 16, 3) MANO joint order
    keypoints: torch.Tensor  # (B, 21, 3) joints + tips (thumb, index, middle, ring, pinky)


@dataclass
class ShapedHands:
    """What a hand's shape alone fixes (see :meth:`HandModel.shaped`); no grad."""

    v_shaped: torch.Tensor     # (B, 778, 3) v_template + shapedirs . betas
    rest_joints: torch.Tensor  # (B, 16, 3) J_regressor . v_shaped
    _coordinate_major: torch.Tensor | None = field(default=None, repr=False)

    def coordinate_major(self) -> torch.Tensor:
        """v_shaped as (B, 3 * 778), x of every vertex then y then z (the layout posed works in)."""
        if self._coordinate_major is None:
            self._coordinate_major = self.v_shaped.transpose(1, 2).reshape(self.v_shaped.shape[0], -1).contiguous()
        return self._coordinate_major


@dataclass
class ChainLevels:
    """A kinematic tree grouped by depth, for :func:`level_rigid_transform`.

    ``levels``: one ``(joints, parent_slots)`` pair per level below the root: the level's joint
    indices and, for each, its parent's position within the previous level's joint list (a
    parent is always exactly one level up). For MANO: the 5 first phalanges, the 5 second, the 5
    third. ``inverse``: where each joint sits in the level-by-level order, or None when that order
    is already 0..J-1.
    """

    levels: list[tuple[torch.Tensor, torch.Tensor]]
    inverse: torch.Tensor | None

    @classmethod
    def from_parents(cls, parents: torch.Tensor, device: torch.device | str = "cpu") -> "ChainLevels":
        par = [int(x) for x in parents.tolist()]
        if par[0] >= 0:
            raise ValueError(f"kinematic tree must have its root at index 0: {par}")
        depth = [0] * len(par)
        for j in range(1, len(par)):                 # smplx's own chain requires parents[j] < j too
            if not 0 <= par[j] < j:
                raise ValueError(f"joint {j}: parent {par[j]} does not precede it")
            depth[j] = depth[par[j]] + 1
        levels, prev, order = [], [0], [0]
        for d in range(1, max(depth, default=0) + 1):
            joints = [j for j in range(len(par)) if depth[j] == d]
            levels.append((torch.tensor(joints, device=device),
                           torch.tensor([prev.index(par[j]) for j in joints], device=device)))
            prev = joints
            order += joints
        inverse = None if order == list(range(len(par))) else torch.argsort(torch.tensor(order)).to(device)
        return cls(levels, inverse)


def level_rigid_transform(rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor,
                          chain: ChainLevels) -> tuple[torch.Tensor, torch.Tensor]:
    """``smplx.lbs.batch_rigid_transform`` with the chain composed one tree level at a time.

    rot_mats (B, J, 3, 3), joints (B, J, 3) -> posed joints (B, J, 3) and the relative transforms
    (B, J, 4, 4): the same products as smplx's (parent @ local), one batched matmul per level.
    """
    joints = joints[..., None]                                              # (B, J, 3, 1)
    rel_joints = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, parents[1:]]], dim=1)
    local = torch.cat([F.pad(rot_mats, [0, 0, 0, 1]), F.pad(rel_joints, [0, 0, 0, 1], value=1)], dim=3)  # (B, J, 4, 4)
    prev = local[:, :1]
    out = [prev]
    for idx, slot in chain.levels:
        prev = torch.matmul(prev[:, slot], local[:, idx])
        out.append(prev)
    transforms = torch.cat(out, dim=1)
    if chain.inverse is not None:
        transforms = transforms[:, chain.inverse]
    posed_joints = transforms[:, :, :3, 3]
    joints_homogen = F.pad(joints, [0, 0, 0, 1])
    rel = transforms - F.pad(torch.matmul(transforms, joints_homogen), [3, 0, 0, 0, 0, 0, 0, 0])
    return posed_joints, rel


def default_cache_dir() -> Path:
    return Path(os.environ.get("HANDSYNTH_CACHE", Path.home() / ".cache" / "handsynth"))


def _digest(arrays: dict[str, dict[str, Any]]) -> str:
    """Hash of both hands' model arrays: a changed left file must change the model's identity too."""
    h = hashlib.sha256()
    for side in SIDES:
        h.update(side.encode())
        for key in sorted(mano_files.MANO_SCHEMA):
            h.update(key.encode())
            h.update(np.ascontiguousarray(np.asarray(arrays[side][key], dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def _mano_layers(folder: Path, arrays: dict[str, dict[str, Any]]) -> dict[str, smplx.MANO]:
    """smplx layers built from already read and validated arrays (smplx opens no file)."""
    return {
        side: smplx.MANO(str(folder), is_rhand=side == "right", data_struct=Struct(**arrays[side]),
                         use_pca=False, flat_hand_mean=False)
        for side in SIDES
    }


@dataclass
class HandModel:
    """Right and left MANO layers plus the part structure used by penetration and rendering."""

    layers: dict[str, smplx.MANO]
    identity: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        self._chains: dict[tuple[str, str], ChainLevels] = {}
        self._skin: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        weights = self.layers["right"].lbs_weights.detach().cpu().numpy()
        self.part_labels: np.ndarray = parts.vertex_part_labels(weights)  # (778,)
        self._open_faces = {s: self.layers[s].faces.astype(np.int64) for s in SIDES}
        self._faces = {s: parts.fill_loops(self._open_faces[s], f"{self.name} ({s})") for s in SIDES}
        right_face_labels = parts.face_part_labels(self._faces["right"], weights)
        self.face_labels = {"right": right_face_labels, "left": right_face_labels}
        self._part_meshes = {
            s: parts.build_part_meshes(self._faces[s], self.face_labels[s], f"{self.name} ({s})") for s in SIDES
        }

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def standin(cls, cache_dir: str | os.PathLike | None = None, device: str = "cpu") -> "HandModel":
        """The generated stand-in (NOT MANO), built once and cached as MANO-schema ``.npz`` files.

        A cached copy records the build key of the code that made it (:func:`standin.build_key`);
        one made by other generator code is made again, so that every machine running the same
        code has the same stand-in.
        """
        folder = Path(cache_dir or default_cache_dir()) / standin.STANDIN_VERSION
        paths = {side: folder / f"MANO_{side.upper()}.npz" for side in SIDES}
        key = standin.build_key()
        arrays = None
        if all(p.exists() for p in paths.values()):
            arrays = {side: mano_files.read_mano_file(p) for side, p in paths.items()}
            if any(str(arrays[side].get("build_key", "")) != key for side in SIDES):
                log.info("the stand-in cached in %s was built by other code; generating it again", folder)
                arrays = None
        if arrays is None:
            log.info("generating the stand-in hand model into %s", folder)
            right = standin.generate_standin_model()
            mano_files.write_npz(paths["left"], standin.mirror_model(right))
            mano_files.write_npz(paths["right"], right)
            arrays = {side: mano_files.read_mano_file(p) for side, p in paths.items()}
        layers = _mano_layers(folder, arrays)
        identity = {
            "kind": "standin",
            "is_standin": True,
            "name": f"generated stand-in hand ({standin.STANDIN_VERSION}), not MANO",
            "version": standin.STANDIN_VERSION,
            "digest": _digest(arrays),
            "source": str(folder),
        }
        return cls(layers, identity, torch.device(device)).to(device)

    @classmethod
    def from_mano_folder(cls, folder: str | os.PathLike, device: str = "cpu") -> "HandModel":
        """Real MANO from ``MANO_RIGHT``/``MANO_LEFT`` ``.pkl`` or ``.npz`` files in ``folder``."""
        folder = Path(folder)
        if not folder.is_dir():
            raise mano_files.ManoModelError(f"{folder}: MANO model folder not found")
        arrays = {}
        for side in SIDES:
            name = f"MANO_{side.upper()}"
            path = next((folder / f"{name}{ext}" for ext in (".pkl", ".npz") if (folder / f"{name}{ext}").is_file()), None)
            if path is None:
                raise mano_files.ManoModelError(f"{folder}: no {name}.pkl or {name}.npz in the MANO model folder")
            arrays[side] = mano_files.read_mano_file(path)
        fixed = mano_files.fix_left_shapedirs(arrays["left"], arrays["right"])
        layers = _mano_layers(folder, arrays)
        identity = {
            "kind": "mano",
            "is_standin": False,
            "name": "MANO",
            "version": "mano-files",
            "digest": _digest(arrays),
            "source": str(folder),
            "left_shapedirs_fixed": fixed,
        }
        return cls(layers, identity, torch.device(device)).to(device)

    def to(self, device: str | torch.device) -> "HandModel":
        self.device = torch.device(device)
        for layer in self.layers.values():
            layer.to(self.device)
            layer.requires_grad_(False)
        return self

    # ---- properties ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.identity["name"])

    @property
    def is_standin(self) -> bool:
        return bool(self.identity["is_standin"])

    def faces(self, side: str) -> np.ndarray:
        """Triangles (F, 3) of the hand's closed surface, the left hand's wound for its mirrored
        geometry: the model's own plus a flat cap over the wrist opening (MANO and the stand-in are
        open there), made of the opening's own vertices. What renders, labels and checks see."""
        return self._faces[side]

    def open_faces(self, side: str) -> np.ndarray:
        """The model's own triangles, open at the wrist: what a forearm joins (see :meth:`wrist_loop`)."""
        return self._open_faces[side]

    def uv_layout(self, side: str) -> uv.UVLayout:
        """Texture coordinates for ``side``: one layout per model (cached by digest), mirrored for the left."""
        if not hasattr(self, "_uv_layouts"):
            right = uv.cached_uv_layout(default_cache_dir(), self.identity["digest"],
                                        self.layers["right"].v_template.detach().cpu().numpy(), self._faces["right"])
            self._uv_layouts = {"right": right, "left": uv.mirrored_layout(right, self._faces["right"], self._faces["left"])}
        return self._uv_layouts[side]

    def wrist_loop(self, side: str) -> np.ndarray:
        """Vertex ids (L,) of the hand's open wrist, in the direction of its boundary edges (a face
        holds the edge loop[i] -> loop[i + 1]): where a forearm attaches (MANO and the stand-in are
        both open there)."""
        loops = parts.boundary_loops(self._open_faces[side], f"{self.name} ({side})")
        if len(loops) != 1:
            raise ValueError(f"{self.name} ({side}): expected one open wrist loop, found {len(loops)} boundary loops")
        return np.asarray(loops[0], dtype=np.int64)

    def part_meshes(self, side: str) -> list[parts.PartMesh]:
        return self._part_meshes[side]

    def hands_mean(self, side: str) -> torch.Tensor:
        """(45,) the relaxed pose MANO adds to ``hand_pose`` (flat_hand_mean=False)."""
        return self.layers[side].hand_mean

    def full_finger_pose(self, side: str, hand_pose: torch.Tensor) -> torch.Tensor:
        """Articulated finger rotations (B, 45) = ``hand_pose`` + ``hands_mean``."""
        return hand_pose + self.hands_mean(side)

    # ---- forward -------------------------------------------------------------------------
    def forward(
        self,
        side: str,
        global_orient: torch.Tensor | np.ndarray,  # (B, 3)
        hand_pose: torch.Tensor | np.ndarray,      # (B, 45), MANO convention (relative to hands_mean)
        betas: torch.Tensor | np.ndarray,          # (B, 10)
        transl: torch.Tensor | np.ndarray,         # (B, 3) metres
    ) -> HandOutput:
        layer = self.layers[side]
        t = [torch.as_tensor(x, dtype=torch.float32, device=self.device) for x in (global_orient, hand_pose, betas, transl)]
        out = layer(global_orient=t[0], hand_pose=t[1], betas=t[2][:, : layer.num_betas], transl=t[3])
        tips = out.vertices[:, list(TIP_VERTEX_IDS)]
        return HandOutput(out.vertices, out.joints, torch.cat([out.joints, tips], dim=1))

    def forward_numpy(self, side: str, params: dict[str, np.ndarray], batch: int = 4096) -> HandOutput:
        """Forward for a pose table's hand block (``PoseTable.hand(side)``), in chunks, no grad."""
        outs = []
        n = len(params["hand_pose"])
        with torch.no_grad():
            for s in range(0, n, batch):
                sl = slice(s, s + batch)
                outs.append(self.forward(side, params["global_orient"][sl], params["hand_pose"][sl],
                                         params["betas"][sl], params["transl"][sl]))
        return HandOutput(*(torch.cat([getattr(o, k) for o in outs]) for k in ("vertices", "joints", "keypoints")))

    def joint_transforms(
        self,
        side: str,
        global_orient: torch.Tensor,  # (B, 3)
        hand_pose: torch.Tensor,      # (B, 45), MANO convention
        betas: torch.Tensor,          # (B, 10)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Skeleton-only forward kinematics, no skinning (differentiable).

        Returns the posed joints (B, 16, 3) (before ``transl``), each joint's rigid transform
        from the shaped rest pose (B, 16, 4, 4) — what LBS applies to a vertex skinned to that
        joint alone — and the shaped rest joints (B, 16, 3).
        """
        layer = self.layers[side]
        rest_joints = self._rest_joints(side, self._shaped_vertices(side, betas))
        rot = self._rotations(side, global_orient, hand_pose)
        posed_joints, rel = level_rigid_transform(rot, rest_joints, layer.parents, self._chain(side))
        return posed_joints, rel, rest_joints

    # ---- fixed-shape fast path -----------------------------------------------------------
    def shaped(self, side: str, betas: torch.Tensor | np.ndarray) -> ShapedHands:
        """What ``betas`` (B, 10) alone fix: shaped rest vertices and joints (no grad).

        Compute once per batch of fixed shapes, then call :meth:`posed` every iteration.
        """
        betas = torch.as_tensor(betas, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            v_shaped = self._shaped_vertices(side, betas)
            shaped = ShapedHands(v_shaped, self._rest_joints(side, v_shaped))
        shaped.coordinate_major()
        return shaped

    def posed(
        self,
        side: str,
        shaped: ShapedHands,
        global_orient: torch.Tensor,  # (B, 3)
        hand_pose: torch.Tensor,      # (B, 45), MANO convention (relative to hands_mean)
        transl: torch.Tensor,         # (B, 3) metres
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward`'s vertices (B, 778, 3) for shapes fixed in ``shaped``, and the joint
        transforms ``rel`` (B, 16, 4, 4) that :meth:`joint_transforms` returns (before ``transl``).

        The same LBS as smplx (rotations, pose correctives, rigid chain, skinning) with the
        shape terms precomputed and the chain composed a tree level at a time; differentiable in
        the pose and ``transl``.
        """
        layer = self.layers[side]
        bsz = hand_pose.shape[0]
        rot = self._rotations(side, global_orient, hand_pose)                       # (B, 16, 3, 3)
        ident = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - ident).reshape(bsz, -1)                        # (B, 135)
        nv = shaped.v_shaped.shape[1]
        v_shaped_t, rest_joints = shaped.coordinate_major(), shaped.rest_joints
        if v_shaped_t.shape[0] != bsz:
            v_shaped_t, rest_joints = v_shaped_t.expand(bsz, -1), rest_joints.expand(bsz, -1, -1)
        posedirs_t, weights_t = self._skin_arrays(side)
        # computed coordinate-major (B, 3, V): the per-vertex products then run along contiguous
        # vertex rows (smplx's matmul per vertex is a bmm of B * 778 tiny matrices, slow on CPU)
        v_posed = torch.addmm(v_shaped_t, pose_feature, posedirs_t).view(bsz, 3, 1, nv)
        _, rel = level_rigid_transform(rot, rest_joints, layer.parents, self._chain(side))
        nj = rel.shape[1]
        # blended transforms, top three rows (the fourth is 0 0 0 1): (B, 12, J) @ (J, V)
        t = torch.matmul(rel[:, :, :3].reshape(bsz, nj, 12).transpose(1, 2), weights_t).view(bsz, 3, 4, nv)
        t0, t1, t2, t3 = t.unbind(2)                # unbind, not slices: no zero-filled gradients
        x, y, z = v_posed.unbind(1)
        verts = (t0 * x + t1 * y + t2 * z + t3 + transl[:, :, None]).transpose(1, 2).contiguous()
        return verts, rel

    def _rest_joints(self, side: str, v_shaped: torch.Tensor) -> torch.Tensor:
        """(B, 16, 3) joints of shaped rest vertices (B, 778, 3), as smplx's ``vertices2joints``."""
        return torch.einsum("bik,ji->bjk", v_shaped, self.layers[side].J_regressor)

    def _rotations(self, side: str, global_orient: torch.Tensor, hand_pose: torch.Tensor) -> torch.Tensor:
        """(B, 16, 3, 3) rotations of the full pose (global_orient, hand_pose + hands_mean)."""
        full = torch.cat([global_orient, hand_pose + self.layers[side].hand_mean], dim=1)  # (B, 48)
        return aa_to_matrix(full.reshape(-1, 3)).reshape(hand_pose.shape[0], -1, 3, 3)

    def _skin_arrays(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """posedirs (P, 3 * V) coordinate-major and the skinning weights transposed (J, V)."""
        key = (side, str(self.device))
        if key not in self._skin:
            layer = self.layers[side]
            nv = layer.lbs_weights.shape[0]
            pd = layer.posedirs.view(-1, nv, 3).permute(0, 2, 1).reshape(-1, 3 * nv).contiguous()
            self._skin[key] = (pd, layer.lbs_weights.t().contiguous())
        return self._skin[key]

    def _chain(self, side: str) -> ChainLevels:
        key = (side, str(self.device))
        if key not in self._chains:
            self._chains[key] = ChainLevels.from_parents(self.layers[side].parents, self.device)
        return self._chains[key]

    def _shaped_vertices(self, side: str, betas: torch.Tensor) -> torch.Tensor:
        layer = self.layers[side]
        return layer.v_template + torch.einsum("bl,vcl->bvc", betas[:, : layer.num_betas], layer.shapedirs)

    def keypoints_fk(
        self,
        side: str,
        global_orient: torch.Tensor,  # (B, 3)
        hand_pose: torch.Tensor,      # (B, 45), MANO convention
        betas: torch.Tensor,          # (B, 10)
        transl: torch.Tensor,         # (B, 3)
    ) -> torch.Tensor:
        """(B, 21, 3) keypoints by forward kinematics of the skeleton alone, no skinning.

        Fingertips ride rigidly on their distal bone. That is exact where a tip vertex is
        skinned to that bone alone without pose correctives (the stand-in) and about a millimetre
        off where the tips carry correctives, which are skipped (median 1.0 mm, at most 2.3 mm on
        the MANO-like test model's random poses); it is ~50x cheaper than the full mesh, which
        matters when keypoints of every InterHand2.6M frame are needed (deduplication).
        """
        layer = self.layers[side]
        ids = TIP_IDS_T.to(self.device)
        rest_tips = layer.v_template[ids] + torch.einsum("bl,vcl->bvc", betas[:, : layer.num_betas], layer.shapedirs[ids])
        posed_joints, rel, _ = self.joint_transforms(side, global_orient, hand_pose, betas)
        a = rel[:, list(TIP_PARENT_JOINTS)]                                     # (B, 5, 4, 4)
        tips = torch.einsum("btij,btj->bti", a[..., :3, :3], rest_tips) + a[..., :3, 3]
        return torch.cat([posed_joints, tips], dim=1) + transl[:, None]

    def rest_keypoints(self, side: str) -> np.ndarray:
        """(21, 3) keypoints of the flat hand (all rotations zero), mean shape, at the origin."""
        z = torch.zeros(1, 3, device=self.device)
        with torch.no_grad():
            out = self.forward(side, z, -self.hands_mean(side)[None], torch.zeros(1, 10, device=self.device), z)
        return out.keypoints[0].cpu().numpy()
