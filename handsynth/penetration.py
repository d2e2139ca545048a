"""Interpenetration of two hands: signed distances to the other hand's 16 near-convex parts.

One signed distance field of a whole hand misses fingers pushed between other fingers (the hand
is far from convex), so RenderIH measures each vertex against every part of the other hand.
Evaluating exact distances to posed part meshes every iteration is far too slow (~3 s per
iteration for 256 poses on 2 cores), so each part's SDF is sampled ONCE on a grid in its rest
frame, and queries are moved into that frame every iteration:

    q_rest = R_p^T (q - transl - t_p)            (undo the joint's rigid LBS transform)
    q_0    = (q_rest - c_p(beta)) A_p(beta)^-1   (undo the shape: an affine fit of the part)
    sdf    = det(A_p)^(1/3) * grid_p(q_0)         (trilinear, differentiable in q)

A part deforms a little near its joints (skin blends) and a shape change is not exactly affine
per part; both errors are about a millimetre at most (measured in tests and the benchmark), which
is why the independent quality check re-tests kept poses with trimesh containment.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from handsynth.hand_model import parts
from handsynth.hand_model.model import HandModel

SIDES = ("right", "left")
#: A vertex deeper than this inside the other hand counts as penetrating (mm).
PENETRATING_DEPTH_MM = 0.5


# ---- exact signed distance to a closed triangle mesh (build time, references) ----------------------


def closest_point_distance(points: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Unsigned distance of points (P, 3) to triangles (T, 3, 3) -> (P, T) (Ericson, vectorised)."""
    p = points[:, None, :]                                        # (P, 1, 3)
    a, b, c = tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]   # (1, T, 3)
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = (va + vb + vc)
    denom = torch.where(denom.abs() < 1e-30, torch.full_like(denom, 1e-30), denom)
    v = vb / denom
    w = vc / denom
    closest = a + ab * v[..., None] + ac * w[..., None]                      # interior
    # edge and vertex regions, later conditions override earlier ones
    t_ab = (d1 / (d1 - d3).where((d1 - d3).abs() > 1e-30, torch.full_like(d1, 1e-30)))[..., None]
    t_ac = (d2 / (d2 - d6).where((d2 - d6).abs() > 1e-30, torch.full_like(d2, 1e-30)))[..., None]
    den_bc = ((d4 - d3) + (d5 - d6)).where(((d4 - d3) + (d5 - d6)).abs() > 1e-30, torch.full_like(d4, 1e-30))
    t_bc = ((d4 - d3) / den_bc)[..., None]
    on_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    closest = torch.where(on_bc[..., None], b + t_bc * (c - b), closest)
    closest = torch.where(on_ac[..., None], a + t_ac * ac, closest)
    closest = torch.where(on_ab[..., None], a + t_ab * ab, closest)
    closest = torch.where(((d6 >= 0) & (d5 <= d6))[..., None], c.expand_as(closest), closest)
    closest = torch.where(((d3 >= 0) & (d4 <= d3))[..., None], b.expand_as(closest), closest)
    closest = torch.where(((d1 <= 0) & (d2 <= 0))[..., None], a.expand_as(closest), closest)
    return (p - closest).norm(dim=-1)


