"""The stand-in's pose correctives: bent fingers keep their volume, and no finger passes through another."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from handsynth import penetration as pen
from handsynth.hand_model import correctives, parts, standin
from handsynth.hand_model.model import HandModel


def _posed(model: HandModel, full_pose: np.ndarray, side: str = "right") -> torch.Tensor:
    """(778, 3) float64 vertices of a full finger pose (45,) at the origin, mean shape."""
    hand_pose = torch.as_tensor(full_pose[None], dtype=torch.float32) - model.hands_mean(side)[None]
    z = torch.zeros(1, 3)
    return model.forward(side, z, hand_pose, torch.zeros(1, 10), z).vertices[0].double()


def _volume(model: HandModel, vertices: torch.Tensor) -> float:
    closed, loops = parts.close_loops(model.faces("right"))
    return float(correctives.enclosed_volume(parts.with_loop_centres(vertices, loops), closed))


@pytest.fixture(scope="module")
def without_correctives(hand_model):
    """The same stand-in with its posedirs zeroed: plain linear blend skinning."""
    flat = copy.deepcopy(hand_model)
    for layer in flat.layers.values():
        layer.posedirs.zero_()
    flat._skin.clear()
    return flat


def test_dual_quaternion_skinning_reproduces_rigid_transforms():
    g = torch.Generator().manual_seed(0)
    from smplx.lbs import batch_rodrigues

    rot = batch_rodrigues(torch.randn(4, 3, generator=g, dtype=torch.float64) * 1.5)     # up to ~250 degrees
    transforms = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    transforms[:, :3, :3], transforms[:, :3, 3] = rot, torch.randn(4, 3, generator=g, dtype=torch.float64)
    verts = torch.randn(50, 3, generator=g, dtype=torch.float64)
    weights = torch.rand(50, 2, generator=g, dtype=torch.float64)
    weights /= weights.sum(dim=1, keepdim=True)
    # both joints moved alike: every blend is that one rigid motion
    out = correctives.dual_quaternion_skinning(verts, weights, transforms[:, None].expand(-1, 2, -1, -1))
    expected = torch.einsum("bij,vj->bvi", rot, verts) + transforms[:, None, :3, 3]
    assert torch.allclose(out, expected, atol=1e-12)
    # a half-and-half blend of the identity and a 90-degree turn about z is the 45-degree turn
    quarter = torch.eye(4, dtype=torch.float64).repeat(1, 2, 1, 1)
    quarter[0, 1, :3, :3] = batch_rodrigues(torch.tensor([[0.0, 0.0, np.pi / 2]], dtype=torch.float64))[0]
    half = correctives.dual_quaternion_skinning(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64),
                                                torch.tensor([[0.5, 0.5]], dtype=torch.float64), quarter)
    assert torch.allclose(half[0, 0], torch.tensor([np.sqrt(0.5), np.sqrt(0.5), 0.0], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("pose", ["fist", "grasp", "uniform_85"])
def test_bent_fingers_keep_their_volume(hand_model, without_correctives, pose):
    """Must-show of issue 19: the fist's volume within 5 % of the open hand's. Plain LBS of the same
    mesh (today's skinning) is the reference that shows the correctives are what keeps it."""
    rest = hand_model.rest_keypoints("right")
    if pose == "uniform_85":  # the old docs picture's fist: every joint 85 degrees, thumb included
        angles = np.zeros((1, 15, 3))
        angles[0, :, 0] = 85.0
        full = standin._anatomical_pose(rest, angles)[0]
    else:
        full = standin.picture_pose(rest, pose)
    open_volume = _volume(hand_model, _posed(hand_model, standin.picture_pose(rest, "open")))
    corrected = _volume(hand_model, _posed(hand_model, full)) / open_volume - 1.0
    lbs = _volume(without_correctives, _posed(without_correctives, full)) / open_volume - 1.0
    print(f"{pose}: volume change {100 * corrected:+.1f} % with correctives, {100 * lbs:+.1f} % plain LBS")
    assert abs(corrected) <= 0.05
    assert abs(corrected) < 0.5 * abs(lbs)


def _crossing_parts(model: HandModel, vertices: np.ndarray) -> dict[tuple[int, int], int]:
    """Pairs of hand parts whose triangles cross, with the count (faces of a part that share a
    vertex with the other part, the seam between them, are left out)."""
    faces, labels = model.faces("right"), model.face_labels["right"]
    out = {}
    for a in range(16):
        for b in range(a + 1, 16):
            fa, fb = faces[labels == a], faces[labels == b]
            seam = np.intersect1d(fa, fb)
            fa, fb = fa[~np.isin(fa, seam).any(axis=1)], fb[~np.isin(fb, seam).any(axis=1)]
            n = pen.intersecting_triangle_pairs(vertices, fa, vertices, fb)
            if n:
                out[(a, b)] = n
    return out


@pytest.mark.parametrize("pose", sorted(standin.PICTURE_POSES_DEG))
def test_no_finger_passes_through_another_in_the_docs_poses(hand_model, pose):
    verts = _posed(hand_model, standin.picture_pose(hand_model.rest_keypoints("right"), pose)).numpy()
    assert _crossing_parts(hand_model, verts) == {}


def test_the_crossing_check_sees_a_thumb_through_the_fingers(hand_model):
    """The old docs fist bent the thumb's base 85 degrees, through the middle and ring fingers."""
    angles = np.zeros((1, 15, 3))
    angles[0, :, 0] = 85.0
    verts = _posed(hand_model, standin._anatomical_pose(hand_model.rest_keypoints("right"), angles)[0]).numpy()
    crossing = _crossing_parts(hand_model, verts)
    assert {(6, 13), (12, 14)} <= set(crossing), crossing


def test_correctives_vanish_at_rest_and_at_the_fingertips(hand_model):
    from handsynth.keypoints import TIP_VERTEX_IDS

    posedirs = hand_model.layers["right"].posedirs.view(-1, 778, 3)                    # (135, 778, 3)
    assert posedirs.abs().max() > 1e-3                                                   # millimetres, not noise
    assert posedirs[:, list(TIP_VERTEX_IDS.values())].abs().max() == 0                   # tips ride their bone
    flat = _posed(hand_model, np.zeros(45))
    assert torch.allclose(flat, hand_model.layers["right"].v_template.double(), atol=1e-7)
