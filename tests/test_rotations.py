"""The project's one rotation module (handsynth.rotations), tested once, against scipy and smplx."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from handsynth import rotations as rot


def _axis_angles(n: int, seed: int) -> torch.Tensor:
    """Random axis-angles with angles over [0, pi), plus the zero rotation and tiny ones."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.rand(n, 1, generator=g, dtype=torch.float64) * (np.pi - 1e-3)
    aa = axis * angle
    aa[0] = 0.0
    aa[1] = axis[1] * 1e-9
    return aa


def test_axis_angle_to_matrix_agrees_with_scipy_and_smplx():
    from smplx.lbs import batch_rodrigues

    aa = _axis_angles(200, seed=0)
    ours = rot.aa_to_matrix(aa)
    assert np.allclose(ours.numpy(), Rotation.from_rotvec(aa.numpy()).as_matrix(), atol=1e-12)
    # the MANO layer's own conversion (what the model's forward pass runs inside smplx)
    assert torch.allclose(ours, batch_rodrigues(aa), atol=1e-7)


def test_matrix_to_axis_angle_inverts_it_including_near_zero_and_pi():
    aa = _axis_angles(200, seed=1)
    near_pi = torch.tensor([[np.pi - 1e-6, 0.0, 0.0], [0.0, 0.0, -(np.pi - 1e-5)]], dtype=torch.float64)
    aa = torch.cat([aa, near_pi])
    back = rot.matrix_to_aa(rot.aa_to_matrix(aa))
    assert torch.allclose(back, aa, atol=1e-6)
    q = rot.matrix_to_quaternion(rot.aa_to_matrix(aa))
    assert torch.allclose(q.norm(dim=-1), torch.ones(len(aa), dtype=torch.float64)) and (q[:, 0] >= 0).all()


def test_gradients_are_finite_at_the_zero_rotation():
    aa = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    (rot.aa_to_matrix(aa) * torch.randn(4, 3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(aa.grad).all()
    r = rot.aa_to_matrix(torch.zeros(2, 3, dtype=torch.float64)).requires_grad_(True)
    rot.matrix_to_aa(r).sum().backward()
    assert torch.isfinite(r.grad).all()


def test_euler_xyz_round_trip_and_convention():
    g = torch.Generator().manual_seed(2)
    e = (torch.rand(100, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([6.0, 3.0, 6.0], dtype=torch.float64)
    m = rot.euler_xyz_to_matrix(e)
    assert np.allclose(m.numpy(), Rotation.from_euler("XYZ", e.numpy()).as_matrix(), atol=1e-12)   # intrinsic X-Y-Z
    assert torch.allclose(rot.matrix_to_euler_xyz(m), e, atol=1e-9)


def test_random_rotations_are_proper_and_seeded():
    a = rot.random_rotations(50, torch.Generator().manual_seed(3), dtype=torch.float64)
    b = rot.random_rotations(50, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(a, b)
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    assert torch.allclose(a @ a.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(a), torch.ones(50, dtype=torch.float64), atol=1e-12)
