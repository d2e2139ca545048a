"""Backgrounds a camera would see: footprint-filtered environment lookups (no magnified texel
squares, no aliasing of fine maps) and thin-lens depth of field (numpy and Cycles agree)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from scipy import ndimage

from handsynth import cameras, envmaps
from handsynth.render import depth_of_field as dof
from handsynth.render.cycles import blender_python, cycles_available


def _camera_at(direction: np.ndarray, focal_px: float, size: int) -> cameras.Camera:
    """A camera at the origin looking along world ``direction`` (image centre = that direction)."""
    d = -direction   # look_at places the camera at centre + distance * (its azimuth/elevation direction)
    R, t = cameras.look_at(np.zeros(3), np.rad2deg(np.arctan2(d[2], d[0])), np.rad2deg(np.arcsin(d[1])), 1e-6, 0.0)
    K = np.array([[focal_px, 0, (size - 1) / 2], [0, focal_px, (size - 1) / 2], [0, 0, 1.0]])
    return cameras.Camera(K, R, t, size, size)


def _bilinear_view(env: np.ndarray, cam: cameras.Camera) -> np.ndarray:
    """The unfiltered lookup (bilinear on the raw map), as a reference for what the filter fixes."""
    h, w = cam.height, cam.width
    u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(cam.K).T @ cam.R
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    y = np.arccos(np.clip(rays[..., 1], -1, 1)) / np.pi * env.shape[0] - 0.5
    x = np.mod((np.arctan2(rays[..., 2], rays[..., 0]) + np.pi) / (2 * np.pi), 1.0) * env.shape[1] - 0.5
    return np.stack([ndimage.map_coordinates(env[..., c], [y, x], order=1, mode="grid-wrap") for c in range(3)], -1)


def test_a_bright_texel_magnified_9x_is_a_round_spot_where_it_belongs():
    """The npm maps' failure: an HDR texel (a lamp, sky through leaves) seen ~9x magnified and
    tone-mapped is a hard square with bilinear lookup; the filtered view makes it round."""
    env = np.full((32, 64, 3), 0.02, np.float32)
    env[12, 20] = 20.0
    direction = envmaps.pixel_directions(32, 64)[12, 20]
    cam = _camera_at(direction, 9 * 64 / (2 * np.pi), 96)

    def shape(view: np.ndarray) -> tuple[float, np.ndarray]:
        spot = envmaps.tone_map(view)[..., 0] > 128
        ys, xs = np.nonzero(spot)
        box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
        return spot.sum() / box, np.array([xs.mean(), ys.mean()])

    square, where_bilinear = shape(_bilinear_view(env, cam))
    round_, where = shape(envmaps.envmap_view(env, cam))
    assert square > 0.95            # the measure sees the square
    assert round_ < 0.85            # a disc fills pi/4 of its box
    centre = (cam.width - 1) / 2
    assert np.abs(where - centre).max() < 0.5 and np.abs(where_bilinear - centre).max() < 0.5


def test_codec_colour_specks_fade_while_luminance_edges_stay_sharp():
    """DWAB keeps colour coarser than luminance: its damage is coloured specks. The view smooths a
    map's colour over ~1 texel and its luminance far less."""
    env = np.full((32, 64, 3), 0.5, np.float32)
    env[:, 32:] = 0.1                                       # a luminance edge between columns 31 and 32
    env[12, 20] = [0.3, 0.3, 3.0]                           # a blue speck in the bright half
    magnify = 9 * 64 / (2 * np.pi)
    speck = _camera_at(envmaps.pixel_directions(32, 64)[12, 20], magnify, 96)

    def blueness(view: np.ndarray) -> float:
        return float((view[..., 2] / view[..., 1]).max() - 1.0)

    assert blueness(envmaps.envmap_view(env, speck)) < 0.3 * blueness(_bilinear_view(env, speck))
    edge_direction = envmaps.pixel_directions(32, 64)[16, 31] + envmaps.pixel_directions(32, 64)[16, 32]
    edge = _camera_at(edge_direction / np.linalg.norm(edge_direction), magnify, 96)
    profile = envmaps.envmap_view(env, edge)[48, :, 1]
    p = (profile - profile.min()) / np.ptp(profile)
    width_texels = ((p > 0.1) & (p < 0.9)).sum() / 9.0
    assert width_texels < 2.0                               # ~0.65 texel of blur in all


