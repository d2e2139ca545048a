"""The 16 near-convex hand parts: a label per vertex and a closed (capped) mesh per part.

RenderIH measures interpenetration against each part separately, because one signed distance
field of the whole, concave hand misses fingers pushed between other fingers. A part is the skin
a joint's bone carries (argmax skinning weight); its open boundary rings are closed by a fan
around the ring's centroid. The centroid is an average of ring vertices, so a part mesh keeps
a fixed topology and follows the posed hand exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

NUM_PARTS = 16
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def vertex_part_labels(weights: np.ndarray) -> np.ndarray:
    """Part of each vertex: the joint with the largest skinning weight; (V,16) -> (V,)."""
    return np.asarray(weights).argmax(axis=1).astype(np.int64)


def face_part_labels(faces: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Part of each face, made spatially clean so every part is one connected surface patch.

    A face goes to the joint with the largest summed weight over its corners; stray islands
    (a part split into pieces) are then merged into the part that surrounds them.
    """
    faces = np.asarray(faces, dtype=np.int64)
    labels = np.asarray(weights)[faces].sum(axis=1).argmax(axis=1)
    neighbours = _face_neighbours(faces)
    for _ in range(50):
        changed = _merge_islands(labels, neighbours) | _split_pinched_fans(faces, labels, neighbours)
        if not changed:
            return labels
    raise ValueError("hand model: part labelling did not settle into simple patches")


def _relabel(labels: np.ndarray, face_ids: list[int] | np.ndarray, neighbours: list[list[int]]) -> None:
    """Give faces the most common other label among their neighbours."""
    part = labels[face_ids[0]]
    around = [labels[n] for f in face_ids for n in neighbours[f] if labels[n] != part]
    if around:
        labels[np.asarray(face_ids)] = np.bincount(around).argmax()


def _merge_islands(labels: np.ndarray, neighbours: list[list[int]]) -> bool:
    """Merge every piece of a part but its largest into the surrounding part."""
    changed = False
    for part in range(NUM_PARTS):
        comps = _components(np.flatnonzero(labels == part), neighbours)
        for comp in sorted(comps, key=len)[:-1]:
            _relabel(labels, comp, neighbours)
            changed = True
    return changed


def _split_pinched_fans(faces: np.ndarray, labels: np.ndarray, neighbours: list[list[int]]) -> bool:
    """Where a part's faces meet a vertex in several fans (a pinched boundary), keep the largest."""
    changed = False
    vertex_faces: dict[int, list[int]] = {}
    for fi, f in enumerate(faces):
        for v in f:
            vertex_faces.setdefault(int(v), []).append(fi)
    for v, fs in vertex_faces.items():
        for part in set(labels[fs].tolist()):
            own = [f for f in fs if labels[f] == part]
            fans = _fans(v, own, faces)
            for fan in sorted(fans, key=len)[:-1]:
                _relabel(labels, fan, neighbours)
                changed = True
    return changed


def _fans(v: int, own: list[int], faces: np.ndarray) -> list[list[int]]:
    """Group faces around vertex ``v`` into fans: faces sharing an edge through ``v``."""
    fans: list[list[int]] = []
    for f in own:
        others = set(faces[f].tolist()) - {v}
        linked = [fan for fan in fans if any(others & (set(faces[g].tolist()) - {v}) for g in fan)]
        merged = [f] + [g for fan in linked for g in fan]
        fans = [fan for fan in fans if fan not in linked] + [merged]
    return fans


def _face_neighbours(faces: np.ndarray) -> list[list[int]]:
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for fi, f in enumerate(faces):
        for k in range(3):
            e = tuple(sorted((int(f[k]), int(f[(k + 1) % 3]))))
            edge_faces.setdefault(e, []).append(fi)
    nbrs: list[list[int]] = [[] for _ in range(len(faces))]
    for fs in edge_faces.values():
        for a in fs:
            nbrs[a].extend(b for b in fs if b != a)
    return nbrs


def _components(face_ids: np.ndarray, neighbours: list[list[int]]) -> list[np.ndarray]:
    todo, comps = set(int(f) for f in face_ids), []
    while todo:
        stack, comp = [todo.pop()], []
        while stack:
            f = stack.pop()
            comp.append(f)
            for n in neighbours[f]:
                if n in todo:
                    todo.remove(n)
                    stack.append(n)
        comps.append(np.array(comp))
    return comps


