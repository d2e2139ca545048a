"""Cycles backend: alignment with the raster labels, seeded determinism, world mapping, device
fallback, worker protocol and errors. Tiny images and few samples; skipped only without bpy."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from handsynth import cameras, envmaps
from handsynth.render import RenderOptions, SceneSpec
from handsynth.render.cycles import CyclesRenderer, WorkerError, cycles_available
from handsynth.render.cycles_worker import camera_lens, read_message, write_message
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import render_pose_views

HAVE_BLENDER, WHY = cycles_available()
needs_blender = pytest.mark.skipif(not HAVE_BLENDER, reason=f"Cycles backend not installed: {WHY}")


def test_worker_frames_round_trip_arrays_and_refuse_foreign_dtypes():
    buf = io.BytesIO()
    arrays = {"v": np.arange(12, dtype=np.float32).reshape(4, 3), "f": np.array([[0, 1, 2]], np.int32)}
    write_message(buf, {"op": "render", "seed": 3}, arrays)
    buf.seek(0)
    header, back = read_message(buf)
    assert header == {"op": "render", "seed": 3}
    assert all(np.array_equal(back[k], arrays[k]) and back[k].dtype == arrays[k].dtype for k in arrays)
    buf = io.BytesIO()
    write_message(buf, {"op": "x"}, {"o": np.array([1 + 2j])})     # complex: not on the whitelist
    buf.seek(0)
    with pytest.raises(ValueError, match="dtype"):
        read_message(buf)


def test_camera_lens_follows_the_principal_point():
    K = np.array([[300.0, 0, 40.0], [0, 300.0, 20.0], [0, 0, 1]])
    lens = camera_lens(K, 64, 48)
    assert lens["lens"] == pytest.approx(300 / 64 * 36)
    # integer pixel coordinates are pixel centres: Blender's frame is shifted by half a pixel
    assert lens["shift_x"] == pytest.approx((32 - 40.5) / 64) and lens["shift_y"] == pytest.approx((20.5 - 24) / 64)
    with pytest.raises(ValueError, match="square pixels"):
        camera_lens(np.diag([300.0, 310.0, 1.0]), 64, 48)


CYCLES = RenderOptions(backend="cycles", samples=8, denoise=False, device="cpu", subdivision=1)


@needs_blender
def test_cycles_rgb_aligns_with_raster_labels_and_repeats_exactly_on_a_fresh_or_a_reused_worker(hand_model):
    """Alpha of the Cycles render vs the raster label mask; the same pose, view and seed give the
    same PNG bytes whether the worker is new or has rendered other poses, maps and skins before
    (render blocks reuse one worker), and every stage of the split ran."""
    from handsynth.render.pool import POOL
    from handsynth.views import STAGES, StageTimes

    poses = generate_interacting_poses(hand_model, 2, seed=0)
    library = {"sky": envmaps.procedural_envmap(0, 32, 64), "dusk": envmaps.procedural_envmap(1, 32, 64)}
    POOL.close_all()
    times = StageTimes()
    first = list(render_pose_views(hand_model, poses, 2, 96, library, seed=0, options=CYCLES, times=times))
    assert all(times.seconds[stage] > 0 for stage in STAGES), times.seconds
    POOL.close_all()
    alone = list(render_pose_views(hand_model, poses.take([1]), 2, 96, library, seed=0, options=CYCLES))
    reused = list(render_pose_views(hand_model, poses.take([0]), 1, 96, library, seed=0, options=CYCLES))
    for img in first:
        assert img.backend["renderer"] == "cycles" and img.backend["device"] == "CPU"
        assert img.alpha_iou >= 0.98, img.alpha_iou
    assert [a.pngs for a in alone] == [b.pngs for b in first[2:]]                  # fresh worker
    assert reused[0].pngs == first[0].pngs                                           # worker reused
    assert first[0].pngs["rgb"] != first[1].pngs["rgb"]


@needs_blender
def test_cycles_images_do_not_depend_on_the_thread_count(hand_model):
    """Several workers share a machine's cores (``RenderOptions.threads``); a worker's thread count
    must not change its images, or re-runs on another machine layout would differ."""
    from dataclasses import replace

    poses = generate_interacting_poses(hand_model, 1, seed=2)
    library = {"sky": envmaps.procedural_envmap(2, 32, 64)}
    one, two = (list(render_pose_views(hand_model, poses, 1, 64, library, seed=0,
                                       options=replace(CYCLES, denoise=True, threads=n)))[0] for n in (1, 2))
    assert one.pngs["rgb"] == two.pngs["rgb"]


@needs_blender
def test_alpha_check_blocks_a_cycles_camera_a_few_pixels_off(hand_model, monkeypatch):
    """The blocking check on rendered_views passes the aligned renders and fails when the Cycles
    camera is shifted by 2 px against the camera of the labels."""
    from dagster import AssetKey

    from quality.rendering_checks import alpha_matches_labels

    poses = generate_interacting_poses(hand_model, 1, seed=0)
    library = {"sky": envmaps.procedural_envmap(0, 32, 64)}

    def manifest() -> pd.DataFrame:
        images = list(render_pose_views(hand_model, poses, 2, 96, library, seed=0, options=CYCLES))
        return pd.DataFrame({"image_id": [i.record.image_id for i in images], "alpha_iou": [i.alpha_iou for i in images]})

    aligned = alpha_matches_labels(manifest())
    begin = CyclesRenderer.begin

    def shifted_begin(self, scene, seed):
        cam = scene.camera
        off = cameras.Camera(cam.K + np.array([[0, 0, 2.0], [0, 0, 0], [0, 0, 0]]), cam.R, cam.t, cam.width, cam.height)
        return begin(self, SceneSpec(scene.hands, off, scene.env_name, scene.env, scene.env_rotation, scene.exposure), seed)

    monkeypatch.setattr(CyclesRenderer, "begin", shifted_begin)
    shifted = alpha_matches_labels(manifest())
    spec = next(iter(alpha_matches_labels.check_specs))
    assert spec.blocking and spec.asset_key == AssetKey("rendered_views")
    assert aligned.passed and aligned.metadata["min_alpha_iou"].value >= 0.98
    assert not shifted.passed and shifted.metadata["min_alpha_iou"].value < 0.97


@needs_blender
def test_only_the_pixels_the_hands_can_touch_are_path_traced_and_nothing_else_changes(hand_model):
    """Each view renders the hands' projected box (plus the pixel filter's reach): without the
    denoiser, the same RGBA as the whole frame, pixel for pixel."""
    from handsynth.render.cycles import hands_region
    from handsynth.views import hand_meshes, hand_surface, pose_geometry

    surface = hand_surface(hand_model, 1, forearms=False)
    geometry = pose_geometry(hand_model, surface, generate_interacting_poses(hand_model, 1, seed=4), seed=0)
    colors = {s: np.full((surface.n_vertices[s], 3), 0.4) for s in ("right", "left")}
    points = geometry.all_vertices
    cam = cameras.sample_camera(points.mean(axis=0), points, cameras.CameraRanges(), np.random.default_rng(1), 80, 80)
    renderer = CyclesRenderer(80, 80, surface.both_faces, surface.hand_of_face, samples=4, denoise=False, device="cpu")
    try:
        env = envmaps.procedural_envmap(3, 16, 32)
        renderer.render(SceneSpec(hand_meshes(geometry, surface, colors), cam, "m", env, 0.5, 1.0), seed=2)
        request = {"op": "render", "seed": 2, "envmap": "m", "env_rotation": 0.5,
                   "camera": {"K": cam.K.tolist(), "R": cam.R.tolist(), "t": cam.t.tolist()}}
        whole = renderer._call(request)[1]["rgba"]
        region = hands_region(points, cam)
        part = renderer._call({**request, "region": region})[1]["rgba"]
    finally:
        renderer.close()
    x0, y0, x1, y1 = region
    assert (x1 - x0 + 1) * (y1 - y0 + 1) < 0.8 * 80 * 80 and (whole[..., 3] > 0).any()
    np.testing.assert_array_equal(part, whole)


@needs_blender
def test_forearm_skin_stops_scattering_beyond_the_wrist_and_nothing_else_changes(hand_model):
    """Forearm slots fade their subsurface scattering out along UV v (views.forearm_subsurface_fade):
    against the same view with scattering everywhere (no denoiser, same seed), the arm beyond the
    fade's end changes (and keeps its brightness), the hands away from the arms do not; a fade
    beyond the arm's end passes the material's weight through unchanged, pixel for pixel."""
    from handsynth.render.pixel_centres import silhouette_from_projection
    from handsynth.views import forearm_subsurface_fade, hand_meshes, hand_surface, material_slots, pose_geometry

    surface = hand_surface(hand_model, 0, forearms=True)
    geometry = pose_geometry(hand_model, surface, generate_interacting_poses(hand_model, 1, seed=4), seed=0)
    colors = {s: np.full((surface.n_vertices[s], 3), 0.5) for s in ("right", "left")}
    points = geometry.hand_points
    cam = cameras.sample_camera(points.mean(axis=0), points, cameras.CameraRanges(), np.random.default_rng(1), 80, 80)
    slots, (v0, v1) = forearm_subsurface_fade()
    images = {}
    for name, fade in (("scattering", None), ("faded", (slots, (v0, v1))), ("beyond the arm", (slots, (1e3, 2e3)))):
        renderer = CyclesRenderer(80, 80, surface.both_faces, surface.hand_of_face, samples=8, denoise=False,
                                  device="cpu", uv=surface.corner_uv, subsurface_fade=fade)
        try:
            renderer.set_geometry(hand_meshes(geometry, surface, colors), {"subsurface_scale_m": 0.001},
                                  material_slots(geometry))
            renderer.begin(SceneSpec([], cam, "m", envmaps.procedural_envmap(3, 16, 32), 0.5, 1.0), seed=2)
            images[name] = renderer.finish()
        finally:
            renderer.close()
    vertices = np.concatenate([geometry.vertices[s] for s in ("right", "left")])
    faces = surface.both_faces
    arm = np.concatenate([np.arange(len(surface.faces[s])) >= surface.n_hand_faces[s] for s in ("right", "left")])
    far = arm & (surface.corner_uv[..., 1].min(axis=1) > v1)
    far_arm = silhouette_from_projection(vertices, faces[far], cam) & ~silhouette_from_projection(vertices, faces[~far], cam)
    hands = silhouette_from_projection(vertices, faces[~arm], cam) & ~silhouette_from_projection(vertices, faces[arm], cam)
    changed = (images["faded"] != images["scattering"]).any(axis=-1)
    assert far_arm.sum() > 100 and hands.sum() > 300, (far_arm.sum(), hands.sum())
    assert changed[far_arm].mean() > 0.9 and changed[hands].mean() < 0.2, (changed[far_arm].mean(), changed[hands].mean())
    brightness = [images[name][far_arm][:, :3].mean() for name in ("faded", "scattering")]
    assert brightness[0] == pytest.approx(brightness[1], rel=0.1), brightness
    np.testing.assert_array_equal(images["beyond the arm"], images["scattering"])


@needs_blender
def test_cycles_world_matches_the_numpy_environment_lookup_and_rotation():
    """Cycles' own rendering of the world (film not transparent, nothing else in view) against the
    numpy view of the rotated map that is composited behind the hands: checks the y-up -> z-up
    mapping and the rotation sign (the worker turns hands and camera instead of the map)."""
    from handsynth.render.raster import HandMesh

    env = np.full((32, 64, 3), 0.05, np.float32)
    env[10:14, 20:24] = [4.0, 1.0, 0.2]               # a distinct warm patch
    faces = np.array([[0, 1, 2]], np.int32)
    speck = np.array([[0.0, -50.0, 0.0], [0.01, -50.0, 0.0], [0.0, -50.0, 0.01]])   # far below, out of view
    renderer = CyclesRenderer(48, 48, faces, [0], samples=16, denoise=False, device="cpu")
    try:
        for rotation in (0.0, 1.0):
            c, s = np.cos(rotation), np.sin(rotation)
            d = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]) @ envmaps.pixel_directions(32, 64)[12, 22]
            # look_at puts the camera at azimuth/elevation of -d, looking along d toward the patch
            R, t = cameras.look_at(np.zeros(3), np.rad2deg(np.arctan2(-d[2], -d[0])), np.rad2deg(np.arcsin(-d[1])), 1.0, 0.0)
            cam = cameras.Camera(np.array([[40.0, 0, 24], [0, 40.0, 24], [0, 0, 1]]), R, t, 48, 48)
            # render() sends the map (and composites); then ask the worker for the visible world itself
            renderer.render(SceneSpec([HandMesh(speck, faces, np.full((3, 3), 0.5), np.zeros(1, int), 1)],
                                      cam, "patch", env, rotation, 1.0), seed=0)
            _, raw = renderer._call({"op": "render", "seed": 0, "envmap": "patch", "env_rotation": rotation,
                                     "transparent": False,
                                     "camera": {"K": cam.K.tolist(), "R": R.tolist(), "t": t.tolist()}})
            world = raw["rgba"][..., :3]
            expected = envmaps.envmap_view(env, cam, rotation)
            assert expected[22:26, 22:26, 0].mean() > 2.0     # the patch is in the centre of the numpy view
            hot_c, hot_e = world[..., 0] > 1.0, expected[..., 0] > 1.0
            assert hot_c.sum() > 0 and (hot_c & hot_e).sum() / (hot_c | hot_e).sum() > 0.8
            assert np.abs(world - expected).mean() < 0.1
    finally:
        renderer.close()


@needs_blender
def test_device_request_without_gpu_falls_back_to_cpu():
    faces = np.array([[0, 1, 2]], np.int32)
    renderer = CyclesRenderer(16, 16, faces, [0], samples=1, denoise=False, device="cuda")
    try:
        assert renderer.device == "CPU" or renderer.device.startswith(("CUDA", "OPTIX"))
        note = renderer._stderr_tail()
        if renderer.device == "CPU":
            assert "falling back to CPU" in note
    finally:
        renderer.close()


@needs_blender
def test_worker_errors_are_raised_with_context():
    faces = np.array([[0, 1, 2]], np.int32)
    renderer = CyclesRenderer(16, 16, faces, [0], samples=1, denoise=False, device="cpu")
    try:
        with pytest.raises(WorkerError, match="never sent"):
            renderer._call({"op": "render", "seed": 0, "envmap": "missing", "camera": {}})
        renderer._proc.kill()
        renderer._proc.wait()
        with pytest.raises(WorkerError, match="exited"):
            renderer._call({"op": "quit"})
    finally:
        renderer.close(kill=True)


@needs_blender
def test_skin_textures_reach_the_surface_through_the_uvs():
    """A square facing the camera, UVs spanning the texture: a texture red on its left half and
    green on its right must come out red left, green right (UV orientation and row order)."""
    from handsynth.render.raster import HandMesh

    v = np.array([[-0.1, -0.1, 0.0], [0.1, -0.1, 0.0], [0.1, 0.1, 0.0], [-0.1, 0.1, 0.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 0], [1, 1], [0, 1]], np.float32).reshape(2, 3, 2)
    albedo = np.zeros((8, 8, 3), np.float32)
    albedo[:, :4, 0] = 0.8
    albedo[:, 4:, 1] = 0.8
    albedo[:2] = 0.8                                   # top rows white: texture row 0 is the top (v = 1)
    env = np.full((16, 32, 3), 1.0, np.float32)
    R, t = cameras.look_at(np.zeros(3), 90.0, 0.0, 1.0, 0.0)     # on +z, looking at the square's front
    cam = cameras.Camera(np.array([[150.0, 0, 16], [0, 150.0, 16], [0, 0, 1]]), R, t, 32, 32)
    renderer = CyclesRenderer(32, 32, faces, [0, 0], samples=16, denoise=False, device="cpu", uv=uv)
    try:
        renderer.set_skin(0, albedo, np.full((8, 8), 0.5, np.float32), np.zeros((8, 8), np.float32),
                          np.full((8, 8), 0.5, np.float32))
        hand = HandMesh(v, faces, np.full((4, 3), 0.5), np.zeros(2, int), 1)
        rgb = renderer.render(SceneSpec([hand], cam, "white", env, 0.0, 1.0, {"subsurface_weight": 0.0}), seed=0).rgb
    finally:
        renderer.close()
    u_right = cameras.project(np.array([[0.05, 0.0, 0.0]]), cam.K, cam.R, cam.t)[0]
    left, right = rgb[16, int(32 - u_right[0])], rgb[16, int(u_right[0])]
    top = rgb[int(cameras.project(np.array([[0.0, 0.09, 0.0]]), cam.K, cam.R, cam.t)[0, 1]), 16]
    assert left[0] > 2 * left[1] and right[1] > 2 * right[0], (left, right)
    assert top.min() > 0.8 * top.max(), top            # white band at the top of the texture


@needs_blender
def test_specular_map_reaches_the_skin_material():
    """A grey square under a uniform white sky, specular level 0 on the texture's left half and 1
    on its right: the right reflects more (Fresnel F0 0.08 against 0) and comes out brighter. An
    unlinked map would leave both halves at the material's constant level."""
    from handsynth.render.raster import HandMesh

    v = np.array([[-0.1, -0.1, 0.0], [0.1, -0.1, 0.0], [0.1, 0.1, 0.0], [-0.1, 0.1, 0.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 0], [1, 1], [0, 1]], np.float32).reshape(2, 3, 2)
    specular = np.zeros((8, 8), np.float32)
    specular[:, 4:] = 1.0
    R, t = cameras.look_at(np.zeros(3), 90.0, 0.0, 1.0, 0.0)
    cam = cameras.Camera(np.array([[150.0, 0, 16], [0, 150.0, 16], [0, 0, 1]]), R, t, 32, 32)
    renderer = CyclesRenderer(32, 32, faces, [0, 0], samples=32, denoise=False, device="cpu", uv=uv)
    try:
        renderer.set_skin(0, np.full((8, 8, 3), 0.3, np.float32), np.full((8, 8), 0.3, np.float32),
                          np.full((8, 8), 0.5, np.float32), specular)
        hand = HandMesh(v, faces, np.full((4, 3), 0.3), np.zeros(2, int), 1)
        rgb = renderer.render(SceneSpec([hand], cam, "white", np.ones((16, 32, 3), np.float32), 0.0, 1.0,
                                        {"subsurface_weight": 0.0}), seed=0).rgb.astype(float)
    finally:
        renderer.close()
    right = cameras.project(np.array([[0.05, 0.0, 0.0]]), cam.K, cam.R, cam.t)[0, 0]
    edge = int(right) - 16           # a quarter of the square's width in pixels
    left_half, right_half = rgb[8:24, 16 - edge - 3:16 - 2].mean(), rgb[8:24, 16 + 2:16 + edge + 3].mean()
    assert right_half > left_half + 4, (left_half, right_half)


