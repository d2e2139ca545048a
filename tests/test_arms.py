"""Forearms in the images: elbows drawn per seed and pose and clear of the other arm, labels 33/34 in
the raster pass, visibility hidden by a forearm, hand masks unchanged, the setting off."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from handsynth import arms, cameras, envmaps
from handsynth import penetration as pen
from handsynth.exports import intaghand_dense, intaghand_mask
from handsynth.hand_model import forearm as fa
from handsynth.render import cloth
from handsynth.render.raster import HandRenderer, decode_png
from handsynth.rotations import aa_to_matrix
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import hand_meshes, hand_surface, pose_geometry, render_pose_views
from handsynth.visibility import keypoint_pixels, keypoint_visibility

SIDES = ("right", "left")


def _flat_hand(model, side: str, transl: np.ndarray) -> arms.PosedHand:
    params = {"global_orient": np.zeros((1, 3), np.float32), "hand_pose": np.zeros((1, 45), np.float32),
              "betas": np.zeros((1, 10), np.float32), "transl": np.asarray([transl], np.float32)}
    return arms.posed_hand(model.forward_numpy(side, params).vertices, params)


def _arms_apart(model, hands: dict[str, arms.PosedHand], forearms: dict[str, fa.Forearm]) -> bool:
    """Whether no vertex of one side's hand and forearm lies inside the other side's forearm (signed
    distance to the closed surface of hand and forearm, for the vertices nearer the forearm)."""
    for s, other in (("right", "left"), ("left", "right")):
        verts, faces = forearms[s].joined(hands[s].vertices, model.open_faces(s))
        points = torch.cat([hands[other].vertices[0], forearms[other].vertices[0]]).double()
        arm = forearms[s].vertices[0, len(forearms[s].hand_loop):].double()
        near_arm = torch.cdist(points, arm).amin(1) < torch.cdist(points, hands[s].vertices[0].double()).amin(1)
        if (pen.signed_distance(points[near_arm], verts[0].double(), torch.as_tensor(faces)) <= 0).any():
            return False
    return True


def test_elbows_are_drawn_per_seed_and_pose_and_redrawn_clear_of_the_other_arm(hand_model):
    """The left hand lies beside the right forearm's straight course: the straight forearm passes
    through it, so the wrists are drawn again until neither forearm crosses the other side; an
    independent test (signed distance to each closed arm) finds nothing of one arm inside the other."""
    frame = fa.WristFrame.of(hand_model, "right")
    wrist = hand_model.rest_keypoints("right")[0]
    beside = wrist + 0.15 * fa.elbow_direction(hand_model, "right") + 0.065 * frame.volar
    hands = {"right": _flat_hand(hand_model, "right", np.zeros(3)),
             "left": _flat_hand(hand_model, "left", beside - hand_model.rest_keypoints("left").mean(axis=0))}
    straight = arms.attach_both(hand_model, hands, {s: fa.elbow_direction(hand_model, s) for s in SIDES})
    assert arms.crossings(hand_model, hands, straight).arm > 0 and not _arms_apart(hand_model, hands, straight)

    choice, forearms = arms.choose_arms(hand_model, hands, seed=0, pose_id="p")
    again, _ = arms.choose_arms(hand_model, hands, seed=0, pose_id="p")
    assert choice.attempts > 1 and choice.crossings == arms.Crossings(0, 0)
    assert choice.attempts == again.attempts and all(np.array_equal(choice.elbows[s], again.elbows[s]) for s in SIDES)
    assert _arms_apart(hand_model, hands, forearms)
    for s in SIDES:
        np.testing.assert_allclose(np.linalg.norm(choice.elbows[s]), 1.0)
        np.testing.assert_allclose(choice.wrist_angles[s], fa.wrist_angles(hand_model, s, choice.elbows[s]), atol=1e-9)
    other_pose, _ = arms.choose_arms(hand_model, hands, seed=0, pose_id="q")
    other_seed, _ = arms.choose_arms(hand_model, hands, seed=1, pose_id="p")
    assert not np.array_equal(other_pose.wrist_angles["right"], choice.wrist_angles["right"])
    assert not np.array_equal(other_seed.wrist_angles["right"], choice.wrist_angles["right"])


def _render(model, poses, forearms: bool, size: int = 64) -> list:
    library = {"a": envmaps.procedural_envmap(0, 16, 32)}
    return list(render_pose_views(model, poses, 2, size, library, seed=3, arms=arms.ArmOptions(forearms=forearms)))


def test_forearms_are_labelled_33_and_34_in_the_raster_pass_and_recorded(hand_model):
    poses = generate_interacting_poses(hand_model, 2, seed=5)
    for image in _render(hand_model, poses, True):
        labels, depth = decode_png(image.pngs["label"]), decode_png(image.pngs["depth"])
        assert set(np.unique(labels)) <= {0, *range(1, 33), 33, 34}
        pixels = [int((labels == fa.FOREARM_LABELS[s]).sum()) for s in SIDES]
        assert image.scene["forearms"] and image.scene["forearm_pixels"] == pixels and sum(pixels) > 0
        assert np.array_equal(depth > 0, labels > 0) and image.mask_iou >= 0.99
        assert image.scene["arm_crossings"] == 0 and 1 <= image.scene["arm_attempts"] <= arms.MAX_ATTEMPTS
        assert image.scene["wrist_crossings"] >= 0 and image.scene["arm_ends_in_frame"] is False
        for s in SIDES:
            flexion, deviation = image.scene[f"wrist_angles_{s}"]
            assert fa.FLEXION_RANGE_DEG[0] <= flexion <= fa.FLEXION_RANGE_DEG[1]
            assert fa.DEVIATION_RANGE_DEG[0] <= deviation <= fa.DEVIATION_RANGE_DEG[1]
            np.testing.assert_allclose(np.linalg.norm(image.scene[f"elbow_{s}"]), 1.0)


def test_views_keep_each_arms_cut_end_out_of_the_frame(hand_model):
    """An arm's far end (the cut tube where a person's upper arm and body would be) never projects
    into a view: drawn without the condition, more than a tenth of the views would show one."""
    surface = hand_surface(hand_model, 0, True)
    poses = generate_interacting_poses(hand_model, 8, seed=0)
    ranges, shown, n = cameras.CameraRanges(), 0, 0
    for i in range(len(poses)):
        geometry = pose_geometry(hand_model, surface, poses.take([i]), seed=0)
        for s, ends in zip(SIDES, geometry.arm_ends):   # the cap: the forearm's farthest vertices
            wrist = geometry.keypoints[SIDES.index(s), 0]
            assert np.linalg.norm(ends - wrist, axis=1).min() > 0.9 * fa.REACH
        centre = geometry.hand_points.mean(axis=0)
        for view in range(10):
            free = cameras.sample_camera(centre, geometry.hand_points, ranges, np.random.default_rng([i, view]), 256, 256)
            cam = cameras.sample_camera(centre, geometry.hand_points, ranges, np.random.default_rng([i, view]), 256, 256,
                                        hidden=geometry.arm_ends)
            inside = []
            for c in (free, cam):
                ends = geometry.arm_ends.reshape(-1, 3)
                uv = cameras.project(ends, c.K, c.R, c.t)
                front = ends @ c.R[2] + c.t[2] > 0
                inside.append(bool((front & (uv > 0).all(1) & (uv < 256).all(1)).any()))
            shown += inside[0]
            n += 1
            assert not inside[1], (i, view)
    assert shown / n > 0.1
    with pytest.raises(cameras.NoView):    # a hidden shape at the hands' centre cannot be kept out
        cameras.sample_camera(centre, geometry.hand_points, ranges, np.random.default_rng(0), 256, 256, max_tries=20,
                              hidden=geometry.hand_points[None, :10])


def test_without_forearms_no_arm_labels_and_with_them_the_hand_masks_change_only_where_a_forearm_hides_the_hand(hand_model):
    """Same seed, same cameras (they frame the hands alone, and with forearms a view showing an
    arm's cut end is drawn again: the views that were not are compared): the hand pixels a forearm
    leaves in view keep their part labels, so the IntagHand mask (labels 1..32) changes only under
    forearm pixels."""
    poses = generate_interacting_poses(hand_model, 4, seed=6)
    with_arms, without = _render(hand_model, poses, True), _render(hand_model, poses, False)
    hidden = compared = 0
    for on, off in zip(with_arms, without):
        assert off.scene == {k: off.scene[k] for k in ("env_rotation", "exposure", "skin")} | {"forearms": False}
        if not (np.array_equal(on.record.K, off.record.K) and np.array_equal(on.record.R, off.record.R)):
            continue
        compared += 1
        a, b = decode_png(on.pngs["label"]), decode_png(off.pngs["label"])
        assert b.max() <= 32
        hand_on = (a >= 1) & (a <= 32)
        assert np.array_equal(a[hand_on], b[hand_on])                      # the hand where it shows
        lost = (b >= 1) & (b <= 32) & ~hand_on
        assert np.isin(a[lost], [33, 34]).all()                             # hidden only by a forearm
        hidden += int(lost.sum())
        for derive in (intaghand_mask, intaghand_dense):        # IntagHand's mask and dense images
            on_img, off_img = derive(a), derive(b)
            assert not on_img[np.isin(a, [33, 34])].any()
            assert np.array_equal(on_img[~lost], off_img[~lost])
    assert compared >= 4
    print(f"hand pixels hidden by forearms: {hidden} in {compared} views")


def test_a_forearm_in_front_of_the_hand_hides_its_keypoints(hand_model):
    """A camera on the line of a forearm, beyond the elbow, looking at the wrist loop, sees the
    forearm end-on in front of the hand: keypoints whose pixels show only forearm turn invisible,
    and no keypoint turns visible."""
    renderer = HandRenderer(64, 64)
    poses = generate_interacting_poses(hand_model, 3, seed=2)
    surfaces = {on: hand_surface(hand_model, 0, on) for on in (True, False)}
    hidden = 0
    try:
        for i in range(len(poses)):
            geometry = {on: pose_geometry(hand_model, surfaces[on], poses.take([i]), seed=0) for on in surfaces}
            for h, side in enumerate(SIDES):
                turn = aa_to_matrix(torch.as_tensor(poses.hand(side)["global_orient"][:1], dtype=torch.float64))[0].numpy()
                toward_elbow = turn @ geometry[True].arms.elbows[side]
                loop = geometry[True].vertices[side][hand_model.wrist_loop(side)].mean(axis=0)
                eye = geometry[True].vertices[side][-1] + 0.75 * toward_elbow      # beyond the forearm's cap centre
                look = (loop - eye) / np.linalg.norm(loop - eye)
                el, az = np.degrees(np.arcsin(-look[1])), np.degrees(np.arctan2(-look[2], -look[0]))
                R, t = cameras.look_at(loop, az, el, float(np.linalg.norm(loop - eye)), 0.0)
                camera = cameras.Camera(np.array([[192.0, 0, 32], [0, 192.0, 32], [0, 0, 1]]), R, t, 64, 64)
                visible, labels = {}, {}
                for on, geo in geometry.items():
                    colors = {s: np.full((surfaces[on].n_vertices[s], 3), 0.5) for s in SIDES}
                    out = renderer.render(hand_meshes(geo, surfaces[on], colors), camera, [], np.full(3, 0.5),
                                          np.zeros((64, 64, 3)))
                    labels[on] = out.labels
                    visible[on] = keypoint_visibility(geo.keypoints, camera, out.labels, out.depth_mm,
                                                      [(geo.vertices[s], surfaces[on].hand_faces(s)) for s in SIDES])
                assert not (visible[True] & ~visible[False]).any()
                pix, inside, _ = keypoint_pixels(geometry[True].keypoints[h], camera)
                behind_arm = (inside & (labels[True][pix[..., 1], pix[..., 0]] == fa.FOREARM_LABELS[side])).all(axis=1)
                assert not visible[True][h, behind_arm].any()
                hidden += int((visible[False][h] & behind_arm).sum())
    finally:
        renderer.close()
    assert hidden >= 1                     # keypoints seen without forearms, hidden by them


def test_the_forearm_check_fails_an_image_without_forearm_pixels_or_with_an_arm_through_the_other():
    from quality.rendering_checks import forearms_present_and_clear
    from resources.settings import PipelineSettings

    def rows(**change) -> pd.DataFrame:
        base = {"image_id": ["a/v00", "a/v01"], "forearms": [True, True], "forearm_pixels": [[10, 0], [3, 4]],
                "arm_crossings": [0, 0], "wrist_crossings": [0, 12]}
        return pd.DataFrame({**base, **change})

    on, off = PipelineSettings.from_preset("test"), PipelineSettings.from_preset("test", forearms=False)
    good = forearms_present_and_clear(settings=on, rendered_views=rows())
    assert good.passed and good.metadata["max_wrist_crossings"].value == 12
    for change in ({"forearm_pixels": [[10, 0], [0, 0]]}, {"arm_crossings": [0, 2]}, {"forearms": [True, False]}):
        failed = forearms_present_and_clear(settings=on, rendered_views=rows(**change))
        assert not failed.passed, change
    assert forearms_present_and_clear(settings=off, rendered_views=pd.DataFrame({"image_id": ["a"], "forearms": [False]})).passed
    assert not forearms_present_and_clear(settings=off, rendered_views=rows()).passed


def test_sleeves_are_drawn_at_their_share_cuffed_on_existing_rings_and_labelled_35_36(hand_model):
    assert set(arms.SLEEVE_STARTS) <= {float(x) for x in fa.RING_STATIONS}      # the mesh keeps its topology
    drawn = [arms.draw_sleeves(arms.ArmOptions(sleeve_share=0.3), 0, f"p{i}") for i in range(400)]
    assert 0.24 < np.mean([d is not None for d in drawn]) < 0.36
    assert all(arms.draw_sleeves(arms.ArmOptions(sleeve_share=0.0), 0, f"p{i}") is None for i in range(50))
    library = {"a": envmaps.procedural_envmap(0, 16, 32)}
    poses = generate_interacting_poses(hand_model, 1, seed=5)
    dressed = list(render_pose_views(hand_model, poses, 2, 64, library, seed=3,
                                     arms=arms.ArmOptions(forearms=True, sleeve_share=1.0)))
    bare = list(render_pose_views(hand_model, poses, 2, 64, library, seed=3))
    for a, b in zip(dressed, bare):
        labels, plain = decode_png(a.pngs["label"]), decode_png(b.pngs["label"])
        assert a.scene["sleeve_pixels"] == [int((labels == v).sum()) for v in (35, 36)] and sum(a.scene["sleeve_pixels"]) > 0
        assert json.loads(a.scene["sleeve_cloth"])["pattern"] in cloth.CLOTH_PATTERNS
        assert b.scene["sleeve_cloth"] == "" and plain.max() <= 34
        # the same surface: a sleeve relabels forearm pixels and nothing else
        assert np.array_equal(np.where(np.isin(labels, [35, 36]), labels - 2, labels), plain)
        assert a.scene["elbow_right"] == b.scene["elbow_right"]


def test_the_forearm_settings_are_in_the_render_blocks_inputs_digest(hand_model):
    from handsynth.render import RenderOptions
    from ih_assets.rendering import _block_inputs
    from resources.settings import PipelineSettings

    def inputs(**change) -> str:
        settings = PipelineSettings.from_preset("test", **change)
        return json.dumps(_block_inputs(settings, RenderOptions(), hand_model, {"m": b"map"}), sort_keys=True, default=str)

    base = inputs()
    assert inputs(forearms=False) != base and inputs(sleeve_share=0.5) != base and inputs() == base


def test_forearms_render_on_the_stand_in_and_on_a_mano_layout_model(each_hand_model):
    poses = generate_interacting_poses(each_hand_model, 1, seed=5)
    [image] = render_pose_views(each_hand_model, poses, 1, 48, {"a": envmaps.procedural_envmap(0, 16, 32)}, seed=1)
    labels = decode_png(image.pngs["label"])
    assert image.scene["forearms"] and np.isin(labels, [33, 34]).any() and ((labels >= 1) & (labels <= 32)).any()
    assert image.mask_iou >= 0.99