def boundary_loops(faces: np.ndarray, where: str) -> list[list[int]]:
    """Oriented boundary loops of an open, consistently wound surface patch."""
    directed = {(int(f[k]), int(f[(k + 1) % 3])) for f in faces for k in range(3)}
    boundary = [(a, b) for a, b in directed if (b, a) not in directed]
    nxt: dict[int, int] = {}
    for a, b in boundary:
        if a in nxt:
            raise ValueError(f"{where}: boundary touches itself at vertex {a} (not a simple ring)")
        nxt[a] = b
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


@dataclass(frozen=True)
class PartMesh:
    """One closed part: hand vertices ``vertex_ids`` plus one cap centre per boundary loop."""

    part: int
    vertex_ids: np.ndarray      # (Vp,) indices into the hand's 778 vertices
    cap_loops: tuple[np.ndarray, ...]  # each (L,) hand vertex ids; cap centre = their mean
    faces: np.ndarray           # (Fp, 3) into [vertex_ids..., cap centres...]

    def posed(self, vertices: torch.Tensor) -> torch.Tensor:
        """Part vertices of posed hands: (B, 778, 3) -> (B, Vp + n_caps, 3)."""
        own = vertices[:, torch.as_tensor(self.vertex_ids, device=vertices.device)]
        caps = [vertices[:, torch.as_tensor(loop, device=vertices.device)].mean(dim=1, keepdim=True)
                for loop in self.cap_loops]
        return torch.cat([own, *caps], dim=1)

    def posed_numpy(self, vertices: np.ndarray) -> np.ndarray:
        """Same as :meth:`posed` for one hand as numpy: (778, 3) -> (Vp + n_caps, 3)."""
        caps = [vertices[loop].mean(axis=0, keepdims=True) for loop in self.cap_loops]
        return np.concatenate([vertices[self.vertex_ids], *caps], axis=0)


def fill_loops(faces: np.ndarray, where: str = "hand model") -> np.ndarray:
    """Faces of an open, consistently wound surface plus a flat cap over each boundary loop, made of
    the loop's own vertices (a fan from its lowest vertex): a closed surface without new vertices.

    The caps are listed by their sorted vertex ids, so a mirrored model (its faces re-wound, its
    loops running the other way) gets the same triangles in the same order, face for face."""
    faces = np.asarray(faces, dtype=np.int64)
    caps = sorted(([loop[0], loop[k + 1], loop[k]] for loop in boundary_loops(faces, where) for k in range(1, len(loop) - 1)),
                  key=sorted)
    return np.concatenate([faces, np.asarray(caps, dtype=np.int64).reshape(-1, 3)])


def close_loops(faces: np.ndarray, where: str = "hand model") -> tuple[np.ndarray, list[np.ndarray]]:
    """Faces of an open, consistently wound surface plus a fan closing each boundary loop around a
    new centre vertex (``V + i`` for loop ``i``, V = the largest index + 1; see
    :func:`with_loop_centres`), and the loops. The centre is the mean of its loop's vertices, so a
    closed surface keeps a fixed topology and follows the posed surface exactly."""
    faces = np.asarray(faces, dtype=np.int64)
    loops = [np.asarray(loop) for loop in boundary_loops(faces, where)]
    n = int(faces.max()) + 1
    # the surface's boundary edge a->b is matched by the cap's b->a
    caps = [[loop[(k + 1) % len(loop)], loop[k], n + i] for i, loop in enumerate(loops) for k in range(len(loop))]
    return np.concatenate([faces, np.asarray(caps, dtype=np.int64).reshape(-1, 3)]), loops


def with_loop_centres(vertices: ArrayT, loops: list[np.ndarray]) -> ArrayT:
    """(..., V, 3) numpy or torch -> (..., V + len(loops), 3): the centres :func:`close_loops` refers to."""
    if isinstance(vertices, torch.Tensor):
        return torch.cat([vertices] + [vertices[..., list(loop), :].mean(dim=-2, keepdim=True) for loop in loops], dim=-2)
    return np.concatenate([vertices] + [vertices[..., loop, :].mean(axis=-2, keepdims=True) for loop in loops], axis=-2)


def build_part_meshes(faces: np.ndarray, face_labels: np.ndarray, where: str = "hand model") -> list[PartMesh]:
    """Close every part's open boundary with a fan around the loop centre."""
    parts = []
    for part in range(NUM_PARTS):
        pf = np.asarray(faces, dtype=np.int64)[face_labels == part]
        if len(pf) == 0:
            raise ValueError(f"{where}: part {part} has no faces")
        vertex_ids = np.unique(pf)
        closed, loops = close_loops(np.searchsorted(vertex_ids, pf), f"{where}, part {part}")
        parts.append(PartMesh(part, vertex_ids, tuple(vertex_ids[loop] for loop in loops), closed))
    return parts
