"""Forearm geometry: a watertight join at the wrist loop, posed by global_orient, aimed at the elbow,
adult proportions, labels, sleeve cuff and UVs; on the stand-in and the MANO-like model, both sides."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import trimesh

from handsynth import penetration as pen
from handsynth.hand_model import forearm as fa

SIDES = ("right", "left")
#: (flexion, deviation) in degrees: straight, each end of the wrist's range, corners and between.
WRIST_ANGLES = list(itertools.product((-70.0, -35.0, 0.0, 40.0, 80.0), (-20.0, 0.0, 30.0)))


def _hands(model, side: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    p = {"global_orient": rng.normal(0, 1.0, (n, 3)), "hand_pose": rng.normal(0, 0.3, (n, 45)),
         "betas": rng.normal(0, 1.0, (n, 10)), "transl": rng.normal(0, 0.1, (n, 3))}
    p = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in p.items()}
    p["vertices"] = model.forward(side, p["global_orient"], p["hand_pose"], p["betas"], p["transl"]).vertices
    return p


def _attach(model, side: str, hands: dict, elbow=None, **kw) -> fa.Forearm:
    return fa.attach_forearm(model, side, hands["vertices"], hands["global_orient"], hands["betas"], hands["transl"],
                             elbow, **kw)


def _elbows(model, side: str) -> np.ndarray:
    return np.stack([fa.elbow_direction(model, side, f, d) for f, d in WRIST_ANGLES])


@pytest.mark.parametrize("side", SIDES)
def test_hand_and_forearm_join_into_one_closed_surface(each_hand_model, side):
    hands = _hands(each_hand_model, side, len(WRIST_ANGLES))
    arm = _attach(each_hand_model, side, hands, _elbows(each_hand_model, side), sleeve_start=0.13)
    loop = each_hand_model.wrist_loop(side)
    assert torch.equal(arm.vertices[:, :len(loop)], hands["vertices"][:, loop])           # ring 0 is the wrist
    verts, faces = arm.joined(hands["vertices"], each_hand_model.open_faces(side))
    for b in range(len(WRIST_ANGLES)):
        mesh = trimesh.Trimesh(verts[b].numpy(), faces, process=False)
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0, WRIST_ANGLES[b]


@pytest.mark.parametrize("side", SIDES)
def test_forearm_follows_global_orient_and_transl(each_hand_model, side):
    hands = _hands(each_hand_model, side, 3, seed=1)
    still = dict(hands, global_orient=torch.zeros(3, 3), transl=torch.zeros(3, 3))
    still["vertices"] = each_hand_model.forward(side, still["global_orient"], still["hand_pose"], still["betas"],
                                                still["transl"]).vertices
    elbow = fa.elbow_direction(each_hand_model, side, 30.0, 10.0)
    moved, rest = _attach(each_hand_model, side, hands, elbow), _attach(each_hand_model, side, still, elbow)
    from smplx.lbs import batch_rodrigues

    rot = batch_rodrigues(hands["global_orient"])
    wrist = each_hand_model.shaped(side, hands["betas"]).rest_joints[:, 0]
    expected = torch.einsum("bij,bvj->bvi", rot, rest.vertices - wrist[:, None]) + wrist[:, None] + hands["transl"][:, None]
    assert (moved.vertices - expected).abs().max() < 1e-5


@pytest.mark.parametrize("side", SIDES)
def test_forearm_points_at_the_elbow_and_the_tube_never_folds(each_hand_model, side):
    hands = _hands(each_hand_model, side, len(WRIST_ANGLES), seed=2)
    hands["global_orient"][:] = 0.0                                       # root frame = world frame
    hands["transl"][:] = 0.0
    hands["vertices"] = each_hand_model.forward(side, hands["global_orient"], hands["hand_pose"], hands["betas"],
                                                hands["transl"]).vertices
    elbows = _elbows(each_hand_model, side)
    np.testing.assert_allclose(fa.wrist_angles(each_hand_model, side, elbows), WRIST_ANGLES, atol=1e-9)
    arm = _attach(each_hand_model, side, hands, elbows)
    n_loop = len(arm.hand_loop)
    rings = arm.vertices[:, :-1].reshape(len(WRIST_ANGLES), -1, n_loop, 3).double().mean(dim=2)   # ring centroids
    straight = np.asarray(fa.RING_STATIONS) >= fa.BLEND_LENGTH
    hand_faces = each_hand_model.faces(side)
    hand_faces = hand_faces[~np.isin(hand_faces, arm.hand_loop).any(axis=1)]          # away from the seam
    tube = arm.faces[(arm.faces >= n_loop).all(axis=1)]
    strip = tube.min(axis=1) // n_loop
    for b, angles in enumerate(WRIST_ANGLES):
        axis = rings[b, straight][-1] - rings[b, straight][0]
        cos = float(axis @ torch.as_tensor(elbows[b])) / float(axis.norm())
        assert np.degrees(np.arccos(min(cos, 1.0))) < 0.5, angles
        verts, hand = arm.vertices[b].double().numpy(), hands["vertices"][b].double().numpy()
        assert pen.intersecting_triangle_pairs(verts, tube, hand, hand_faces) == 0, angles
        for k in range(1, strip.max() - 1):                               # strips two or more apart
            assert pen.intersecting_triangle_pairs(verts, tube[strip == k], verts, tube[strip >= k + 2]) == 0, (angles, k)


def test_out_of_range_elbows_are_refused(hand_model):
    fa.attach_forearm(hand_model, "right", *_straight_args(hand_model), fa.elbow_direction(hand_model, "right", 80.0, 30.0))
    for flexion, deviation, what in ((85.0, 0.0, "flexion 85.0"), (-75.0, 0.0, "flexion -75.0"),
                                     (0.0, 35.0, "deviation 35.0"), (0.0, -25.0, "deviation -25.0")):
        with pytest.raises(ValueError, match=f"right hand: wrist {what} degrees is outside the wrist's range"):
            fa.attach_forearm(hand_model, "right", *_straight_args(hand_model),
                              fa.elbow_direction(hand_model, "right", flexion, deviation))


def _straight_args(model) -> tuple[torch.Tensor, ...]:
    z = torch.zeros(1, 3)
    return model.forward("right", z, torch.zeros(1, 45), torch.zeros(1, 10), z).vertices, z, torch.zeros(1, 10), z


@pytest.mark.parametrize("side", SIDES)
def test_forearm_has_adult_proportions_labels_and_a_sleeve_cuff(each_hand_model, side):
    z = torch.zeros(1, 3)
    verts = each_hand_model.forward(side, z, torch.zeros(1, 45), torch.zeros(1, 10), z).vertices
    arm = fa.attach_forearm(each_hand_model, side, verts, z, torch.zeros(1, 10), z, sleeve_start=0.13)
    frame = fa.WristFrame.of(each_hand_model, side)
    n_loop = len(arm.hand_loop)
    rings = arm.vertices[0, :-1].reshape(-1, n_loop, 3).double().numpy()
    stations = np.unique(np.append(fa.RING_STATIONS, 0.13))

    def extent(k: int, direction: np.ndarray) -> float:
        return float(np.ptp(rings[k] @ direction)) * 100.0                                      # cm

    wrist = int(np.flatnonzero(stations == fa.BLEND_LENGTH)[0])
    elbow = int(np.flatnonzero(stations == fa.LENGTH)[0])
    print(side, f"wrist {extent(wrist, frame.ulnar):.1f} x {extent(wrist, frame.volar):.1f} cm, elbow "
          f"{extent(elbow, frame.ulnar):.1f} x {extent(elbow, frame.volar):.1f} cm, "
          f"forearm {100 * np.linalg.norm(rings[elbow].mean(0) - rings[0].mean(0)):.1f} cm, "
          f"arm {100 * np.linalg.norm(rings[-1].mean(0) - rings[0].mean(0)):.1f} cm")
    assert 5.5 < extent(wrist, frame.ulnar) < 6.5 and 3.5 < extent(wrist, frame.volar) < 4.5
    assert 8.0 < extent(elbow, frame.ulnar) < 9.0 and 8.0 < extent(-1, frame.ulnar) < 9.0
    assert 23.0 < np.linalg.norm(rings[elbow].mean(0) - rings[0].mean(0)) * 100.0 < 26.0
    assert 53.0 < np.linalg.norm(rings[-1].mean(0) - rings[0].mean(0)) * 100.0 < 56.0
    cuff_ring = int(np.flatnonzero(stations == 0.13)[0])
    assert arm.cuff == (cuff_ring * n_loop, arm.vertices.shape[1])
    forearm_label, sleeve_label = fa.FOREARM_LABELS[side], fa.SLEEVE_LABELS[side]
    assert (arm.vertex_labels[:arm.cuff[0]] == forearm_label).all() and (arm.vertex_labels[arm.cuff[0]:] == sleeve_label).all()
    assert set(np.unique(arm.face_labels)) == {forearm_label, sleeve_label}
    plain = fa.attach_forearm(each_hand_model, side, verts, z, torch.zeros(1, 10), z)
    assert plain.cuff is None and set(np.unique(plain.vertex_labels)) == set(np.unique(plain.face_labels)) == {forearm_label}


def test_forearm_uvs_cover_the_tube_once(hand_model):
    z = torch.zeros(1, 3)
    verts = hand_model.forward("right", z, torch.zeros(1, 45), torch.zeros(1, 10), z).vertices
    arm = fa.attach_forearm(hand_model, "right", verts, z, torch.zeros(1, 10), z)
    layout = arm.uv
    assert layout.faces_uv.shape == arm.faces.shape and (layout.uv >= 0).all() and (layout.uv <= 1).all()
    assert np.array_equal(layout.vertex_ids[layout.faces_uv], arm.faces)                  # corners on their vertices
    corners = layout.corner_uv().astype(np.float64)
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    signed = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    tube = (arm.faces < arm.vertices.shape[1] - 1).all(axis=1)
    # every tube face maps with one orientation and no face wraps across the seam
    assert ((signed[tube] > 0).all() or (signed[tube] < 0).all()) and np.ptp(corners[tube][..., 0], axis=1).max() < 0.2
    assert np.isclose(np.abs(signed[tube]).sum() / 2, 1.0)                              # the unit square, once