@needs_blender
def test_the_views_lens_blurs_the_cycles_hands(hand_model):
    """A lens focused at half the hands' distance blurs their outline into a band of partial
    coverage (the worker sets Blender's thin lens); the same view through a pinhole has a sharp
    outline. The path-traced region grows by the blur: without the denoiser it gives the whole
    frame's RGBA, pixel for pixel."""
    from handsynth.render.cycles import hands_region
    from handsynth.render.depth_of_field import DepthOfField, cycles_dof
    from handsynth.views import hand_meshes, hand_surface, pose_geometry

    surface = hand_surface(hand_model, 0, forearms=False)
    geometry = pose_geometry(hand_model, surface, generate_interacting_poses(hand_model, 1, seed=4), seed=0)
    colors = {s: np.full((surface.n_vertices[s], 3), 0.4) for s in ("right", "left")}
    points = geometry.all_vertices
    cam = cameras.sample_camera(points.mean(axis=0), points, cameras.CameraRanges(), np.random.default_rng(1), 64, 64)
    distance = float(cam.R[2] @ points.mean(axis=0) + cam.t[2])
    lens = DepthOfField(50.0, 1.0, distance / 2, 0.0)
    renderer = CyclesRenderer(64, 64, surface.both_faces, surface.hand_of_face, samples=8, denoise=False, device="cpu")
    try:
        env = envmaps.procedural_envmap(3, 16, 32)
        hands = hand_meshes(geometry, surface, colors)
        alpha = {name: renderer.render(SceneSpec(hands, cam, "m", env, 0.0, 1.0, lens=chosen), seed=2).alpha
                 for name, chosen in (("pinhole", None), ("lens", lens))}
        request = {"op": "render", "seed": 2, "envmap": "m", "env_rotation": 0.0, "lens": cycles_dof(cam, lens),
                   "camera": {"K": cam.K.tolist(), "R": cam.R.tolist(), "t": cam.t.tolist()}}
        whole = renderer._call(request)[1]["rgba"]
        region = hands_region(points, cam, lens)
        part = renderer._call({**request, "region": region})[1]["rgba"]
    finally:
        renderer.close()
    assert lens.blur_px(float(cam.K[0, 0]), distance) > 6
    partial = {name: int(((a > 0.1) & (a < 0.9)).sum()) for name, a in alpha.items()}
    assert partial["lens"] > 2 * partial["pinhole"], partial
    pinhole_region = hands_region(points, cam)
    assert region[0] < pinhole_region[0] and region[1] < pinhole_region[1]        # grown by the blur's radius
    assert region[2] > pinhole_region[2] and region[3] > pinhole_region[3]
    np.testing.assert_array_equal(part, whole)


