"""Accessories on the hands: drawn per seed and pose at their share, fitted around the posed surface
(outside the skin, close to it, clear of both hands and arms), a ring on its finger's proximal
phalanx, labels 37-40 in the raster pass, hand masks unchanged, manifest columns, the check, Cycles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from handsynth import accessories as acc
from handsynth import cameras, envmaps
from handsynth.arms import ArmOptions
from handsynth.penetration import intersecting_triangle_pairs, signed_distance
from handsynth.render import RenderOptions
from handsynth.render.accessories import accessory_materials
from handsynth.render.cycles import cycles_available
from handsynth.render.raster import HandRenderer, decode_png
from handsynth.seeds import seed_for
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import accessory_meshes, hand_meshes, hand_surface, pose_geometry, render_pose_views

SIDES = ("right", "left")
LIBRARY = {"a": envmaps.procedural_envmap(0, 16, 32)}


def test_accessories_are_drawn_per_seed_and_pose_at_their_share():
    drawn = {share: [acc.draw_accessories(share, 0, f"p{i}") for i in range(400)] for share in (0.0, 0.3, 1.0)}
    assert all(w == [] for w in drawn[0.0])
    for share in (0.3, 1.0):
        for kinds in (("watch", "bracelet"), ("ring",)):
            worn = np.mean([sum(w.kind in kinds for w in wishes) for wishes in drawn[share]]) / 2   # per hand
            assert abs(worn - share) < 0.05, (share, kinds, worn)
    # a share decides who wears something, not what: the same pieces as at share 1
    for few, all_ in zip(drawn[0.3], drawn[1.0]):
        assert all(w in all_ for w in few)
    assert acc.draw_accessories(1.0, 0, "p1") == acc.draw_accessories(1.0, 0, "p1")


def test_a_ring_goes_on_the_thumb_only_when_the_thumb_was_drawn_first():
    rings = [w for i in range(1000) for w in acc.draw_accessories(1.0, 0, f"p{i}") if w.kind == "ring"]
    assert all("thumb" not in w.fingers[1:] for w in rings)
    first = {f: np.mean([w.fingers[0] == f for w in rings]) for f in acc.RING_FINGERS}
    weights = np.array(list(acc.RING_FINGERS.values()))
    for (finger, share), weight in zip(first.items(), weights / weights.sum()):
        assert abs(share - weight) < 0.04, (finger, share, weight)   # 2,000 draws: 3 sigma < 0.033
    assert acc.draw_accessories(1.0, 0, "p1") != acc.draw_accessories(1.0, 1, "p1")
    wish = acc.draw_accessories(1.0, 7, "p3")[0]
    assert wish.materials == accessory_materials(wish.kind, seed_for("accessory_material", 7, "p3", wish.side, wish.kind))
    with pytest.raises(ValueError, match="accessory_share"):
        ArmOptions(accessory_share=1.5)


@pytest.fixture(scope="module")
def dressed(hand_model):
    """Four procedural poses, everything worn (poses whose fingers leave room for rings on three
    different fingers: most procedural poses keep the fingers pressed together)."""
    surface = hand_surface(hand_model, 0, True)
    poses = generate_interacting_poses(hand_model, 4, seed=3)
    return surface, [pose_geometry(hand_model, surface, poses.take([i]), seed=0, accessory_share=1.0)
                     for i in range(len(poses))]


def test_pieces_sit_outside_the_skin_close_to_it_and_cross_nothing(dressed):
    """Independent of the fitting's own test: every piece's vertices lie outside its side's closed
    hand-and-forearm surface, its nearest vertex within a few millimetres of it (not floating),
    and no piece's triangle crosses either side's surface or another piece."""
    surface, geometries = dressed
    kinds = set()
    for geometry in geometries:
        pieces = geometry.dressing.pieces
        assert len(pieces) + len(geometry.dressing.left_off) == 4
        for k, piece in enumerate(pieces):
            kinds.add(piece.wish.kind)
            side = piece.wish.side
            verts = torch.as_tensor(geometry.vertices[side])
            faces = torch.as_tensor(surface.faces[side])
            distance = signed_distance(torch.as_tensor(piece.vertices[::5]), verts, faces).numpy()
            assert distance.min() > 0, (piece.wish.kind, side, distance.min())
            gap = acc.RING_CLEARANCE if piece.wish.kind == "ring" else acc.CLEARANCE
            assert distance.min() < gap + 0.0015, (piece.wish.kind, side, distance.min())
            for s in SIDES:
                assert intersecting_triangle_pairs(piece.vertices, piece.faces, geometry.vertices[s], surface.faces[s]) == 0
            for other in pieces[k + 1:]:
                assert intersecting_triangle_pairs(piece.vertices, piece.faces, other.vertices, other.faces) == 0
    assert kinds == {"watch", "bracelet", "ring"}


def test_a_ring_sits_on_its_fingers_proximal_phalanx_and_follows_the_finger(dressed, hand_model):
    surface, geometries = dressed
    rings = [(g, p) for g in geometries for p in g.dressing.pieces if p.wish.kind == "ring"]
    assert len(rings) >= 4
    for geometry, ring in rings:
        kp = geometry.keypoints[SIDES.index(ring.wish.side)]
        mcp = acc.FINGER_MCP[ring.where]
        bone = kp[mcp + 1] - kp[mcp]
        axis = bone / np.linalg.norm(bone)
        centre = ring.vertices.mean(axis=0)
        along = (centre - kp[mcp]) @ axis / np.linalg.norm(bone)
        assert abs(along - acc.RING_POSITION) < 0.1
        assert np.linalg.norm((centre - kp[mcp]) - ((centre - kp[mcp]) @ axis) * axis) < 0.005
        # the band's axis is the bone's: its vertices spread across the finger, not along it
        spread = ring.vertices - centre
        assert np.abs(spread @ axis).max() <= 0.5 * ring.wish.width + 1e-6

    # bend a ring's finger at its MCP: the ring moves with the phalanx, still on it (a bend can press the
    # finger against another, and the ring moves to another finger: the first that stays is tested)
    followed = 0
    for geometry, ring in rings:
        side, mcp = ring.wish.side, acc.FINGER_MCP[ring.where]
        bent = geometry.pose.take([0])
        key = f"{side}_hand_pose"
        bent.arrays[key] = bent.arrays[key].copy()
        bent.arrays[key][0, 3 * (mcp - 1) + 2] += 0.3
        moved = pose_geometry(hand_model, surface, bent, seed=0, accessory_share=1.0)
        again = [p for p in moved.dressing.pieces if p.wish == ring.wish and p.where == ring.where]
        if again:
            kp = moved.keypoints[SIDES.index(side)]
            seat = kp[mcp] + acc.RING_POSITION * (kp[mcp + 1] - kp[mcp])
            assert np.linalg.norm(again[0].vertices.mean(axis=0) - seat) < 0.005
            assert np.linalg.norm(again[0].vertices.mean(axis=0) - ring.vertices.mean(axis=0)) > 0.002
            followed += 1
            break
    assert followed


def test_accessories_are_labelled_37_to_40_and_leave_the_hand_masks_alone(hand_model):
    poses = generate_interacting_poses(hand_model, 2, seed=2)
    worn = list(render_pose_views(hand_model, poses, 2, 96, LIBRARY, seed=0, arms=ArmOptions(True, 0.0, 1.0)))
    again = list(render_pose_views(hand_model, poses, 2, 96, LIBRARY, seed=0, arms=ArmOptions(True, 0.0, 1.0)))
    bare = list(render_pose_views(hand_model, poses, 2, 96, LIBRARY, seed=0, arms=ArmOptions(True, 0.0, 0.0)))
    seen = np.zeros(4, int)
    for a, b, c in zip(worn, again, bare):
        assert a.pngs == b.pngs and a.scene == b.scene                       # deterministic
        labels, plain = decode_png(a.pngs["label"]), decode_png(c.pngs["label"])
        on = np.isin(labels, acc.ACCESSORY_LABELS)
        assert a.scene["accessory_pixels"] == [int((labels == v).sum()) for v in acc.ACCESSORY_LABELS]
        seen += a.scene["accessory_pixels"]
        # only accessory pixels change: every other pixel keeps its hand, forearm or background label
        assert np.array_equal(labels[~on], plain[~on])
        assert np.isin(plain[on], list(range(0, 37))).all()
        # a keypoint hidden by an accessory turns invisible; none turns visible
        assert not (a.record.visibility & ~c.record.visibility).any()
        assert a.mask_iou >= 0.99 and c.scene["accessory_pixels"] == [0, 0, 0, 0] and c.scene["accessories"] == "[]"
        records = json.loads(a.scene["accessories"])
        labelled = {r["label"] for r in records}
        assert all(n == 0 or v in labelled for v, n in zip(acc.ACCESSORY_LABELS, a.scene["accessory_pixels"]))
        for r in records:
            assert r["kind"] in ("watch", "bracelet", "ring") and r["materials"]["kind"] == r["kind"]
            assert r["materials"]["seed"] == seed_for("accessory_material", 0, a.record.pose["pose_id"], r["side"], r["kind"])
        assert a.scene["elbow_right"] == c.scene["elbow_right"] and np.array_equal(a.record.K, c.record.K)
    assert (seen[:2] > 0).all(), seen         # both wrist pieces show (rings are small at 96 px: next test)


def test_a_ring_seen_close_up_is_labelled_39_or_40_in_front_of_its_finger(dressed):
    """A camera 12 cm from each ring, looking at it from around the finger: from some direction the
    ring's label shows at its centre's pixel neighbourhood, in front of its own hand's labels."""
    surface, geometries = dressed
    renderer = HandRenderer(64, 64)
    try:
        for geometry in geometries:
            colors = {s: np.full((surface.n_vertices[s], 3), 0.5) for s in SIDES}
            renderer.set_scene(hand_meshes(geometry, surface, colors) + accessory_meshes(geometry), [], np.full(3, 0.5))
            for ring in [p for p in geometry.dressing.pieces if p.wish.kind == "ring"]:
                centre = ring.vertices.mean(axis=0)
                shown = 0
                for direction in acc._unit(ring.vertices[::len(ring.vertices) // 8] - centre):
                    look = -direction
                    R, t = cameras.look_at(centre, np.degrees(np.arctan2(-look[2], -look[0])),
                                           np.degrees(np.arcsin(-look[1])), 0.12, 0.0)
                    out = renderer.render_view(cameras.Camera(np.array([[300.0, 0, 32], [0, 300.0, 32], [0, 0, 1]]),
                                                              R, t, 64, 64), np.zeros((64, 64, 3)))
                    shown = max(shown, int((out.labels[24:40, 24:40] == ring.label).sum()))
                assert shown > 0, (ring.wish.side, ring.where)
    finally:
        renderer.close()


def test_the_accessory_check_fails_pixels_without_a_worn_piece():
    from quality.rendering_checks import accessories_labelled
    from resources.settings import PipelineSettings

    ring = json.dumps([{"kind": "ring", "side": "left", "where": "ring", "label": 40}])
    rows = lambda worn, pixels: pd.DataFrame({"image_id": ["a/v00"], "accessories": [worn],  # noqa: E731
                                              "accessory_pixels": [pixels], "accessories_left_off": ["[]"]})
    on, off = PipelineSettings.from_preset("test", accessory_share=0.5), PipelineSettings.from_preset("test")
    assert accessories_labelled(settings=on, rendered_views=rows(ring, [0, 0, 0, 12])).passed
    assert not accessories_labelled(settings=on, rendered_views=rows(ring, [0, 0, 12, 0])).passed
    assert not accessories_labelled(settings=on, rendered_views=rows("[]", [3, 0, 0, 0])).passed
    assert not accessories_labelled(settings=off, rendered_views=rows(ring, [0, 0, 0, 12])).passed
    assert accessories_labelled(settings=off, rendered_views=rows("[]", [0, 0, 0, 0])).passed


def test_the_accessory_share_is_a_setting_in_the_render_blocks_inputs(hand_model, monkeypatch):
    from ih_assets.rendering import _block_inputs
    from resources.settings import PipelineSettings, settings_from_env

    assert PipelineSettings.from_preset("test").accessory_share == 0.0          # the test preset's images unchanged
    assert PipelineSettings.from_preset("demo").accessory_share == 0.2
    assert settings_from_env({"IH_PRESET": "test", "IH_ACCESSORY_SHARE": "0.4"}).accessory_share == 0.4

    def inputs(**change) -> str:
        settings = PipelineSettings.from_preset("test", **change)
        return json.dumps(_block_inputs(settings, RenderOptions(), hand_model, {"m": b"map"}), sort_keys=True, default=str)

    assert inputs(accessory_share=0.5) != inputs() == inputs()


@pytest.mark.skipif(not cycles_available()[0], reason="Cycles backend not installed")
def test_cycles_renders_the_accessories_where_the_labels_put_them(hand_model):
    poses = generate_interacting_poses(hand_model, 1, seed=2)
    options = RenderOptions(backend="cycles", samples=2, denoise=False, device="cpu")
    worn, bare = (list(render_pose_views(hand_model, poses, 1, 64, LIBRARY, seed=0, options=options,
                                         arms=ArmOptions(True, 0.0, share)))[0] for share in (1.0, 0.0))
    labels = decode_png(worn.pngs["label"])
    on = np.isin(labels, acc.ACCESSORY_LABELS)
    assert on.sum() > 10 and worn.alpha_iou >= 0.95
    change = np.abs(worn.rgb.astype(int) - bare.rgb.astype(int)).sum(axis=-1) > 0
    assert change[on].mean() > 0.8                                    # the photo shows them where labelled


@pytest.mark.skipif(not cycles_available()[0], reason="Cycles backend not installed")
def test_a_pose_wearing_accessories_renders_the_same_bytes_whatever_the_worker_rendered_before(hand_model):
    """Render blocks go to whichever worker is free, so a worker's history differs between runs.
    With Cycles' persistent data, a pose rendered after another pose's pieces came out a few pixels
    1 level apart from the same pose rendered first (fails without the rebuild on a change of pieces)."""
    from handsynth.render.pool import POOL

    poses = generate_interacting_poses(hand_model, 4, seed=3)
    options = RenderOptions(backend="cycles", samples=8, denoise=True, device="cpu", subdivision=1)
    library = {"a": envmaps.procedural_envmap(0, 64, 128)}

    def last_pose(order):
        images = list(render_pose_views(hand_model, poses.take(order), 2, 128, library, seed=0, options=options,
                                        arms=ArmOptions(True, 0.0, 1.0)))
        return [im.rgb for im in images[-2:]]

    POOL.close_all()                     # a fresh worker: pose 2 first
    fresh = last_pose([2])
    POOL.close_all()
    after_others = last_pose([3, 2])     # a fresh worker, after another pose's pieces
    POOL.close_all()
    assert all(np.array_equal(a, b) for a, b in zip(fresh, after_others))
