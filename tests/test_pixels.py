"""One pixel convention: integer pixel coordinates are pixel centres (OpenCV / InterHand2.6M).

Labels, depth and RGB coverage are rendered from known geometry and compared with where the
camera model projects it: exact pixel sets for a square, IoU and centroid for a hand."""

import numpy as np
import pytest

from handsynth.cameras import Camera, project
from handsynth.render.pixel_centres import silhouette_from_projection
from handsynth.render.raster import HandMesh, HandRenderer

W, H = 200, 160
DEPTH_M = 0.5
F = 300.0


@pytest.fixture(scope="module")
def renderer():
    r = HandRenderer(W, H)
    yield r
    r.close()


def _camera() -> Camera:
    K = np.array([[F, 0, 97.3], [0, F, 83.6], [0, 0, 1.0]])   # principal point off-centre, off the grid
    return Camera(K, np.eye(3), np.zeros(3), W, H)


def _square(u0: float, u1: float, v0: float, v1: float, cam: Camera) -> HandMesh:
    """A fronto-parallel rectangle at DEPTH_M whose corners project to (u0..u1, v0..v1), label 1."""
    corners_uv = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    xy = (corners_uv - cam.K[:2, 2]) / F * DEPTH_M
    vertices = np.c_[xy, np.full(4, DEPTH_M)]
    faces = np.array([[0, 2, 1], [0, 3, 2]])     # wound to face the camera (x right, y down, z forward)
    return HandMesh(vertices, faces, np.full((4, 3), 0.8), np.zeros(2, dtype=int), 1)


def _render(renderer, meshes, cam):
    return renderer.render(meshes, cam, [], np.full(3, 0.6), np.zeros((H, W, 3)))


def _centroid(mask: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    w = np.ones(len(rows)) if weight is None else weight[rows, cols].astype(float)
    return np.array([(cols * w).sum(), (rows * w).sum()]) / w.sum()


def test_labels_depth_and_coverage_of_a_square_sit_on_the_pixel_centres_its_corners_enclose(renderer):
    cam = _camera()
    u0, u1, v0, v1 = 40.3, 150.7, 30.2, 120.6            # fractions away from .0 / .5: no ties
    square = _square(u0, u1, v0, v1, cam)
    np.testing.assert_allclose(project(square.vertices, cam.K, cam.R, cam.t)[0], [u0, v0], atol=1e-9)
    result = _render(renderer, [square], cam)
    cols, rows = np.arange(W), np.arange(H)
    expected = ((rows[:, None] >= v0) & (rows[:, None] <= v1)) & ((cols[None] >= u0) & (cols[None] <= u1))
    # pixel (r, c) is the sample at projected (c, r): columns 41..150, rows 31..120 exactly
    np.testing.assert_array_equal(result.labels > 0, expected)
    np.testing.assert_array_equal(result.depth_mm > 0, expected)
    assert set(np.unique(result.labels[expected])) == {1}
    assert np.all(np.abs(result.depth_mm[expected].astype(int) - DEPTH_M * 1000) <= 1)
    # the anti-aliased RGB: full coverage inside, the coverage-weighted centre is the square's centre
    assert (result.alpha[expected[1:-1, 1:-1].nonzero()[0] + 1, expected[1:-1, 1:-1].nonzero()[1] + 1] == 255).all()
    centre = _centroid(result.alpha > 0, result.alpha)
    np.testing.assert_allclose(centre, [(u0 + u1) / 2, (v0 + v1) / 2], atol=0.05)
    np.testing.assert_array_equal(silhouette_from_projection(square.vertices, square.faces, cam), expected)


def test_a_rendered_hand_aligns_with_its_projected_mesh_in_labels_depth_and_rgb(hand_model, renderer):
    from handsynth.cameras import CameraRanges, sample_camera
    from handsynth.sources.procedural import generate_interacting_poses

    poses = generate_interacting_poses(hand_model, 1, seed=3)
    sides = ("right", "left")
    verts = {s: hand_model.forward_numpy(s, poses.hand(s)).vertices[0].numpy().astype(np.float64) for s in sides}
    all_v = np.concatenate([verts[s] for s in sides])
    faces = np.concatenate([hand_model.faces("right"), hand_model.faces("left") + len(verts["right"])])
    cam = sample_camera(all_v.mean(axis=0), all_v, CameraRanges(), np.random.default_rng(5), W, H)
    hands = [HandMesh(verts[s], hand_model.faces(s), np.full((len(verts[s]), 3), 0.7), hand_model.face_labels[s],
                      1 + 16 * k) for k, s in enumerate(sides)]
    result = _render(renderer, hands, cam)
    labels = result.labels > 0
    np.testing.assert_array_equal(result.depth_mm > 0, labels)          # one sampling for both
    sil = silhouette_from_projection(all_v, faces, cam)
    iou = (labels & sil).sum() / (labels | sil).sum()
    assert iou >= 0.995, iou
    assert np.abs(_centroid(labels) - _centroid(sil)).max() < 0.05
    # the RGB's coverage is centred where the labels are: within 0.1 px (anti-aliased coverage against
    # point samples of thin fingers: 0.02-0.064 px seen over the generator's poses), far from the
    # half-pixel offset of the old convention checked below
    assert np.abs(_centroid(result.alpha > 0, result.alpha) - _centroid(labels)).max() < 0.1
    # and the old convention (pixel c sampled at c + 0.5) would be off by half a pixel
    shifted = Camera(cam.K - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]), cam.R, cam.t, W, H)
    assert np.abs(_centroid(silhouette_from_projection(all_v, faces, shifted)) - _centroid(labels)).min() > 0.4