def test_a_fine_map_seen_small_is_averaged_not_aliased():
    """A 2-texel checker seen at 4 texels per pixel: bilinear point samples alias into moire; the
    pyramid level matched to the pixel footprint gives the mean."""
    h, w = 512, 1024
    env = np.repeat(((np.add.outer(np.arange(h), np.arange(w)) % 2) * 1.0)[..., None], 3, axis=2).astype(np.float32)
    cam = _camera_at(np.array([1.0, 0.1, 0.3]) / np.linalg.norm([1.0, 0.1, 0.3]), w / (2 * np.pi * 4), 64)
    assert _bilinear_view(env, cam).std() > 0.1
    view = envmaps.envmap_view(env, cam)
    assert view.mean() == pytest.approx(0.5, abs=0.02) and view.std() < 0.02


def test_view_keeps_the_map_orientation_and_rotation():
    """A smooth map (a known function of direction) is reproduced at every pixel's ray, turned by
    ``rotation`` as the docstring says: a feature at azimuth phi moves to phi + rotation."""
    d = envmaps.pixel_directions(128, 256)
    env = (1.0 + 0.5 * d[..., 0:1] + 0.3 * d[..., 1:2] + 0.2 * d[..., 2:3] * np.array([1.0, 0.5, 0.2])).astype(np.float32)
    cam = _camera_at(np.array([0.3, 0.2, -0.9]) / np.linalg.norm([0.3, 0.2, -0.9]), 60.0, 32)
    rotation = 0.8
    u, v = np.meshgrid(np.arange(32.0), np.arange(32.0))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(cam.K).T @ cam.R
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    c, s = np.cos(-rotation), np.sin(-rotation)
    src = rays @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]).T     # azimuth - rotation: where the map is read
    expected = 1.0 + 0.5 * src[..., 0:1] + 0.3 * src[..., 1:2] + 0.2 * src[..., 2:3] * np.array([1.0, 0.5, 0.2])
    assert np.abs(envmaps.envmap_view(env, cam, rotation) - expected).max() < 0.01


