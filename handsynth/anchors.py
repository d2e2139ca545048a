"""Contact anchors and the attraction loss L_A of RenderIH.

Anchors are surface points where hands tend to touch: over the raw interacting poses, the vertices
most often within 2 cm of the other hand with opposing normals (n_l . n_r < -0.6), picked greedily
with neighbours within 2 mesh hops suppressed. Each anchor is stored as a face and barycentric
weights (the centroid of the incident face that best matches the vertex normal), so it follows
the posed surface and has a face normal for the pairing rule.

Pairs: for each left anchor, its 4 nearest right anchors whose face normals oppose
(n_i . n_j < -0.6), weighted k = 0.3 (0.5 cos(pi d / 1.5 cm) + 0.5) for d < 1.5 cm, else 0;
L_A = sum k |a_i - a_j|^2 / (number of pairs with k > 0).

The frequencies are counted over a bounded sample of the raw poses (:func:`anchor_sample`, at most
:data:`SAMPLE_SIZE`), chosen by a hash of the settings' seed and each pose's id: the cost stays
fixed at dataset size (1.4M raw frames), and adding poses only swaps in those that hash lower.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.seeds import seed_for

SIDES = ("right", "left")
OPPOSING_COS = -0.6
CONTACT_RADIUS = 0.02
PAIR_RADIUS = 0.015
PAIRS_PER_ANCHOR = 4
#: Raw poses the contact frequencies are counted over, at most.
SAMPLE_SIZE = 4096


def anchor_sample(table: PoseTable, seed: int, size: int = SAMPLE_SIZE) -> PoseTable:
    """The ``size`` poses of ``table`` whose ``seed_for("anchor sample", seed, pose id)`` is lowest
    (all of them if fewer), in table order: a choice by stable ids, not by position."""
    if len(table) <= size:
        return table
    keys = np.array([seed_for("anchor sample", seed, str(pid)) for pid in table.pose_ids], dtype=np.int64)
    return table.take(np.sort(np.argpartition(keys, size - 1)[:size]))


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) -> unit face normals (B, F, 3)."""
    tri = verts[:, faces]
    n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (B, V, 3)."""
    tri = verts[:, faces]
    fn = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    vn = torch.zeros_like(verts)
    for k in range(3):
        vn.index_add_(1, faces[:, k], fn)
    return vn / vn.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class Anchors:
    """Per side: anchor face ids (A,), barycentric weights (A, 3), source vertex ids, frequency."""

    face_ids: dict[str, np.ndarray]
    barycentric: dict[str, np.ndarray]
    vertex_ids: dict[str, np.ndarray]
    frequency: dict[str, np.ndarray]

    def to_json(self) -> dict:
        return {f: {s: getattr(self, f)[s].tolist() for s in SIDES}
                for f in ("face_ids", "barycentric", "vertex_ids", "frequency")}

    @classmethod
    def from_json(cls, data: dict) -> "Anchors":
        dtypes = {"face_ids": np.int64, "barycentric": np.float64, "vertex_ids": np.int64, "frequency": np.float64}
        return cls(**{f: {s: np.asarray(data[f][s], dtype=d) for s in SIDES} for f, d in dtypes.items()})

    def points(self, side: str, verts: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed anchor positions and face normals, each (B, A, 3)."""
        fid = torch.as_tensor(self.face_ids[side], device=verts.device)
        bary = torch.as_tensor(self.barycentric[side], dtype=verts.dtype, device=verts.device)
        tri = verts[:, faces[fid]]                                            # (B, A, 3, 3)
        pos = (tri * bary[None, :, :, None]).sum(dim=2)
        n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)  # anchor faces only
        return pos, n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def contact_frequency(model: HandModel, table: PoseTable, batch: int = 32) -> dict[str, np.ndarray]:
    """How often (share of poses) each vertex is within 2 cm of the other hand, normals opposing."""
    counts = {s: np.zeros(778) for s in SIDES}
    faces = {s: torch.as_tensor(model.faces(s), device=model.device) for s in SIDES}
    with torch.no_grad():
        for start in range(0, len(table), batch):
            part = table.take(np.arange(start, min(start + batch, len(table))))
            verts = {s: model.forward_numpy(s, part.hand(s)).vertices for s in SIDES}
            normals = {s: vertex_normals(verts[s], faces[s]) for s in SIDES}
            for side, other in (("right", "left"), ("left", "right")):
                d = torch.cdist(verts[side], verts[other])                     # (B, V, V)
                d = torch.where(torch.einsum("bvc,bwc->bvw", normals[side], normals[other]) < OPPOSING_COS, d, torch.inf)
                counts[side] += (d.amin(dim=2) < CONTACT_RADIUS).sum(dim=0).cpu().numpy()
    return {s: c / max(len(table), 1) for s, c in counts.items()}