def test_label_meshes_are_drawn_in_their_creation_order_in_every_scene(hand_model, renderer):
    """pyrender draws equally distant mesh nodes in the order of a Python set: the part meshes get
    numbered hashes so that a depth tie between two parts resolves the same way in every process
    (with address hashes the order, and a tied label, changed between runs)."""
    from handsynth.sources.procedural import generate_interacting_poses

    poses = generate_interacting_poses(hand_model, 1, seed=3)
    hands = []
    for k, s in enumerate(("right", "left")):
        verts = hand_model.forward_numpy(s, poses.hand(s)).vertices[0].numpy()
        hands.append(HandMesh(verts, hand_model.faces(s), np.full((len(verts), 3), 0.7), hand_model.face_labels[s],
                              1 + 16 * k))
    orders = []
    for _ in range(3):   # new scenes: new node objects at new addresses
        renderer.set_scene(hands, [], np.full(3, 0.5))
        scene, _, node_colors, _ = renderer._scene
        # all nodes sit at the origin, so pyrender's stable sort by distance keeps the set's order
        drawn = [node_colors[n][0] for n in scene.mesh_nodes if n in node_colors]
        orders.append(drawn)
    assert orders[0] == sorted(orders[0]) and len(orders[0]) == 32
    assert orders[1] == orders[0] and orders[2] == orders[0]


def test_the_preview_lit_per_vertex_matches_pyrenders_own_per_pixel_shader(renderer):
    """The preview lights each vertex with pyrender's BRDF (raster.shade_vertices) and draws the
    colours flat. On a densely tessellated sphere, where per-vertex and per-pixel shading must
    agree, it matches pyrender's own mesh shader with the same lights (a directional light shines
    along its node's -z) and ambient: a flipped light, a missing gamma or another roughness would
    show as tens of levels."""
    import pyrender
    import trimesh

    from handsynth.envmaps import Light

    cam = Camera(np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]]), np.eye(3), np.zeros(3), W, H)
    ball = trimesh.creation.icosphere(subdivisions=5, radius=0.08)
    ball.apply_translation([0.01, -0.02, DEPTH_M])
    colour = np.array([0.85, 0.62, 0.5])
    lights = [Light(np.array([0.6, -0.7, -0.4]), np.array([3.0, 2.8, 2.5])),
              Light(np.array([-0.8, 0.1, -0.6]), np.array([0.6, 0.7, 0.9]))]
    ambient = np.array([0.15, 0.16, 0.2])
    hands = [HandMesh(ball.vertices, ball.faces, np.tile(colour, (len(ball.vertices), 1)),
                      np.zeros(len(ball.faces), dtype=int), 1)]
    ours = renderer.render(hands, cam, lights, ambient, np.zeros((H, W, 3)))

    scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=ambient)
    coloured = trimesh.Trimesh(ball.vertices, ball.faces, vertex_colors=np.c_[np.tile(colour, (len(ball.vertices), 1)),
                                                                                np.ones(len(ball.vertices))], process=False)
    scene.add(pyrender.Mesh.from_trimesh(coloured, smooth=True))
    peak = max(float(light.rgb.max()) for light in lights)
    for light in lights:
        z = light.direction / np.linalg.norm(light.direction)      # the node's +z points at the light
        x = np.cross([0.0, 1.0, 0.0], z)
        x /= np.linalg.norm(x)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
        scene.add(pyrender.DirectionalLight(color=light.rgb / light.rgb.max(), intensity=3.0 * light.rgb.max() / peak),
                  pose=pose)
    view = np.eye(4)
    view[:3, :3] = np.diag([1.0, -1.0, -1.0])                        # OpenCV camera at the origin, in OpenGL terms
    scene.add(pyrender.IntrinsicsCamera(F, F, W / 2 + 0.5, H / 2 + 0.5, znear=0.01, zfar=10.0), pose=view)
    reference, _ = renderer.renderer.render(scene, flags=pyrender.RenderFlags.RGBA)

    inside = (reference[..., 3] == 255) & (ours.alpha == 255)
    assert inside.sum() > 0.3 * np.pi * (F * 0.08 / DEPTH_M) ** 2       # most of the ball's disc
    diff = np.abs(ours.rgb[inside].astype(int) - reference[inside][:, :3].astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3
    assert ours.rgb[inside].std(axis=0).min() > 10                       # lit, not flat: the test can see a light
