"""Penetration field, anchors, discriminator, schedule and the optimizer on small batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handsynth import anchors as an
from handsynth import augment, discriminator as di, joint_limits as jl, optimize as op, penetration as pen
from handsynth.sources.procedural import generate_interacting_poses


@pytest.fixture(scope="module")
def field(hand_model):
    return pen.PenetrationField(hand_model)


def _two_hands(model, offset_m: float) -> dict:
    """Left hand facing the right palm to palm, its wrist ``offset_m`` away along the palm normal."""
    table = generate_interacting_poses(model, 1, seed=0, interactions=("palm_to_palm",), contact_gap_mm=(1.0, 1.0))
    hands = {s: {k: torch.as_tensor(v) for k, v in table.hand(s).items()} for s in ("right", "left")}
    rest = model.forward("right", **hands["right"]).keypoints[0].numpy()
    normal = np.cross(rest[1] - rest[0], rest[7] - rest[0])
    normal /= np.linalg.norm(normal)
    hands["left"]["transl"] = hands["left"]["transl"] + torch.as_tensor(normal * offset_m, dtype=torch.float32)
    return hands


def test_apart_hands_have_zero_penetration_and_overlapping_hands_positive(hand_model, field):
    for offset, expect_contact in ((0.08, False), (-0.02, True)):
        hands = _two_hands(hand_model, offset)
        verts = {s: hand_model.forward(s, **hands[s]).vertices for s in hands}
        loss = pen.penetration_loss(field.depths(hands, verts))
        assert (loss.item() > 0) == expect_contact, offset


def test_grid_agrees_with_exact_signed_distance_and_trimesh(hand_model, field):
    hands = _two_hands(hand_model, -0.015)
    verts = {s: hand_model.forward(s, **hands[s]).vertices for s in hands}
    grid = field.depths(hands, verts)
    exact = pen.exact_depths(hand_model, {s: verts[s][0].numpy() for s in verts})
    for side in ("right", "left"):
        g, e = grid[side][0].numpy(), exact[side]
        assert np.abs(g - e).max() < 2.5e-3                       # metres
        deep = e > 2e-3
        assert deep.any() and (g[deep] > 0).all()                 # deep points read as inside
    other = "left"
    inside = pen.contained_vertices(hand_model.part_meshes(other), verts[other][0].numpy(), verts["right"][0].numpy())
    assert ((exact["right"] > 1e-3) <= inside).all()             # trimesh agrees on clearly inside points


def test_a_few_optimizer_steps_separate_interpenetrating_hands(hand_model, field):
    hands = _two_hands(hand_model, -0.02)
    params = [hands[s]["transl"].requires_grad_(True) for s in hands]
    opt = torch.optim.Adam(params, lr=2e-3)
    losses = []
    for _ in range(15):
        verts = {s: hand_model.forward(s, **hands[s]).vertices for s in hands}
        loss = pen.penetration_loss(field.depths(hands, verts)).sum()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 0 and losses[-1] < 0.05 * losses[0]


def test_anchor_pairs_respect_the_opposing_normal_rule(hand_model):
    raw = generate_interacting_poses(hand_model, 8, seed=2)
    anchors = an.select_anchors(hand_model, raw, n_per_hand=40)
    assert all(len(anchors.face_ids[s]) == 40 for s in ("right", "left"))
    assert anchors.frequency["right"][0] >= anchors.frequency["right"][-1]
    faces = {s: torch.as_tensor(hand_model.faces(s)) for s in ("right", "left")}
    verts = {s: hand_model.forward_numpy(s, raw.hand(s)).vertices for s in ("right", "left")}
    (pl, nl), (pr, nr) = anchors.points("left", verts["left"], faces["left"]), anchors.points("right", verts["right"], faces["right"])
    idx, k = an.build_pairs(pl, nl, pr, nr)
    b = torch.arange(len(raw))[:, None, None]
    cos = (nl[:, :, None] * nr[b, idx]).sum(-1)
    dist = (pl[:, :, None] - pr[b, idx]).norm(dim=-1)
    live = k > 0
    assert live.any()
    assert (cos[live] < an.OPPOSING_COS).all() and (dist[live] < an.PAIR_RADIUS).all()
    assert torch.allclose(k[live], 0.3 * (0.5 * torch.cos(torch.pi * dist[live] / 0.015) + 0.5), atol=1e-5)
    assert json_round_trip(anchors)


def json_round_trip(anchors) -> bool:
    back = an.Anchors.from_json(anchors.to_json())
    return all(np.array_equal(getattr(back, f)[s], getattr(anchors, f)[s])
               for f in ("face_ids", "vertex_ids") for s in ("right", "left"))


@pytest.mark.parametrize("schedule,expected", [
    ("renderih", {0: (0.1, 20.0), 50: (0.1 + 1.9 * 50 / 165, 20.0 - 15.0 * 50 / 165),
                  90: (0.1 + 1.9 * 90 / 165, 20.0 - 15.0 * 90 / 165), 165: (2.0, 5.0), 214: (2.0, 5.0)}),
    ("reference", {0: (10.0, 0.064), 50: (150.0, 0.0064), 90: (1.0, 1.92), 165: (50.0, 0.064), 214: (50.0, 0.064)}),
])
def test_schedule_weights(schedule, expected):
    config = op.OptimizeConfig(schedule=schedule)
    for it, (w1, w4) in expected.items():
        w = op.weights_at(it, config)
        assert w["attraction"] == pytest.approx(w1) and w["penetration"] == pytest.approx(w4), it


def test_discriminator_scores_real_poses_above_jittered_ones_on_held_out_data(hand_model):
    raw = generate_interacting_poses(hand_model, 60, seed=5)
    frames = jl.AnatomicalFrames.from_rest_keypoints(hand_model.rest_keypoints("right"))
    real = np.deg2rad(np.concatenate([augment.right_equivalent_angles(hand_model, raw, s, frames) for s in ("right", "left")]))
    model, report = di.train_discriminator(real.reshape(-1, 45), epochs=8, seed=1)
    assert report.holdout_auc > 0.9 and report.holdout_accuracy > 0.8
    weights, card = di.save_discriminator(model, report)
    back = di.load_discriminator(weights, card)
    x = torch.as_tensor(real[:5].reshape(-1, 45), dtype=torch.float32)
    assert torch.equal(model(x), back(x))
    pose = x.clone().requires_grad_(True)
    loss = di.naturalness_loss(model, pose + 0.5).sum()
    loss.backward()
    assert pose.grad.abs().sum() > 0


def test_optimizer_reduces_penetration_and_keeps_limits(hand_model, field):
    raw = generate_interacting_poses(hand_model, 6, seed=7, interactions=("palm_to_palm", "hand_over_hand"))
    raw.meta["distinct_pose_id"] = raw.meta["pose_id"]
    aug, _ = augment.augment_pose_table(hand_model, raw, 1, "shard=00000")
    anchors = an.select_anchors(hand_model, raw, n_per_hand=40)
    config = op.OptimizeConfig(iterations=60, batch_size=8)
    result = op.optimize_poses(hand_model, aug, anchors, None, field, config)
    st = result.stats
    assert st["penetration_after"].mean() < st["penetration_before"].mean()
    assert (st["max_violation_deg_after"] <= op.MAX_VIOLATION_DEG).all()
    keep, reason = op.filter_valid(st)
    assert len(keep) == len(aug) and set(reason) <= {"", "penetration", "joint_limits", "joint_limits+penetration"}
    assert len(result.curves["total"]) == 60
