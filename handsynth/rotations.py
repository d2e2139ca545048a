"""Batched, differentiable rotation conversions (torch): axis-angle, matrices, Euler XYZ.

MANO stores rotations as axis-angle; joint limits and the discriminator read Euler angles in
anatomical frames; the optimizer needs gradients through all of it, including at the zero
rotation, where the textbook formulas divide by zero (handled with Taylor expansions here).
"""

from __future__ import annotations

import torch

_EPS = 1e-6


def aa_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle (..., 3) -> rotation matrices (..., 3, 3); smooth at 0."""
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]              # (..., 1, 1)
    theta = torch.sqrt(theta2.clamp_min(_EPS**2))
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(_EPS**2))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_quaternion(r: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z) with w >= 0 (Shepperd's method)."""
    m = r
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], dim=-2)                                                         # (..., 4, 4)
    diag = torch.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = diag.argmax(-1)                                             # the best-conditioned row
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_aa(r: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi]."""
    q = matrix_to_quaternion(r)
    w, v = q[..., :1], q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, w)
    scale = torch.where(s < 1e-7, 2.0 / w.clamp_min(_EPS), angle / s.clamp_min(1e-12))
    return v * scale


def euler_xyz_to_matrix(e: torch.Tensor) -> torch.Tensor:
    """Intrinsic X-Y-Z Euler angles (..., 3) -> R = Rx(a) Ry(b) Rz(c)."""
    a, b, c = e.unbind(-1)
    ca, sa, cb, sb, cc, sc = a.cos(), a.sin(), b.cos(), b.sin(), c.cos(), c.sin()
    return torch.stack([
        cb * cc, -cb * sc, sb,
        ca * sc + sa * sb * cc, ca * cc - sa * sb * sc, -sa * cb,
        sa * sc - ca * sb * cc, sa * cc + ca * sb * sc, ca * cb,
    ], dim=-1).reshape(*e.shape[:-1], 3, 3)


def matrix_to_euler_xyz(r: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_xyz_to_matrix` for |b| < 90 degrees: (..., 3, 3) -> (..., 3)."""
    b = torch.asin(r[..., 0, 2].clamp(-1 + 1e-7, 1 - 1e-7))
    a = torch.atan2(-r[..., 1, 2], r[..., 2, 2])
    c = torch.atan2(-r[..., 0, 1], r[..., 0, 0])
    return torch.stack([a, b, c], dim=-1)


def random_rotations(n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """Uniform random rotation matrices (n, 3, 3) from normalised Gaussian quaternions."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(n, 3, 3)
