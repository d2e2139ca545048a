"""Pose correctives (MANO's ``posedirs``) for a skinned hand that has no scans to learn them from.

Linear blend skinning (LBS) averages the bones' rigid transforms, and an average of rotations
shrinks: at a bent joint the skin collapses inward. The stand-in's fist lost 17 % of the
hand's volume that way (the crumpled fingers of the old ``docs/standin_hand.png``). MANO learns
pose correctives from scans; here they are regressed from volume-preserving targets instead:

1. poses of one joint at a time (bend over its range, some splay and twist; the caller's
   samples), because a corrective only depends on the joints between the bones that skin a vertex;
2. a target per pose: dual-quaternion skinning (DQS), which blends rotations on the sphere so a
   bent joint keeps its cross-section, then the joint's blend band inflated along the normals
   until the closed surface has its rest volume again (DQS alone keeps only about a third of
   what LBS loses);
3. each target in MANO's corrective space, the rest frame before skinning:
   ``c = T_lbs^-1 v_target - v_rest``;
4. per vertex, least squares on MANO's pose features (``R_j - I`` of those joints), damped.

The fit is exact where LBS with correctives can follow the target at all (the features are
linear in ``sin`` and ``1 - cos`` of each joint's angle); tests measure the fist's volume.
"""

from __future__ import annotations

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues

from handsynth.hand_model.parts import close_loops, with_loop_centres
from handsynth.rotations import matrix_to_quaternion

#: Newton steps of the volume inflation (each step is exact to first order in the inflation).
INFLATION_STEPS = 3
#: Passes of neighbour averaging that widen a joint's blend band into a smooth bump.
BAND_SMOOTHING = 3
#: Ridge damping of the per-vertex regression, relative to the number of samples.
RIDGE = 1e-6


def enclosed_volume(vertices: torch.Tensor, faces: np.ndarray) -> torch.Tensor:
    """Signed volume (...,) of closed, outward-wound surfaces (..., V, 3) (divergence theorem)."""
    tri = vertices[..., torch.as_tensor(faces), :]                       # (..., F, 3, 3)
    return (tri[..., 0, :] * torch.cross(tri[..., 1, :], tri[..., 2, :], dim=-1)).sum(dim=(-1, -2)) / 6.0


def _normals_and_areas(vertices: torch.Tensor, faces: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit area-weighted vertex normals (B, n, 3) and vertex areas (B, n) (a third of each face)."""
    f = torch.as_tensor(faces)
    tri = vertices[:, f]
    cross = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)   # (B, F, 3)
    normals = torch.zeros(vertices.shape[0], vertices.shape[1], 3, dtype=vertices.dtype)
    areas = torch.zeros(vertices.shape[0], vertices.shape[1], dtype=vertices.dtype)
    for k in range(3):
        normals.index_add_(1, f[:, k], cross)
        areas.index_add_(1, f[:, k], cross.norm(dim=-1) / 6.0)
    return torch.nn.functional.normalize(normals[:, :n], dim=-1), areas[:, :n]


def dual_quaternion_skinning(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Rest vertices (V, 3) posed by blending the joints' rigid transforms (B, J, 4, 4) as dual
    quaternions with skinning weights (V, J) -> (B, V, 3) (Kavan et al. 2008, "Geometric skinning
    with approximate dual quaternion blending"). Each vertex takes every joint's quaternion on the
    hemisphere of its main joint's, so blends never take the long way round."""
    q = matrix_to_quaternion(transforms[..., :3, :3])                      # (B, J, 4) w, x, y, z
    t = transforms[..., :3, 3]
    w0, r0 = q[..., :1], q[..., 1:]
    # dual part of the transform "rotate by q, then translate by t": 1/2 (0, t) q
    we = -0.5 * (t * r0).sum(dim=-1, keepdim=True)
    re = 0.5 * (w0 * t + torch.cross(t, r0, dim=-1))
    dual = torch.cat([we, re], dim=-1)
    main = weights.argmax(dim=1)                                          # (V,)
    sign = torch.sign(torch.einsum("bjk,bvk->bvj", q, q[:, main]))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)           # (B, V, J)
    blend = torch.einsum("vj,bvj,bjk->bvk", weights, sign, q)
    blend_dual = torch.einsum("vj,bvj,bjk->bvk", weights, sign, dual)
    norm = blend.norm(dim=-1, keepdim=True)
    blend, blend_dual = blend / norm, blend_dual / norm
    w, r = blend[..., :1], blend[..., 1:]
    we, re = blend_dual[..., :1], blend_dual[..., 1:]
    p = vertices.expand_as(r)
    rotated = p + 2.0 * torch.cross(r, torch.cross(r, p, dim=-1) + w * p, dim=-1)
    return rotated + 2.0 * (w * re - we * r + torch.cross(r, re, dim=-1))


