"""Headless rendering of two hands with pyrender: RGB, part labels and depth, aligned at pixel centres.

EGL is selected before OpenGL loads: Mesa's llvmpipe on a CPU machine, the NVIDIA driver on a GPU
one, same code. One OffscreenRenderer (GL context) serves every :class:`HandRenderer` of the
process, whatever its size (creating a context costs far more than a 256 x 256 frame, and
pyrender's ``delete`` terminates the EGL display under every other context of the process).
Labels come from pyrender's segmentation pass, one node per (hand, part) submesh with a flat
colour = label id, so they are exact integers:
0 background, 1..16 right-hand parts (1 + part), 17..32 left-hand parts, 33/34 forearms, 35/36
sleeves, 37/38 wrist pieces, 39/40 rings (README "Label values"). Depth comes from the same
pass (see ``HandRenderer``); pixel (r, c) of every output is the sample at projected (c, r).

The preview RGB is lit per vertex (:func:`shade_vertices`: pyrender's metallic-roughness BRDF
evaluated in numpy) and drawn with pyrender's flat shader. On llvmpipe the per-pixel shader with
four lights and 4x multisampling took 20 ms of a 256 x 256 view and the flat one 6-9 ms, and the
meshes are dense enough (a few pixels per triangle) for Gouraud interpolation to look the same.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import pyrender  # noqa: E402
import trimesh  # noqa: E402
from PIL import Image  # noqa: E402

from handsynth.cameras import Camera  # noqa: E402
from handsynth.envmaps import Light  # noqa: E402

#: pyrender's shader takes at most 4 lights of a kind and picks which from an unordered set, so
#: more would make renders depend on the run: the median cut is asked for exactly this many.
MAX_DIRECTIONAL_LIGHTS = 4


@dataclass
class HandMesh:
    vertices: np.ndarray     # (V, 3) world metres
    faces: np.ndarray        # (F, 3)
    colors: np.ndarray       # (V, 3) in [0, 1]
    face_labels: np.ndarray  # (F,) label - label_offset: hand part 0..15, then forearm / sleeve
    label_offset: int        # 1 for the right hand, 17 for the left, 0 for accessories (labels 37-40 as they are)


@dataclass
class RenderResult:
    """Images of one render; labels and depth are point samples at pixel centres, RGB anti-aliased."""

    rgb: np.ndarray          # (H, W, 3) uint8
    labels: np.ndarray       # (H, W) uint8
    depth_mm: np.ndarray     # (H, W) uint16, 0 = background
    alpha: np.ndarray | None = None  # (H, W) uint8 hand coverage of each pixel (anti-aliased), if known


def _pose_matrix(camera: Camera) -> np.ndarray:
    """Camera-to-world pose in OpenGL convention (looking down -z, y up)."""
    pose = np.eye(4)
    pose[:3, :3] = camera.R.T @ np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = camera.position
    return pose


#: The material pyrender gives a vertex-coloured trimesh (``Mesh.from_trimesh``): white base,
#: metallic 0.2, roughness 0.8; its shader clamps roughness to at least 0.04 and takes that as the
#: dielectric's reflectance at normal incidence.
METALLIC, ROUGHNESS, MIN_ROUGHNESS = 0.2, 0.8, 0.04


def shade_vertices(points: np.ndarray, normals: np.ndarray, colors: np.ndarray, lights: list[Light],
                   ambient: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """(V, 4) float32 display RGBA of each vertex seen from ``eye``: what pyrender's ``mesh.frag``
    computes for a pixel (Cook-Torrance: Schlick's Fresnel, Smith-Schlick occlusion and GGX for
    each directional light, plus ambient, times the vertex colour, then gamma 1/2.2), at the vertex.

    ``lights`` shine from ``Light.direction`` with radiance 3 x rgb / (the brightest light's peak),
    as :meth:`HandRenderer.set_scene` scales them; ``colors`` (V, 3) in [0, 1] multiply the lit
    radiance as pyrender's vertex colours do (8-bit, as trimesh stores them)."""
    colors = np.round(np.clip(colors, 0.0, 1.0) * 255.0) / 255.0
    n = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    v = eye - points
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    f0 = MIN_ROUGHNESS * (1.0 - METALLIC) + METALLIC          # base colour white
    c_diff = (1.0 - MIN_ROUGHNESS) * (1.0 - METALLIC)
    k = (ROUGHNESS + 1.0) ** 2 / 8.0
    a2 = ROUGHNESS ** 4
    nv = np.clip(np.abs((n * v).sum(axis=1)), 0.001, 1.0)
    peak = max((float(light.rgb.max()) for light in lights), default=1.0)
    lit = np.zeros((len(points), 3))
    for light in lights:
        l = light.direction / np.linalg.norm(light.direction)
        h = v + l
        h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        nl = np.clip(n @ l, 0.001, 1.0)
        nh = np.clip((n * h).sum(axis=1), 0.0, 1.0)
        vh = np.clip((v * h).sum(axis=1), 0.0, 1.0)
        fresnel = f0 + (1.0 - f0) * (1.0 - vh) ** 5
        occlusion = nv / (nv * (1.0 - k) + k) * nl / (nl * (1.0 - k) + k)
        ggx = a2 / (np.pi * (nh * nh * (a2 - 1.0) + 1.0) ** 2)
        brdf = (1.0 - fresnel) * c_diff / np.pi + fresnel * occlusion * ggx / (4.0 * nl * nv + 0.001)
        lit += (nl * brdf)[:, None] * (3.0 * light.rgb / peak)
    rgb = np.clip(np.maximum((lit + np.clip(ambient, 0.0, 1.0)) * colors, 0.0) ** (1.0 / 2.2), 0.0, 1.0)
    return np.c_[rgb, np.ones(len(rgb))].astype(np.float32)


@dataclass
class _Shading:
    """What :meth:`HandRenderer.render_view` lights per view: every vertex of the scene's meshes."""

    points: np.ndarray    # (V, 3)
    positions: np.ndarray  # (V, 3) float32, as GL takes them
    normals: np.ndarray   # (V, 3) smooth (trimesh's vertex normals, as pyrender's smooth meshes use)
    colors: np.ndarray    # (V, 3)
    faces: np.ndarray     # (F, 3) uint32
    lights: list[Light]
    ambient: np.ndarray


class _SharedContext:
    """The process's GL context, deleted when its last user closes."""

    renderer: pyrender.OffscreenRenderer | None = None
    users = 0

    @classmethod
    def acquire(cls, width: int, height: int) -> pyrender.OffscreenRenderer:
        if cls.renderer is None:
            cls.renderer = pyrender.OffscreenRenderer(width, height)
        cls.users += 1
        return cls.renderer

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users == 0 and cls.renderer is not None:
            cls.renderer.delete()
            cls.renderer = None


class _NumberedNode(pyrender.Node):
    """A mesh node hashed by its number within its scene.

    pyrender draws mesh nodes at equal distance in the iteration order of a Python set
    (``Scene.mesh_nodes``); with the default (address) hash that order differs between processes,
    and where two label meshes tie in depth (two parts of a hand touching) the label went either
    way: seen once in 192 images of two otherwise byte-identical runs. Numbers that start at 0 in
    every scene make the set's order, and so the labels, the same in every process.
    """

    def __init__(self, number: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._number = number

    def __hash__(self) -> int:
        return self._number


class HandRenderer:
    """Renders RGB, labels and depth of the same geometry, aligned at pixel centres.

    pyrender's colour pass multisamples (4x MSAA) and its depth is then one sample of the four, not
    the pixel centre: silhouettes of depth and labels disagreed by ~0.4 px. So labels AND depth come
    from the segmentation pass, which pyrender draws without multisampling (one sample at each pixel
    centre); the RGB keeps its anti-aliasing (the four samples are centred on the pixel centre) and
    is composited over the background with its coverage alpha.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.renderer: pyrender.OffscreenRenderer | None = _SharedContext.acquire(width, height)
        self._scene: tuple[pyrender.Scene, pyrender.Node, dict] | None = None

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer = None
            _SharedContext.release()

    def set_scene(self, hands: list[HandMesh], lights: list[Light], ambient: np.ndarray) -> None:
        """The hands and lights of the next views (of one pose): the label meshes are uploaded to GL
        once, the lit mesh per view (its vertex colours depend on where the camera is).

        ONE pyrender scene holds the lit mesh and the per-part label meshes (the colour pass hides
        the latter, the segmentation pass draws only them): pyrender keeps GL buffers only for the
        scene it drew last, so two scenes would be uploaded again on every pass.
        """
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0])
        if len(lights) > MAX_DIRECTIONAL_LIGHTS:
            raise ValueError(f"{len(lights)} lights: the median cut is asked for {MAX_DIRECTIONAL_LIGHTS}")
        # both hands in ONE mesh, lit per view (render_view): pyrender keeps nodes in a set, so
        # separate meshes would be drawn in a run-dependent order and re-renders would differ
        offsets = np.cumsum([0] + [len(h.vertices) for h in hands])
        both = trimesh.Trimesh(np.concatenate([h.vertices for h in hands]),
                               np.concatenate([h.faces + o for h, o in zip(hands, offsets)]), process=False)
        points = np.asarray(both.vertices, np.float64)
        shading = _Shading(points, points.astype(np.float32), np.asarray(both.vertex_normals, np.float64),
                           np.concatenate([h.colors for h in hands]), both.faces.astype(np.uint32), list(lights),
                           np.asarray(ambient, np.float64))
        node_colors = {}
        for h in hands:
            for part in np.unique(h.face_labels):
                # positions and indices only: the segmentation shader needs no normals or colours
                prim = pyrender.Primitive(positions=h.vertices.astype(np.float32),
                                          indices=h.faces[h.face_labels == part].astype(np.uint32))
                node = _NumberedNode(len(node_colors) + 1, mesh=pyrender.Mesh([prim]))
                scene.add_node(node)
                label = h.label_offset + int(part)
                node_colors[node] = (label, label, label)
        camera = pyrender.IntrinsicsCamera(1.0, 1.0, 0.0, 0.0, znear=0.01, zfar=10.0)   # set per view
        self._scene = (scene, scene.add(camera), node_colors, shading)

    def render_view(self, camera: Camera, background: np.ndarray) -> RenderResult:
        """The scene of :meth:`set_scene` through ``camera``, its RGB composited over ``background``.

        The camera's pixel (r, c) samples projected point (c, r) (docs/ARCHITECTURE.md, "Pixels"):
        GL samples pixel column c at window x = c + 0.5, and pyrender maps projected u to window
        x = u (pixel c covering [c, c+1)); shifting the principal point by half a pixel puts the
        sample of column c at u = c. Rows likewise (pyrender flips y, the shift is the same sign).
        """
        if self._scene is None:
            raise RuntimeError("render_view() before set_scene()")
        scene, camera_node, node_colors, shading = self._scene
        k, cam = camera.K, camera_node.camera
        cam.fx, cam.fy, cam.cx, cam.cy = k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5
        scene.set_pose(camera_node, _pose_matrix(camera))
        self.renderer.viewport_width, self.renderer.viewport_height = self.width, self.height
        self._show_parts(node_colors, False)
        lit = pyrender.Primitive(positions=shading.positions, indices=shading.faces,
                                 color_0=shade_vertices(shading.points, shading.normals, shading.colors, shading.lights,
                                                        shading.ambient, camera.position))
        for node in [n for n in scene.mesh_nodes if n not in node_colors]:   # the last view's
            scene.remove_node(node)
        scene.add_node(_NumberedNode(0, mesh=pyrender.Mesh([lit])))
        color, _ = self.renderer.render(scene, flags=pyrender.RenderFlags.RGBA | pyrender.RenderFlags.FLAT)
        # the resolved MSAA colour is premultiplied by coverage (background samples are 0, 0, 0, 0)
        alpha = color[..., 3:4].astype(np.float32) / 255.0
        rgb = np.clip(np.rint(color[..., :3] + (1.0 - alpha) * background), 0, 255).astype(np.uint8)
        self._show_parts(node_colors, True)
        labels, depth = self.renderer.render(scene, flags=pyrender.RenderFlags.SEG, seg_node_map=node_colors)
        depth_mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
        return RenderResult(rgb=rgb, labels=labels[..., 0].astype(np.uint8), depth_mm=depth_mm, alpha=color[..., 3].copy())

    @staticmethod
    def _show_parts(node_colors: dict, visible: bool) -> None:
        for node in node_colors:
            node.mesh.is_visible = visible

    def render(self, hands: list[HandMesh], camera: Camera, lights: list[Light], ambient: np.ndarray,
               background: np.ndarray) -> RenderResult:
        """One image: :meth:`set_scene` then :meth:`render_view`."""
        self.set_scene(hands, lights, ambient)
        return self.render_view(camera, background)


#: zlib level of every PNG: 3 encodes a 256 x 256 view (RGB, labels, depth) in ~7 ms of CPU where
#: the default 6 takes ~16 ms, for RGB files ~14% larger (measured on npm-map backgrounds).
PNG_COMPRESS_LEVEL = 3


def encode_png(array: np.ndarray) -> bytes:
    """RGB uint8, labels uint8 or depth uint16 -> deterministic PNG bytes."""
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png takes uint8 or uint16 arrays, got {array.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    arr = np.asarray(img)
    return arr.astype(np.uint16) if img.mode.startswith("I") else arr