@needs_blender
def test_cycles_with_lens_and_camera_effects_repeats_exactly_and_stays_aligned_with_the_labels(hand_model):
    """The pipeline's look (lens and effects drawn with the settings' ranges) on Cycles: the same
    seed gives the same bytes, and the photo's alpha still matches the raster labels."""
    from quality.rendering_checks import MIN_ALPHA_IOU
    from handsynth.views import CameraLook

    poses = generate_interacting_poses(hand_model, 1, seed=0)
    library = {"sky": envmaps.procedural_envmap(0, 32, 64)}
    look = CameraLook.from_switches(depth_of_field=True, camera_effects=True)
    first, second = (list(render_pose_views(hand_model, poses, 2, 96, library, seed=0, options=CYCLES, look=look))
                     for _ in range(2))
    assert [a.pngs for a in first] == [b.pngs for b in second]
    assert all(img.lens.f_number > 0 and img.alpha_iou >= MIN_ALPHA_IOU for img in first), [i.alpha_iou for i in first]


def test_corner_values_follow_loop_subdivision_face_order(hand_model):
    """Per-corner values (here the rest positions themselves) carried through subdivide_corners
    must match subdivide()'s faces: a corner on an original vertex carries that vertex's value,
    and every corner on the same new (edge) vertex carries one value, its edge midpoint."""
    from handsynth.views import subdivide, subdivide_corners

    v = hand_model.layers["right"].v_template.detach().cpu().numpy().astype(np.float64)
    f = hand_model.faces("right")
    _, sf = subdivide(v, f, 1)
    corners = subdivide_corners(v[f], 1)
    assert corners.shape == (4 * len(f), 3, 3)
    idx, vals = sf.ravel(), corners.reshape(-1, 3)
    even = idx < len(v)
    assert np.allclose(vals[even], v[idx[even]])
    order = np.argsort(idx[~even], kind="stable")
    odd_idx, odd_vals = idx[~even][order], vals[~even][order]
    first = np.searchsorted(odd_idx, odd_idx)
    assert np.allclose(odd_vals, odd_vals[first])


def test_cycles_setting_falls_back_to_raster_without_blender(monkeypatch, tmp_path):
    from resources.renderer import render_options
    from resources.settings import settings_from_env

    settings = settings_from_env({"IH_PRESET": "demo", "IH_DENOISE": "false", "IH_RENDER_SAMPLES": "3"})
    assert settings.renderer == "cycles" and settings.denoise is False and settings.render_samples == 3
    monkeypatch.setenv("IH_BLENDER_PYTHON", str(tmp_path / "no-python"))
    said = []
    options = render_options(settings, said.append)
    assert options.backend == "raster" and "no-python" in said[0]
    monkeypatch.setenv("IH_DEVICE", "cuda:0")
    monkeypatch.setenv("IH_BLENDER_PYTHON", str(tmp_path))              # exists: Cycles kept
    assert render_options(settings).device == "cuda" and render_options(settings).backend == "cycles"
    with pytest.raises(ValueError, match="IH_DENOISE"):
        settings_from_env({"IH_DENOISE": "maybe"})
