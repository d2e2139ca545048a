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

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from handsynth.hand_model.model import HandModel
from handsynth.hand_model.parts import PartMesh

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
    # ~1 mm surface samples (a barycentric lattice per triangle, finer for longer triangles);
    # their error only touches far points, the band is computed exactly
    per_tri = np.maximum(1, np.ceil(np.linalg.norm(tri - tri[:, [1, 2, 0]], axis=2).max(axis=1) / 1e-3)).astype(int)
    chunks = []
    for n in np.unique(per_tri):
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        w = np.stack([i[(i + j) <= n], j[(i + j) <= n]], axis=1) / n
        t = tri[per_tri == n]
        chunks.append((t[:, None, 0] + w[None, :, :1] * (t[:, None, 1] - t[:, None, 0])
                       + w[None, :, 1:] * (t[:, None, 2] - t[:, None, 0])).reshape(-1, 3))
    approx, _ = cKDTree(np.concatenate(chunks)).query(grid_points, workers=-1)
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


# ---- per-part SDF grids -------------------------------------------------------------------------


@dataclass
class PartGrids:
    """SDF grids of one hand's 16 parts in their rest frames (mean shape, flat hand).

    values: (16, 1, R, R, R) signed distances in metres, axes (z, y, x) as grid_sample expects;
    lo, hi: (16, 3) box corners in the rest frame; fit: per part the pseudo-inverse (4, Vp) of
    its homogeneous mean-shape rest vertices, to fit the affine map to any shape's vertices.
    """

    values: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    part_vertex_ids: list[torch.Tensor]
    fit: list[torch.Tensor]

    @classmethod
    def build(cls, model: HandModel, side: str, resolution: int = 40, margin: float = 0.012) -> "PartGrids":
        z = torch.zeros(1, 3, device=model.device)
        with torch.no_grad():
            flat = -model.hands_mean(side)[None]                              # full finger pose 0
            rest = model.forward(side, z, flat, torch.zeros(1, 10, device=model.device), z).vertices[0].double().cpu()
        values, los, his, ids, fits = [], [], [], [], []
        for part in model.part_meshes(side):
            pv = part.posed(rest[None])[0]                                     # (Vp, 3)
            lo, hi = pv.min(0).values - margin, pv.max(0).values + margin
            axes = [np.linspace(float(lo[i]), float(hi[i]), resolution) for i in range(3)]
            zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
            pts = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3)
            voxel = float(((hi - lo) / (resolution - 1)).norm())
            sdf = grid_signed_distance(pts, (resolution,) * 3, pv.numpy(), part.faces, band=voxel)
            values.append(torch.as_tensor(sdf).reshape(resolution, resolution, resolution))
            los.append(lo)
            his.append(hi)
            own = rest[torch.as_tensor(part.vertex_ids)]
            homog = torch.cat([own, torch.ones(len(own), 1, dtype=own.dtype)], dim=1)  # (Vp, 4)
            ids.append(torch.as_tensor(part.vertex_ids, device=model.device))
            fits.append(torch.linalg.pinv(homog).float().to(model.device))           # (4, Vp)
        return cls(
            values=torch.stack(values)[:, None].float().to(model.device),
            lo=torch.stack(los).float().to(model.device),
            hi=torch.stack(his).float().to(model.device),
            part_vertex_ids=ids,
            fit=fits,
        )

    def shape_maps(self, shaped_rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per part affine map mean shape -> given shapes: A (B, 16, 3, 3), c (B, 16, 3)."""
        coef = torch.stack([fit @ shaped_rest[:, ids] for fit, ids in zip(self.fit, self.part_vertex_ids)], dim=1)
        return coef[:, :, :3], coef[:, :, 3]                                    # x0 @ A + c

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        """SDF of each part at per-part points (16, P, 3) in the rest frame -> (16, P); trilinear."""
        u = (points - self.lo[:, None]) / (self.hi - self.lo)[:, None] * 2.0 - 1.0   # [-1, 1]
        out = F.grid_sample(self.values, u[:, :, None, None, :], mode="bilinear",
                            padding_mode="border", align_corners=True)                # (16, 1, P, 1, 1)
        # outside the box the border value underestimates the distance: add the distance to the box
        outside = (points - points.clamp(self.lo[:, None], self.hi[:, None])).norm(dim=-1)
        return out[:, 0, :, 0, 0] + outside


class PenetrationField:
    """Signed distances of one hand's points to the OTHER hand's parts, for batches of poses."""

    def __init__(self, model: HandModel, resolution: int = 40, cache_dir: str | None = None) -> None:
        self.model = model
        self.grids = {side: _cached_grids(model, side, resolution, cache_dir) for side in SIDES}

    def part_sdf(self, side: str, hand: dict[str, torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        """SDF (B, P, 16) of points (B, P, 3) w.r.t. each part of ``side``'s hand posed by ``hand``."""
        g = self.grids[side]
        _, rel, _ = self.model.joint_transforms(side, hand["global_orient"], hand["hand_pose"], hand["betas"])
        with torch.no_grad():  # shape is fixed during optimization
            a, c = g.shape_maps(self.model._shaped_vertices(side, hand["betas"]))
            a_inv = torch.linalg.inv(a)
            scale = torch.linalg.det(a).abs().pow(1.0 / 3.0)                                 # (B, 16)
        rot, trans = rel[..., :3, :3], rel[..., :3, 3]                                        # (B,16,3,3), (B,16,3)
        q = points - hand["transl"][:, None]                                                  # (B, P, 3)
        q_rest = torch.einsum("bjki,bjpk->bjpi", rot, q[:, None] - trans[:, :, None])         # R^T (q - t)
        q0 = torch.einsum("bjpk,bjki->bjpi", q_rest - c[:, :, None], a_inv)                   # (B, 16, P, 3)
        b, j, p, _ = q0.shape
        sdf = g.sample(q0.permute(1, 0, 2, 3).reshape(j, b * p, 3))                           # (16, B*P)
        return sdf.reshape(j, b, p).permute(1, 2, 0) * scale[:, None, :]

    def depths(self, hands: dict[str, dict[str, torch.Tensor]], vertices: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per side, how deep (m, >= 0) each of its vertices (B, 778) is inside the other hand."""
        out = {}
        for side, other in (("right", "left"), ("left", "right")):
            sdf = self.part_sdf(other, hands[other], vertices[side]).amin(dim=-1)
            out[side] = torch.relu(-sdf)
        return out


def _cached_grids(model: HandModel, side: str, resolution: int, cache_dir: str | None) -> PartGrids:
    """Grids depend only on the model and resolution: build once (~7 s a hand), keep on disk."""
    from dataclasses import asdict

    from handsynth.hand_model.model import default_cache_dir

    path = Path(cache_dir or default_cache_dir()) / f"part-sdf-{model.identity['digest']}-{side}-{resolution}.pt"
    if path.exists():
        data = torch.load(path, map_location=model.device, weights_only=True)
        return PartGrids(**data)
    grids = PartGrids.build(model, side, resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
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


def exact_depths(model: HandModel, vertices: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reference evaluation for one pose: exact depths (m) of each hand's vertices (778, 3) in the
    other hand's posed closed part meshes (dense: every vertex against every part triangle)."""
    out = {}
    for side, other in (("right", "left"), ("left", "right")):
        ov = torch.as_tensor(vertices[other], dtype=torch.float64)
        q = torch.as_tensor(vertices[side], dtype=torch.float64)
        sdf = torch.stack([signed_distance(q, p.posed(ov[None])[0], torch.as_tensor(p.faces))
                           for p in model.part_meshes(other)], dim=1).amin(dim=1)
        out[side] = torch.relu(-sdf).numpy()
    return out


def contained_vertices(parts: list[PartMesh], other_vertices: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Independent audit: trimesh ray-test containment of ``query`` (P, 3) in the posed parts (bool P)."""
    import trimesh

    inside = np.zeros(len(query), dtype=bool)
    for part in parts:
        mesh = trimesh.Trimesh(part.posed_numpy(other_vertices), part.faces, process=False)
        lo, hi = mesh.bounds
        cand = np.flatnonzero(((query >= lo) & (query <= hi)).all(axis=1) & ~inside)
        if len(cand):
            inside[cand] = mesh.contains(query[cand])
    return inside