def test_defocus_is_a_disc_of_the_thin_lens_diameter_and_reads_beyond_the_frame():
    for diameter in (3.0, 8.0, 15.0):
        k = dof.disc_kernel(diameter)
        c = k.shape[0] // 2
        x = np.arange(k.shape[0]) - c
        second_moment = (k * x[None, :] ** 2).sum()                 # a uniform disc: r^2 / 4
        assert k.sum() == pytest.approx(1.0) and np.allclose(k, k[::-1, ::-1])
        assert 4 * np.sqrt(second_moment) == pytest.approx(diameter, rel=0.04)
    assert dof.disc_kernel(0.5).shape == (1, 1)
    # a uniform map stays uniform up to the border (the margin is rendered, not padded)
    flat = np.full((32, 64, 3), 0.3, np.float32)
    cam = _camera_at(np.array([0.0, 0.0, 1.0]), 80.0, 32)
    assert np.allclose(envmaps.envmap_view(flat, cam, defocus_px=9.0), 0.3, rtol=1e-4)
    # a light 8 px right of the frame bleeds into it through a disc of radius 10 px
    env = np.full((128, 256, 3), 0.01, np.float32)
    outside = cam.R.T @ np.linalg.inv(cam.K) @ np.array([39.0, 15.5, 1.0])
    d = envmaps.pixel_directions(128, 256)
    texel = np.argmax(d @ (outside / np.linalg.norm(outside)))
    env[texel // 256, texel % 256] = 100.0
    sharp, blurred = envmaps.envmap_view(env, cam), envmaps.envmap_view(env, cam, defocus_px=20.0)
    assert blurred[:, -1].mean() > 3 * sharp[:, -1].mean()


def test_circle_of_confusion_matches_the_lens_equation():
    """Against the thin-lens geometry: sensor at the image of the focus plane, a point at depth d
    images at v_d; its cone of base A crosses the sensor as a disc A |v_s - v_d| / v_d."""
    f, n, s, focal_px = 0.025, 2.8, 1.0, 740.0
    a = f / n
    v_s = 1.0 / (1.0 / f - 1.0 / s)
    pitch = v_s / focal_px                                      # K's focal length is the image distance in pixels
    for d in (0.9, 1.1, 3.0, 1e6):
        v_d = 1.0 / (1.0 / f - 1.0 / d)
        assert dof.circle_of_confusion_px(focal_px, a, s, d) == pytest.approx(a * abs(v_s - v_d) / v_d / pitch, rel=1e-4)
    assert dof.circle_of_confusion_px(focal_px, a, s) == pytest.approx(focal_px * a / s)


def test_sampled_lenses_focus_on_the_hands_and_record_as_json():
    R, t = cameras.look_at(np.zeros(3), 30.0, 10.0, 1.1, 5.0)
    cam = cameras.Camera(np.array([[740.0, 0, 127.5], [0, 740.0, 127.5], [0, 0, 1]]), R, t, 256, 256)
    hands = np.array([0.02, -0.01, 0.03])
    lenses = [dof.sample_depth_of_field(np.random.default_rng(s), cam, hands) for s in range(100)]
    for lens in lenses:
        assert lens.focus_distance_m == pytest.approx(float((R @ hands + t)[2]))
        assert 4.0 <= lens.focal_length_mm <= 50.0 and 1.8 <= lens.f_number <= 11.0
        assert lens.background_blur_px == pytest.approx(740.0 * lens.aperture_mm * 1e-3 / lens.focus_distance_m)
        assert dof.DepthOfField.from_record(json.loads(json.dumps(lens.to_record()))) == lens
    blur = np.array([lens.background_blur_px for lens in lenses])
    assert blur.min() < 1.0 and blur.max() > 8.0           # from phone-sharp to strong bokeh
    off = dof.sample_depth_of_field(np.random.default_rng(0), cam, hands, dof.DepthOfFieldRanges(share=0.0))
    assert off.f_number == 0.0 and off.background_blur_px == 0.0 and off.blur_px(740.0, 5.0) == 0.0
    assert dof.cycles_dof(cam, off) == {"dof.use_dof": False}
    with pytest.raises(ValueError, match="row 5: .*focus_distance_m"):
        dof.DepthOfField.from_record({**lenses[0].to_record(), "focus_distance_m": -1.0}, where="row 5")


def test_a_views_background_through_its_lens_has_no_edge_sharper_than_the_lens_allows(hand_model):
    """The compression blocks of a lossy map (a checkerboard of 8 x 8-texel blocks, levels 0 and
    1, at the npm maps' 512 x 256) seen through the pipeline's view stage: with the view's lens
    the background's steepest step between neighbouring pixels is at most that of a disc of the
    recorded blur diameter, 4 / (pi D) of the contrast, so no block edge is visible as a line; the
    same views through a pinhole show the blocks' edges well above that bound."""
    from handsynth.views import CameraLook, PoseLighting, hand_surface, pose_geometry, view_setup
    from handsynth.sources.procedural import generate_interacting_poses

    rows, cols = np.indices((256, 512))
    blocks = ((rows // 8 + cols // 8) % 2).astype(np.float32)
    pyramid = envmaps.EnvmapPyramid(np.repeat(blocks[..., None], 3, -1))
    geometry = pose_geometry(hand_model, hand_surface(hand_model, 0), generate_interacting_poses(hand_model, 1, seed=0), seed=0)
    lighting = PoseLighting("blocks", 0.0, 1.0)
    fast_lens = CameraLook(lens=dof.DepthOfFieldRanges(focal_length_mm=(50.0, 50.0), f_number=(1.0, 1.0)))

    def steepest(view: np.ndarray) -> float:
        return float(max(np.abs(np.diff(view, axis=a)).max() for a in (0, 1)))

    for v in range(4):
        pinhole = view_setup(geometry, lighting, pyramid, 0, v, 256, cameras.CameraRanges())
        lens = view_setup(geometry, lighting, pyramid, 0, v, 256, cameras.CameraRanges(), fast_lens)
        np.testing.assert_array_equal(lens.camera.K, pinhole.camera.K)
        bound = 4 / (np.pi * lens.lens.background_blur_px)
        assert lens.lens.background_blur_px > 20
        assert steepest(lens.background) <= 1.1 * bound, (v, steepest(lens.background), bound)
        assert steepest(pinhole.background) > 1.4 * bound, (v, steepest(pinhole.background), bound)


HAVE_BLENDER, WHY = cycles_available()

_BLENDER_SCRIPT = r"""
import json, sys
import bpy, numpy as np
settings, size, focal_px = json.loads(sys.argv[-1])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine, scene.cycles.device, scene.cycles.samples = "CYCLES", "CPU", 512
scene.cycles.use_denoising = False
scene.render.resolution_x = scene.render.resolution_y = size
scene.render.resolution_percentage = 100
bpy.ops.mesh.primitive_uv_sphere_add(radius=0.05, location=(0, 0, -20))      # a small light 20 m ahead
mat = bpy.data.materials.new("light")
mat.use_nodes = True
nodes = mat.node_tree.nodes
nodes.clear()
emission, output = nodes.new("ShaderNodeEmission"), nodes.new("ShaderNodeOutputMaterial")
emission.inputs["Strength"].default_value = 5000.0
mat.node_tree.links.new(emission.outputs[0], output.inputs[0])
bpy.context.object.data.materials.append(mat)
data = bpy.data.cameras.new("camera")
data.sensor_fit = "HORIZONTAL"
for path, value in settings.items():      # how the worker applies cycles_dof()
    target = data
    *parents, name = path.split(".")
    for p in parents:
        target = getattr(target, p)
    setattr(target, name, value)
camera = bpy.data.objects.new("camera", data)
scene.collection.objects.link(camera)
scene.camera = camera
scene.world = bpy.data.worlds.new("dark")
scene.world.use_nodes = True
scene.world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.0
scene.render.filepath = sys.argv[-2]
scene.render.image_settings.file_format, scene.render.image_settings.color_depth = "OPEN_EXR", "32"
bpy.ops.render.render(write_still=True)
img = bpy.data.images.load(sys.argv[-2])
px = np.empty(size * size * 4, np.float32)
img.pixels.foreach_get(px)
lum = px.reshape(size, size, 4)[..., 0].astype(np.float64)
x = np.arange(size)[None, :]
cx = (lum * x).sum() / lum.sum()
print("SPOT", json.dumps(4 * float(np.sqrt((lum * (x - cx) ** 2).sum() / lum.sum()))))
"""


@pytest.mark.skipif(not HAVE_BLENDER, reason=f"Cycles not installed: {WHY}")
def test_cycles_blurs_a_far_light_as_much_as_the_numpy_background(tmp_path):
    """cycles_dof's settings make Blender's aperture the sampled one: a small far light renders
    as a disc of the diameter the numpy background uses (measured by its second moment, less
    the ~2 px the light and pixel filter are wide in focus)."""
    size, focal_px = 64, 200.0
    cam = cameras.Camera(np.array([[focal_px, 0, 31.5], [0, focal_px, 31.5], [0, 0, 1]]), np.eye(3), np.zeros(3), size, size)
    script = tmp_path / "dof.py"
    script.write_text(_BLENDER_SCRIPT)

    def spot(lens: dof.DepthOfField) -> float:
        settings = dof.cycles_dof(cam, lens)
        settings.setdefault("sensor_width", 36.0)
        settings.setdefault("lens", focal_px / size * 36.0)
        out = subprocess.run([str(blender_python()), str(script), str(tmp_path / "spot.exr"),
                              json.dumps([settings, size, focal_px])], capture_output=True, text=True, timeout=600)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("SPOT")]
        assert line, out.stdout[-2000:] + out.stderr[-2000:]
        return float(line[0].split()[1])

    in_focus = spot(dof.DepthOfField())
    lens = dof.DepthOfField(focal_length_mm=50.0, f_number=1.0, focus_distance_m=1.0)   # A = 50 mm
    expected = lens.blur_px(focal_px, 20.0)                                               # 9.5 px
    measured = np.sqrt(spot(lens) ** 2 - in_focus**2)
    assert measured == pytest.approx(expected, rel=0.1), (measured, expected, in_focus)