def winding_number(points: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Generalised winding number of points (P, 3) w.r.t. a closed mesh (T, 3, 3): ~1 inside, ~0 out."""
    a = tri[None, :, 0] - points[:, None]
    b = tri[None, :, 1] - points[:, None]
    c = tri[None, :, 2] - points[:, None]
    la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
    det = (a * torch.cross(b, c, dim=-1)).sum(-1)
    div = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return (2.0 * torch.atan2(det, div)).sum(-1) / (4.0 * math.pi)


def signed_distance(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Exact signed distance (negative inside) of points (P, 3) to a closed mesh; chunked."""
    tri = verts[faces]                                                        # (T, 3, 3)
    out = []
    for s in range(0, len(points), chunk):
        q = points[s:s + chunk]
        d = closest_point_distance(q, tri).amin(dim=1)
        inside = winding_number(q, tri) > 0.5
        out.append(torch.where(inside, -d, d))
    return torch.cat(out) if out else points.new_zeros(0)


def _surface_samples(tri: np.ndarray, spacing: float = 1e-3) -> np.ndarray:
    """~``spacing`` surface samples of triangles (T, 3, 3): a barycentric lattice per triangle."""
    per_tri = np.maximum(1, np.ceil(np.linalg.norm(tri - tri[:, [1, 2, 0]], axis=2).max(axis=1) / spacing)).astype(int)
    chunks = []
    for n in np.unique(per_tri):
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        w = np.stack([i[(i + j) <= n], j[(i + j) <= n]], axis=1) / n
        t = tri[per_tri == n]
        chunks.append((t[:, None, 0] + w[None, :, :1] * (t[:, None, 1] - t[:, None, 0])
                       + w[None, :, 1:] * (t[:, None, 2] - t[:, None, 0])).reshape(-1, 3))
    return np.concatenate(chunks)


def grid_signed_distance(grid_points: np.ndarray, shape: tuple[int, int, int], verts: np.ndarray,
                         faces: np.ndarray, band: float) -> np.ndarray:
    """Signed distance on a regular grid, exact where it matters (within ``band`` of the surface).

    Far from the surface an approximate distance (to dense surface samples) is enough, and the
    sign is constant over each connected far region, so the costly exact distance and winding
    number are computed only for the band and for one point per far region.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    tri = verts[faces]
    approx, _ = cKDTree(_surface_samples(tri)).query(grid_points, workers=-1)
    sdf = approx.copy()
    near = approx < band
    tv, tf = torch.as_tensor(verts), torch.as_tensor(faces)
    if near.any():
        sdf[near] = signed_distance(torch.as_tensor(grid_points[near]), tv, tf).numpy()
    far_labels, _ = ndimage.label((~near).reshape(shape))
    flat = far_labels.reshape(-1)
    labels, first = np.unique(flat, return_index=True)
    reps = first[labels > 0]
    inside = winding_number(torch.as_tensor(grid_points[reps]), torch.as_tensor(tri)).numpy() > 0.5
    sign = np.ones(flat.max() + 1)
    sign[labels[labels > 0]] = np.where(inside, -1.0, 1.0)
    far = flat > 0
    sdf[far] = approx[far] * sign[flat[far]]
    return sdf


def grid_surface_distance(grid_points: np.ndarray, tri: np.ndarray, exact_within: float) -> np.ndarray:
    """Unsigned distance of grid points to a (possibly open) set of triangles (T, 3, 3); exact
    within ``exact_within`` of them, to 0.5 mm surface samples beyond (error well under 0.5 mm)."""
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(_surface_samples(tri, 5e-4)).query(grid_points, workers=-1)
    near = np.flatnonzero(dist < exact_within)
    t = torch.as_tensor(tri)
    for s in range(0, len(near), 4096):
        idx = near[s:s + 4096]
        dist[idx] = closest_point_distance(torch.as_tensor(grid_points[idx]), t).amin(dim=1).numpy()
    return dist


# ---- per-part grids -----------------------------------------------------------------------------

#: Grid cache format; bump when what a grid holds changes.
GRID_FORMAT = 3
#: A query farther than this outside a part's posed bounding box skips that part (m). Depths beyond
#: it can only be over-estimated (fewer parts offer a nearer outer face), never missed.
CULL_MARGIN = 0.010


#: A point whose nearest part face is this much nearer than the nearest outer face lies on a cap,
#: i.e. inside the hand (m); above the grids' interpolation error of the two channels.
CAP_TOLERANCE = 0.0005


@dataclass
class PartGrids:
    """Two fields per part of one hand, sampled in the part's rest frame (mean shape, flat hand).

    values: (16, 2, R, R, R), axes (z, y, x) as grid_sample expects; channel 0 the signed distance
    to the part's closed mesh (says whether a point is inside the part, hence inside the hand),
    channel 1 the unsigned distance to the part's OUTER faces, i.e. without the caps that close it
    inside the hand. The depth of a point inside the hand is the smallest channel-1 value over all
    parts: the union of the parts' outer faces is the whole hand surface, the caps are no surface.
    lo, hi: (16, 3) box corners in the rest frame; fit: per part the pseudo-inverse (4, Vp) of its
    homogeneous mean-shape rest vertices, to fit the affine map to any shape's vertices.
    """

    values: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    part_vertex_ids: list[torch.Tensor]
    fit: list[torch.Tensor]

    @classmethod
    def build(cls, model: HandModel, side: str, resolution: int = 40, margin: float = 0.012) -> "PartGrids":
        rest = _rest_vertices(model, side)
        values, los, his, ids, fits = [], [], [], [], []
        for part in model.part_meshes(side):
            pv = part.posed(rest[None])[0]                                     # (Vp + caps, 3)
            lo, hi = pv.min(0).values - margin, pv.max(0).values + margin
            axes = [np.linspace(float(lo[i]), float(hi[i]), resolution) for i in range(3)]
            zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
            pts = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3)
            voxel = float(((hi - lo) / (resolution - 1)).norm())
            sdf = grid_signed_distance(pts, (resolution,) * 3, pv.numpy(), part.faces, band=voxel)
            outer = part.faces[(part.faces < len(part.vertex_ids)).all(axis=1)]
            surface = grid_surface_distance(pts, pv.numpy()[outer], exact_within=voxel)
            values.append(torch.as_tensor(np.stack([sdf, surface])).reshape(2, resolution, resolution, resolution))
            los.append(lo)
            his.append(hi)
            own = rest[torch.as_tensor(part.vertex_ids)]
            homog = torch.cat([own, torch.ones(len(own), 1, dtype=own.dtype)], dim=1)  # (Vp, 4)
            ids.append(torch.as_tensor(part.vertex_ids, device=model.device))
            fits.append(torch.linalg.pinv(homog).float().to(model.device))           # (4, Vp)
        return cls(
            values=torch.stack(values).float().to(model.device),
            lo=torch.stack(los).float().to(model.device),
            hi=torch.stack(his).float().to(model.device),
            part_vertex_ids=ids,
            fit=fits,
        )

    def shape_maps(self, shaped_rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per part affine map mean shape -> given shapes: A (B, 16, 3, 3), c (B, 16, 3)."""
        coef = torch.stack([fit @ shaped_rest[:, ids] for fit, ids in zip(self.fit, self.part_vertex_ids)], dim=1)
        return coef[:, :, :3], coef[:, :, 3]                                    # x0 @ A + c

    def atlas(self) -> torch.Tensor:
        """All parts' grids stacked along z into one volume (1, 2, 16 R, R, R): one grid_sample call
        serves any mix of (query, part) pairs."""
        n, c, r = self.values.shape[:3]
        return self.values.permute(1, 0, 2, 3, 4).reshape(1, c, n * r, r, r)

    def holds(self, points: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """(K,) whether rest-frame points (K, 3) lie in their part's grid box, where the grids are
        exact enough to tell a closing cap from the outside."""
        return ((points >= self.lo[part]) & (points <= self.hi[part])).all(dim=-1)

    def sample_pairs(self, atlas: torch.Tensor, points: torch.Tensor, part: torch.Tensor,
                     channels: slice = slice(0, 2)) -> torch.Tensor:
        """Fields of (query, part) pairs: rest-frame points (K, 3) and part ids (K,) -> (K, C).

        Trilinear inside each part's box (clamped to it, so samples never bleed into the next
        part of the atlas); outside, the distance to the box is added to the border value.
        """
        n, r = self.values.shape[0], self.values.shape[2]
        lo, hi = self.lo[part], self.hi[part]
        inside = torch.minimum(torch.maximum(points, lo), hi)
        outside = (points - inside).norm(dim=-1)
        u = (inside - lo) / (hi - lo) * 2.0 - 1.0                                  # [-1, 1] per part
        z = ((u[:, 2] + 1.0) * 0.5 * (r - 1) + part * r) / (n * r - 1) * 2.0 - 1.0  # atlas z
        grid = torch.stack([u[:, 0], u[:, 1], z], dim=-1)[None, :, None, None]     # (1, K, 1, 1, 3)
        out = F.grid_sample(atlas[:, channels], grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out[0, :, :, 0, 0].T + outside[:, None]


@dataclass
class ShapeTerms:
    """What depends only on a hand's shape (fixed while optimizing): computed once per batch."""

    a_inv: torch.Tensor     # (B, 16, 3, 3) inverse affine part maps
    c: torch.Tensor         # (B, 16, 3)
    scale: torch.Tensor     # (B, 16) det(A)^(1/3): grid distances -> this shape's distances


class PenetrationField:
    """Depths of one hand's points inside the OTHER hand, for batches of poses.

    Per query vertex: the parts whose posed bounding box (plus :data:`CULL_MARGIN`) holds it are its
    candidates (typically a few percent of all vertex-part pairs); all candidates are sampled in
    one atlas grid_sample without gradients; a vertex is inside the hand when it is inside any
    part, and its depth is the distance to the nearest outer face over its candidate parts. Only
    the winning (vertex, part) pair of each penetrating vertex is evaluated again with gradients.
    """

    def __init__(self, model: HandModel, resolution: int = 40, cache_dir: str | None = None) -> None:
        self.model = model
        self.grids = {side: _cached_grids(model, side, resolution, cache_dir) for side in SIDES}
        self.atlas = {side: self.grids[side].atlas() for side in SIDES}
        part_ids = {side: torch.cat([torch.full_like(ids, p) for p, ids in enumerate(self.grids[side].part_vertex_ids)])
                    for side in SIDES}
        self._box_index = {side: (torch.cat(self.grids[side].part_vertex_ids), part_ids[side]) for side in SIDES}

    def shape_terms(self, side: str, betas: torch.Tensor) -> ShapeTerms:
        """Affine part maps of hands of the given shapes (B, 10), no gradient (shape is not optimized)."""
        with torch.no_grad():
            a, c = self.grids[side].shape_maps(self.model._shaped_vertices(side, betas))
            return ShapeTerms(torch.linalg.inv(a), c, torch.linalg.det(a).abs().pow(1.0 / 3.0))

    @staticmethod
    def _rest_maps(rel: torch.Tensor, shape: ShapeTerms, transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per (pose, part), flattened to B * 16 rows, the affine map from world points to the part's
        rest frame of the mean shape, ``q0 = q @ W + o``: undo the joint's rigid transform
        (q_rest = (q - transl - t) R), then the shape (q0 = (q_rest - c) A^-1). Built once per
        evaluation, so each (query, part) pair costs one gather and one 3x3 product."""
        w = rel[:, :, :3, :3] @ shape.a_inv                                                   # (B, 16, 3, 3)
        o = -(torch.einsum("bpj,bpji->bpi", transl[:, None] + rel[:, :, :3, 3], w)
              + torch.einsum("bpj,bpji->bpi", shape.c, shape.a_inv))
        return w.flatten(0, 1), o.flatten(0, 1)

    def candidates(self, side: str, part_vertices: torch.Tensor, points: torch.Tensor,
                   margin: float = CULL_MARGIN, among: torch.Tensor | None = None) -> torch.Tensor:
        """(K, 3) long (pose, query, part) whose part box (plus margin) of ``side`` holds the query;
        only the rows of ``among`` are tested when given (a superset kept from earlier iterations)."""
        vid, pid = self._box_index[side]
        pv = part_vertices.detach()[:, vid]                                                  # (B, N, 3)
        bsz = pv.shape[0]
        index = pid[None, :, None].expand(bsz, -1, 3)
        lo = torch.full((bsz, 16, 3), torch.inf, device=pv.device).scatter_reduce(1, index, pv, "amin") - margin
        hi = torch.full((bsz, 16, 3), -torch.inf, device=pv.device).scatter_reduce(1, index, pv, "amax") + margin
        if among is not None:
            b, v, p = among.unbind(1)
            q = points.detach()[b, v]
            return among[((q >= lo[b, p]) & (q <= hi[b, p])).all(dim=-1)]
        q = points.detach()[:, :, None]                                                     # (B, P, 1, 3)
        return ((q >= lo[:, None]) & (q <= hi[:, None])).all(dim=-1).nonzero()

    def side_depths(self, side: str, hand: dict[str, torch.Tensor], part_vertices: torch.Tensor,
                    points: torch.Tensor, shape: ShapeTerms | None = None,
                    cand: torch.Tensor | None = None, rel: torch.Tensor | None = None) -> torch.Tensor:
        """Depth (B, P) >= 0 of points (B, P, 3) inside ``side``'s hand posed by ``hand``, whose
        vertices are ``part_vertices`` (B, 778, 3); differentiable in points and the pose.
        ``cand``: a candidate list kept from a recent pose (see :class:`CandidateCache`).
        ``rel``: the joint transforms (B, 16, 4, 4) of ``hand`` when already computed (the second
        output of ``HandModel.joint_transforms`` or of ``HandModel.posed``), else computed here."""
        g, atlas = self.grids[side], self.atlas[side]
        shape = shape or self.shape_terms(side, hand["betas"])
        if rel is None:
            _, rel, _ = self.model.joint_transforms(side, hand["global_orient"], hand["hand_pose"], hand["betas"])
        bsz, n = points.shape[:2]
        depth = points.new_zeros(bsz, n)
        cand = self.candidates(side, part_vertices, points) if cand is None else cand
        if len(cand) == 0:
            return depth
        b, v, p = cand.unbind(1)
        w, o = self._rest_maps(rel, shape, hand["transl"])
        bp = b * rel.shape[1] + p                                                         # row of (b, p)
        scale = shape.scale.flatten()
        with torch.no_grad():
            q0 = torch.einsum("kj,kji->ki", points.detach()[b, v], w.detach()[bp]) + o.detach()[bp]
            field = g.sample_pairs(atlas, q0, p) * scale[bp][:, None]                        # (K, 2)
            # beyond a grid's box the border values say nothing about caps: such a pair may only
            # offer its outer distance (a reshaped hand can carry a query out of the mean grid)
            field[:, 0] = torch.where(g.holds(q0, p), field[:, 0], torch.inf)
            flat = b * n + v
            part_sdf = field.new_full((bsz * n,), torch.inf).scatter_reduce(0, flat, field[:, 0], "amin")
            outer = field.new_full((bsz * n,), torch.inf).scatter_reduce(0, flat, field[:, 1], "amin")
            # inside a part, or on a closing cap: there both parts read ~0, while the outer
            # surface is millimetres away; outside the hand the nearest part face is an outer one
            inside = (part_sdf < 0) | (part_sdf < outer - CAP_TOLERANCE)
            wins = (field[:, 1] == outer[flat]) & inside[flat]
            k = wins.nonzero()[:, 0]
            first = torch.full((bsz * n,), len(cand), device=k.device).scatter_reduce(0, flat[k], k, "amin")
            k = first[first < len(cand)]                                                  # one pair per vertex
        if len(k) == 0:
            return depth
        b, v, p, bp = b[k], v[k], p[k], bp[k]
        q0 = torch.einsum("kj,kji->ki", points[b, v], w[bp]) + o[bp]
        d = g.sample_pairs(atlas, q0, p, slice(1, 2))[:, 0] * scale[bp]
        return depth.index_put((b, v), d)

    def depths(self, hands: dict[str, dict[str, torch.Tensor]], vertices: dict[str, torch.Tensor],
               shapes: dict[str, ShapeTerms] | None = None,
               cache: "CandidateCache | None" = None,
               transforms: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per side, how deep (m, >= 0) each of its vertices (B, 778) is inside the other hand.
        ``transforms``: per side, its joint transforms ``rel`` (B, 16, 4, 4) when already computed
        (e.g. by ``HandModel.posed``); see :meth:`side_depths`."""
        cands = cache.candidates(self, vertices) if cache is not None else {}
        return {side: self.side_depths(other, hands[other], vertices[other], vertices[side],
                                       shapes[other] if shapes else None, cands.get(side),
                                       transforms[other] if transforms else None)
                for side, other in (("right", "left"), ("left", "right"))}


class CandidateCache:
    """(vertex, part) candidate lists kept over iterations while the hands move little.

    Built with ``margin`` plus ``slack``; reused until some vertex has moved more than ``slack / 2``
    since the build. A pair the fresh list would hold (query within ``margin`` of the box) then is
    still in the kept one, as neither the query nor the box moved more than slack / 2. Each call
    narrows the kept superset to exactly the pairs a fresh list would hold (testing K kept pairs
    instead of every vertex against every part box), so the depths are identical to a list rebuilt
    every iteration. ``slack = 0`` rebuilds every call (the baseline). Depths up to ``margin`` are
    exact; a deeper vertex may read deeper still (fewer parts offer it a nearer outer face), which
    an optimizer pushing it out does not mind: a margin below :data:`CULL_MARGIN` samples fewer pairs.
    """

    def __init__(self, slack: float, margin: float = CULL_MARGIN) -> None:
        self.slack, self.margin = slack, margin
        self.built_at: dict[str, torch.Tensor] | None = None
        self.lists: dict[str, torch.Tensor] = {}
        self.builds = 0

    def candidates(self, field: PenetrationField, vertices: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        now = {s: v.detach() for s, v in vertices.items()}
        stale = self.built_at is None or self.slack <= 0 or any(
            bool(((now[s] - self.built_at[s]).norm(dim=-1) > self.slack / 2).any()) for s in now)
        pairs = (("right", "left"), ("left", "right"))
        if stale:
            self.built_at = {s: v.clone() for s, v in now.items()}
            self.lists = {side: field.candidates(other, now[other], now[side], self.margin + self.slack)
                          for side, other in pairs}
            self.builds += 1
        # the kept superset, narrowed to exactly the pairs a fresh list would hold (same order)
        return {side: field.candidates(other, now[other], now[side], self.margin, among=self.lists[side])
                for side, other in pairs}


def _rest_vertices(model: HandModel, side: str) -> torch.Tensor:
    """(V, 3) float64 CPU: the flat hand (full finger pose 0), mean shape, that the grids sample."""
    z = torch.zeros(1, 3, device=model.device)
    with torch.no_grad():
        flat = -model.hands_mean(side)[None]
        return model.forward(side, z, flat, torch.zeros(1, 10, device=model.device), z).vertices[0].double().cpu()


def _geometry_digest(model: HandModel, side: str) -> str:
    """What :meth:`PartGrids.build` reads of a model: its flat hand and its part meshes. Two models
    with the same geometry share grids (the MANO-like test model has the stand-in's: building a
    side's grids costs ~20 s of CPU), and a changed geometry never reuses stale ones."""
    rest = _rest_vertices(model, side)
    digest = hashlib.sha256(rest.numpy().tobytes())
    for part in model.part_meshes(side):
        for array in (part.posed(rest[None])[0].numpy(), part.faces, part.vertex_ids):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _cached_grids(model: HandModel, side: str, resolution: int, cache_dir: str | None) -> PartGrids:
    """Grids depend only on the model's geometry (:func:`_geometry_digest`) and the resolution:
    built once, kept on disk (written under a process-unique name, then renamed: parallel
    processes may build the same grids)."""
    from dataclasses import asdict

    from handsynth.hand_model.model import default_cache_dir

    name = f"part-fields{GRID_FORMAT}-{_geometry_digest(model, side)}-{side}-{resolution}.pt"
    path = Path(cache_dir or default_cache_dir()) / name
    if path.exists():
        data = torch.load(path, map_location=model.device, weights_only=True)
        return PartGrids(**data)
    grids = PartGrids.build(model, side, resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    torch.save({k: v for k, v in asdict(grids).items()}, tmp)
    tmp.replace(path)
    return grids


def penetration_loss(depths: dict[str, torch.Tensor]) -> torch.Tensor:
    """Lp per pose (B,): sum of squared penetration depths of both hands, in cm^2."""
    return sum(((d * 100.0) ** 2).sum(dim=-1) for d in depths.values())


def penetration_stats(depths: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per pose: deepest penetration (mm) and number of penetrating vertices, both hands."""
    d = torch.cat([depths["right"], depths["left"]], dim=1) * 1000.0
    return {
        "max_depth_mm": d.amax(dim=1).detach().cpu().numpy(),
        "penetrating_vertices": (d > PENETRATING_DEPTH_MM).sum(dim=1).cpu().numpy(),
    }


def closed_hand_faces(model: HandModel, side: str) -> np.ndarray:
    """The whole closed surface the checks measure against: the hand's triangles with any open
    boundary closed by a fan around the loop's centre, appended as vertex 778 (+1 per loop).
    ``HandModel.faces`` already caps the wrist, so for it this adds nothing."""
    return parts.close_loops(model.faces(side), f"{model.name}, {side} hand")[0]


def closed_hand_vertices(model: HandModel, side: str, vertices: np.ndarray | torch.Tensor):
    """(..., 778, 3) posed vertices plus one centre per boundary loop, matching :func:`closed_hand_faces`."""
    return parts.with_loop_centres(vertices, parts.close_loops(model.faces(side), f"{model.name}, {side} hand")[1])


def exact_depths(model: HandModel, vertices: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reference evaluation for one pose: exact depths (m) of each hand's vertices (778, 3) inside the
    other hand's WHOLE closed surface (winding-number sign, distance to every triangle).

    Part meshes are not a reference for depth: the faces that close a part lie inside the hand, so
    a vertex near such a cap reads as shallow although it is deep inside the hand. Exact and still
    cheap: the closed parts tile the hand's volume and each lies in its vertices' bounding box, so
    a vertex outside all 16 part boxes is outside the hand; only the others get winding numbers,
    and only those inside get distances.
    """
    out = {}
    for side, other in (("right", "left"), ("left", "right")):
        ov = closed_hand_vertices(model, other, torch.as_tensor(vertices[other], dtype=torch.float64))
        tri = ov[torch.as_tensor(closed_hand_faces(model, other))]
        q = torch.as_tensor(vertices[side], dtype=torch.float64)
        depth = torch.zeros(len(q), dtype=torch.float64)
        boxes = [ov[torch.as_tensor(part.vertex_ids)] for part in model.part_meshes(other)]
        lo = torch.stack([b.min(0).values for b in boxes])                           # (16, 3)
        hi = torch.stack([b.max(0).values for b in boxes])
        near = ((q[:, None] >= lo) & (q[:, None] <= hi)).all(dim=2).any(dim=1).nonzero()[:, 0]
        inside = near[winding_number(q[near], tri) > 0.5] if len(near) else near
        if len(inside):
            depth[inside] = closest_point_distance(q[inside], tri).amin(dim=1)
        out[side] = depth.numpy()
    return out


def whole_surface_depth_mm(model: HandModel, vertices: dict[str, np.ndarray]) -> float:
    """Deepest vertex (mm) of either hand of one pose inside the other hand's WHOLE closed surface:
    trimesh containment (ray parity), then trimesh's exact signed distance for the contained
    vertices only (~0.1-0.2 s a pose). The independent quality audit decides on this number; the
    keep filter uses :func:`exact_depths` (the same quantity by a second implementation)."""
    import trimesh

    worst = 0.0
    for side, other in (("right", "left"), ("left", "right")):
        mesh = trimesh.Trimesh(closed_hand_vertices(model, other, np.asarray(vertices[other], dtype=np.float64)),
                               closed_hand_faces(model, other), process=False)
        points = np.asarray(vertices[side], dtype=np.float64)
        inside = mesh.contains(points)
        if inside.any():
            worst = max(worst, float(trimesh.proximity.signed_distance(mesh, points[inside]).max()) * 1000.0)
    return worst


def _segments_hit_triangles(p0: np.ndarray, p1: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Möller-Trumbore for paired segments (K, 3) -> (K, 3) and triangles (K, 3, 3): (K,) bool."""
    d, e1, e2 = p1 - p0, tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    h = np.cross(d, e2)
    a = (e1 * h).sum(-1)
    ok = np.abs(a) > 1e-18
    f = np.where(ok, 1.0 / np.where(ok, a, 1.0), 0.0)
    s = p0 - tri[:, 0]
    u = f * (s * h).sum(-1)
    q = np.cross(s, e1)
    v = f * (d * q).sum(-1)
    t = f * (e2 * q).sum(-1)
    return ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t >= 0) & (t <= 1)


def intersecting_triangle_pairs(verts_a: np.ndarray, faces_a: np.ndarray, verts_b: np.ndarray,
                                faces_b: np.ndarray) -> int:
    """Number of (triangle of A, triangle of B) pairs that cross each other: the reference
    implementation's validity rule keeps a pose with at most 75 such pairs between its hands."""
    ta, tb = verts_a[faces_a], verts_b[faces_b]
    lo_a, hi_a, lo_b, hi_b = ta.min(1), ta.max(1), tb.min(1), tb.max(1)
    near_a = np.flatnonzero(((hi_a >= lo_b.min(0)) & (lo_a <= hi_b.max(0))).all(1))
    near_b = np.flatnonzero(((hi_b >= lo_a.min(0)) & (lo_b <= hi_a.max(0))).all(1))
    overlap = ((hi_a[near_a, None] >= lo_b[None, near_b]) & (lo_a[near_a, None] <= hi_b[None, near_b])).all(-1)
    i, j = np.nonzero(overlap)
    a, b = ta[near_a[i]], tb[near_b[j]]
    hit = np.zeros(len(i), dtype=bool)
    for k in range(3):
        hit |= _segments_hit_triangles(a[:, k], a[:, (k + 1) % 3], b)
        hit |= _segments_hit_triangles(b[:, k], b[:, (k + 1) % 3], a)
    return int(hit.sum())