def rigid_transforms(joints: torch.Tensor, parents: torch.Tensor, full_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Finger poses (B, 45) with the root at rest -> each joint's rest-to-posed transform (B, J, 4, 4)
    and the joints' rotations (B, J, 3, 3), through smplx's own chain."""
    b = full_pose.shape[0]
    pose = torch.cat([torch.zeros(b, 3, dtype=full_pose.dtype), full_pose], dim=1)
    rot = batch_rodrigues(pose.reshape(-1, 3)).reshape(b, -1, 3, 3)
    _, rel = batch_rigid_transform(rot, joints[None].expand(b, -1, -1), parents)
    return rel, rot


def pose_features(rot: torch.Tensor) -> torch.Tensor:
    """MANO's pose features (B, 9 (J - 1)): ``R_j - I`` of every joint but the root, row-major."""
    return (rot[:, 1:] - torch.eye(3, dtype=rot.dtype)).reshape(rot.shape[0], -1)


def _blend_band(weights: np.ndarray, faces: np.ndarray, joint: int, parent: int) -> np.ndarray:
    """A smooth bump (V,) in [0, 1] over the skin shared by ``joint`` and its parent: where LBS loses
    volume when the joint turns, and where the inflation puts it back."""
    a, b = weights[:, joint], weights[:, parent]
    band = 4.0 * a * b / np.maximum(a + b, 1e-12)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = len(weights)
    degree = np.bincount(edges[:, 0], minlength=n)
    for _ in range(BAND_SMOOTHING):
        band = np.bincount(edges[:, 0], band[edges[:, 1]], minlength=n) / degree
    return band / band.max()


def _joints_between(skinned_by: np.ndarray, parents: np.ndarray) -> list[int]:
    """The joints whose rotations change where a vertex skinned by ``skinned_by`` goes relative to
    them all: every joint on the paths up to their lowest common ancestor, the ancestor excluded."""
    def chain(j: int) -> list[int]:
        return [j] + chain(int(parents[j])) if parents[j] >= 0 else [j]

    chains = [chain(int(j)) for j in skinned_by]
    common = set.intersection(*(set(c) for c in chains))
    ancestor = max(common, key=lambda j: len(chain(j)))
    return sorted({j for c in chains for j in c[:c.index(ancestor)]})


def inflated_targets(vertices: torch.Tensor, faces: np.ndarray, weights: torch.Tensor, transforms: torch.Tensor,
                     band: torch.Tensor) -> torch.Tensor:
    """Volume-preserving posed vertices (B, V, 3): DQS, then ``band`` (V,) inflated along the
    normals until each closed surface encloses the rest volume again."""
    closed, loops = close_loops(faces)
    rest_volume = enclosed_volume(with_loop_centres(vertices, loops), closed)
    posed = dual_quaternion_skinning(vertices, weights, transforms)
    for _ in range(INFLATION_STEPS):
        surface = with_loop_centres(posed, loops)
        missing = rest_volume - enclosed_volume(surface, closed)                    # (B,)
        normals, areas = _normals_and_areas(surface, closed, len(vertices))
        step = missing / (areas * band).sum(dim=1)
        posed = posed + step[:, None, None] * band[None, :, None] * normals
    return posed


def fit_pose_correctives(vertices: np.ndarray, faces: np.ndarray, weights: np.ndarray, joints: np.ndarray,
                         parents: np.ndarray, samples: dict[int, np.ndarray]) -> np.ndarray:
    """``posedirs`` (V, 3, 9 (J - 1)) in MANO's file layout, from volume-preserving targets.

    ``samples[j]`` (M, 45): full finger poses (not relative to ``hands_mean``) that turn joint ``j``
    alone. A vertex's corrective uses only the features of the joints between the bones that skin
    it, so a tip skinned to one bone gets none (skeleton-only keypoints stay exact).
    """
    v = torch.as_tensor(vertices, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64)
    j_rest = torch.as_tensor(joints, dtype=torch.float64)
    par = torch.as_tensor(parents, dtype=torch.long)
    features, targets = [], []
    for joint, poses in sorted(samples.items()):
        rel, rot = rigid_transforms(j_rest, par, torch.as_tensor(poses, dtype=torch.float64))
        band = torch.as_tensor(_blend_band(weights, faces, joint, int(parents[joint])))
        posed = inflated_targets(v, faces, w, rel, band)
        lbs = torch.einsum("vj,bjkl->bvkl", w, rel)                               # (B, V, 4, 4)
        rest = torch.linalg.solve(lbs[..., :3, :3], (posed - lbs[..., :3, 3])[..., None])[..., 0]
        features.append(pose_features(rot))
        targets.append(rest - v)
    x = torch.cat(features).numpy()                                               # (S, 135)
    y = torch.cat(targets).numpy()                                                # (S, V, 3)
    posedirs = np.zeros((len(vertices), 3, x.shape[1]))
    for i in range(len(vertices)):
        between = _joints_between(np.flatnonzero(weights[i] > 0), parents)
        if not between:
            continue
        cols = np.concatenate([np.arange(9 * (j - 1), 9 * j) for j in between])
        xi = x[:, cols]
        gram = xi.T @ xi + RIDGE * len(x) * np.eye(len(cols))
        posedirs[i][:, cols] = np.linalg.solve(gram, xi.T @ y[:, i]).T
    return posedirs
