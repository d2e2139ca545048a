"""Anatomical frames, angles, the limit loss and the mirror convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handsynth import joint_limits as jl
from handsynth.rotations import aa_to_matrix, matrix_to_aa, random_rotations


@pytest.fixture(scope="module")
def frames(hand_model):
    return jl.AnatomicalFrames.from_rest_keypoints(hand_model.rest_keypoints("right"))


def _angles(**deg) -> torch.Tensor:
    """One pose of anatomical angles from e.g. index_mcp=(30, 0, 0)."""
    a = torch.zeros(1, 15, 3, dtype=torch.float64)
    for name, v in deg.items():
        a[0, jl.JOINT_NAMES.index(name)] = torch.deg2rad(torch.tensor(v, dtype=torch.float64))
    return a


def test_rest_pose_and_hands_mean_have_zero_violation(hand_model, frames):
    assert jl.max_violation_deg(torch.zeros(1, 45), frames).item() < 1e-4
    for side in ("right", "left"):
        full = hand_model.full_finger_pose(side, torch.zeros(1, 45))
        if side == "left":
            full = jl.mirror_pose(full)
        assert jl.max_violation_deg(full, frames).item() < 1e-3


def test_known_bend_reads_back_and_bends_toward_the_palm(hand_model, frames):
    f64 = jl.AnatomicalFrames(frames.frames.double())
    bend_axis = f64.frames[0][:, 0]
    pose = torch.zeros(1, 15, 3, dtype=torch.float64)
    pose[0, 0] = bend_axis * np.deg2rad(37.0)       # rotate the index MCP about its bend axis
    angles = torch.rad2deg(jl.joint_angles(pose, f64))[0, 0]
    assert torch.allclose(angles, torch.tensor([37.0, 0.0, 0.0], dtype=torch.float64), atol=1e-6)
    # flexion moves the index tip to the palm side (toward the volar normal)
    rest = hand_model.rest_keypoints("right")
    volar = np.cross(rest[1] - rest[0], rest[7] - rest[0])
    hp = (pose.reshape(1, 45).float() - hand_model.hands_mean("right"))
    tip = hand_model.forward("right", torch.zeros(1, 3), hp, torch.zeros(1, 10), torch.zeros(1, 3)).keypoints[0, 17]
    assert (tip.numpy() - rest[17]) @ volar > 0


def test_compose_inverts_joint_angles(frames):
    g = torch.Generator().manual_seed(0)
    lim = torch.as_tensor(jl.JOINT_LIMITS)
    u = torch.rand(64, 15, 3, generator=g, dtype=torch.float64)
    angles = torch.deg2rad(lim[..., 0] + u * (lim[..., 1] - lim[..., 0]))
    f64 = jl.AnatomicalFrames(frames.frames.double())
    back = jl.joint_angles(jl.compose_pose(angles, f64), f64)
    assert torch.allclose(back, angles, atol=1e-6)


def test_angles_do_not_depend_on_the_models_global_axes(hand_model):
    rest = hand_model.rest_keypoints("right")
    rot = random_rotations(1, torch.Generator().manual_seed(3))[0].double()
    rotated = rest @ rot.numpy().T
    fa = jl.AnatomicalFrames.from_rest_keypoints(rest)
    fb = jl.AnatomicalFrames.from_rest_keypoints(rotated)
    pose = jl.compose_pose(_angles(middle_mcp=(40, 8, 0), thumb_cmc=(10, 20, 5)), jl.AnatomicalFrames(fa.frames.double()))
    # the same physical rotation expressed in the rotated model's axes: R' = Q R Q^T
    posed_b = matrix_to_aa(rot @ aa_to_matrix(pose) @ rot.T)
    a = jl.joint_angles(pose, jl.AnatomicalFrames(fa.frames.double()))
    b = jl.joint_angles(posed_b, jl.AnatomicalFrames(fb.frames.double()))
    assert torch.allclose(a, b, atol=1e-5)


def test_violation_report_names_the_joint_and_degrees(frames):
    f64 = jl.AnatomicalFrames(frames.frames.double())
    pose = jl.compose_pose(_angles(pinky_pip=(100, 0, 0), index_mcp=(0, -30, 0)), f64)
    report = jl.violation_report(pose, f64)
    assert report.loc[0, "pinky_pip"] == pytest.approx(10.0, abs=1e-4)
    assert report.loc[0, "index_mcp"] == pytest.approx(5.0, abs=1e-4)
    assert report.drop(columns=["pinky_pip", "index_mcp"]).to_numpy().max() < 1e-4


def test_gradient_step_moves_a_violating_joint_back_inside(frames):
    f64 = jl.AnatomicalFrames(frames.frames.double())
    pose = jl.compose_pose(_angles(ring_pip=(120, 0, 0), middle_dip=(20, 12, 15)), f64).reshape(1, 45).clone()
    pose.requires_grad_(True)
    opt = torch.optim.SGD([pose], lr=0.5)
    before = jl.violation_report(pose.detach(), f64)
    for _ in range(50):
        opt.zero_grad()
        jl.joint_limit_loss(pose, f64).sum().backward()
        opt.step()
    after = jl.violation_report(pose.detach(), f64)
    assert before.loc[0, "ring_pip"] > 19 and after.loc[0, "ring_pip"] < 0.5
    assert before.loc[0, "middle_dip"] > 7 and after.loc[0, "middle_dip"] < 0.5      # twist 15 > 7, splay 12 > 5


def test_left_hand_rotations_mirror_into_right_ones():
    m = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    aa = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(aa_to_matrix(jl.mirror_pose(aa)), m @ aa_to_matrix(aa) @ m, atol=1e-12)
    assert torch.equal(jl.mirror_pose(jl.mirror_pose(aa)), aa)


def test_every_finger_joint_has_room_to_twist_and_splay():
    width = jl.JOINT_LIMITS[..., 1] - jl.JOINT_LIMITS[..., 0]
    assert (width[:, 1:] >= 8.0).all() and (width[:, 1:] <= 60.0).all()
    assert (jl.JOINT_LIMITS[..., 0] < 0).all() and (jl.JOINT_LIMITS[..., 1] > 0).all()


def _ih26m_like_angles(n: int, seed: int) -> np.ndarray:
    """Real-capture-like poses (degrees): bends inside the limits, a few degrees of twist and splay
    at every joint (as MANO fits of InterHand2.6M carry)."""
    rng = np.random.default_rng(seed)
    lo, hi = jl.JOINT_LIMITS[..., 0], jl.JOINT_LIMITS[..., 1]
    angles = rng.uniform(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), size=(n, 15, 3))
    angles[..., 1:] = rng.normal(0.0, 2.5, size=(n, 15, 2)).clip(lo[:, 1:] * 0.9, hi[:, 1:] * 0.9)
    return angles


def test_real_poses_with_small_twist_and_splay_pass_the_projection_unchanged(each_hand_model):
    model = each_hand_model
    frames = jl.AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    f64 = jl.AnatomicalFrames(frames.frames.double())
    angles = _ih26m_like_angles(32, seed=2)
    for side in ("right", "left"):
        hand_pose = torch.as_tensor(jl.hand_pose_from_angles(model, side, angles, frames)).double()
        full = model.full_finger_pose(side, hand_pose.float()).double()
        if side == "left":
            full = jl.mirror_pose(full)
        read = jl.joint_angles(full, f64)
        assert torch.rad2deg(read[..., 1:]).abs().amax(dim=(0, 1)).min() > 3.0      # twist and splay are there
        assert jl.limit_violation(read).max() < 1e-3
        assert torch.equal(jl.project_angles(read), read)


def test_projection_moves_only_the_axes_outside(frames):
    f64 = jl.AnatomicalFrames(frames.frames.double())
    angles = torch.deg2rad(torch.as_tensor(_ih26m_like_angles(4, seed=3)))
    angles[0, 4, 2] = np.deg2rad(25.0)          # middle PIP twisted far past +7
    angles[1, 0, 1] = np.deg2rad(-40.0)         # index MCP splayed past -25
    projected = jl.project_angles(jl.joint_angles(jl.compose_pose(angles, f64), f64))
    changed = (projected - angles).abs() > 1e-6
    assert changed.sum() == 2 and changed[0, 4, 2] and changed[1, 0, 1]
    assert torch.rad2deg(projected[0, 4, 2]).item() == pytest.approx(7.0)
    assert torch.rad2deg(projected[1, 0, 1]).item() == pytest.approx(-25.0)