def _neighbours_within(faces: np.ndarray, hops: int) -> list[set[int]]:
    adj = [set() for _ in range(778)]
    for f in faces:
        for a in f:
            adj[a].update(int(b) for b in f if b != a)
    out = []
    for v in range(778):
        ring, frontier = {v}, {v}
        for _ in range(hops):
            frontier = set().union(*(adj[u] for u in frontier)) - ring
            ring |= frontier
        out.append(ring)
    return out


def select_anchors(model: HandModel, table: PoseTable, n_per_hand: int = 100, hops: int = 2) -> Anchors:
    """Greedy anchors per hand from contact frequency with non-maximum suppression over mesh hops."""
    freq = contact_frequency(model, table)
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in ("face_ids", "barycentric", "vertex_ids", "frequency")}
    z = torch.zeros(1, 3, device=model.device)
    for side in SIDES:
        faces = model.faces(side)
        rest = model.forward(side, z, torch.zeros(1, 45, device=model.device), torch.zeros(1, 10, device=model.device), z).vertices
        fn = face_normals(rest, torch.as_tensor(faces, device=model.device))[0].cpu().numpy()
        vn = vertex_normals(rest, torch.as_tensor(faces, device=model.device))[0].cpu().numpy()
        near = _neighbours_within(faces, hops)
        order = np.lexsort((np.arange(778), -freq[side]))                     # most frequent first
        suppressed, chosen = np.zeros(778, dtype=bool), []
        for v in order:
            if not suppressed[v]:
                chosen.append(int(v))
                suppressed[list(near[v])] = True
            if len(chosen) == n_per_hand:
                break
        incident = [np.flatnonzero((faces == v).any(axis=1)) for v in chosen]
        face_ids = np.array([inc[np.argmax(fn[inc] @ vn[v])] for v, inc in zip(chosen, incident)])
        out["face_ids"][side] = face_ids
        out["barycentric"][side] = np.full((len(chosen), 3), 1.0 / 3.0)
        out["vertex_ids"][side] = np.array(chosen)
        out["frequency"][side] = freq[side][chosen]
    return Anchors(**out)


def build_pairs(pos_l: torch.Tensor, n_l: torch.Tensor, pos_r: torch.Tensor, n_r: torch.Tensor,
                active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each left anchor its 4 nearest opposing right anchors: indices and weights (B, A_l, 4)."""
    with torch.no_grad():
        d = torch.cdist(pos_l, pos_r)                                          # (B, A_l, A_r)
        opposing = torch.einsum("bic,bjc->bij", n_l, n_r) < OPPOSING_COS
        d = torch.where(opposing, d, torch.inf)
        dist, idx = d.topk(PAIRS_PER_ANCHOR, dim=2, largest=False)
        k = torch.where(dist < PAIR_RADIUS, 0.3 * (0.5 * torch.cos(torch.pi * dist / PAIR_RADIUS) + 0.5),
                        torch.zeros_like(dist))
        if active is not None:
            k = k * active[:, None, None]
    return idx, k


def attraction_loss(pos_l: torch.Tensor, pos_r: torch.Tensor, idx: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """L_A per pose (B,) in cm^2: weighted squared pair distances over the number of live pairs."""
    b = torch.arange(pos_l.shape[0], device=pos_l.device)[:, None, None]
    partner = pos_r[b, idx]                                                    # (B, A_l, 4, 3)
    sq = ((pos_l[:, :, None] - partner) * 100.0).pow(2).sum(-1)
    return (k * sq).sum(dim=(1, 2)) / (k > 0).sum(dim=(1, 2)).clamp_min(1)


def closest_pair_mm(pos_l: torch.Tensor, n_l: torch.Tensor, pos_r: torch.Tensor, n_r: torch.Tensor) -> torch.Tensor:
    """Distance (B,) in mm of the closest left/right anchor pair with opposing normals (contact)."""
    with torch.no_grad():
        d = torch.cdist(pos_l, pos_r)
        d = torch.where(torch.einsum("bic,bjc->bij", n_l, n_r) < OPPOSING_COS, d, torch.inf)
        return d.flatten(1).amin(dim=1) * 1000.0


def anchors_json_bytes(anchors: Anchors) -> bytes:
    return json.dumps(anchors.to_json(), sort_keys=True).encode()
