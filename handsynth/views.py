"""RenderIH's rendering step: every kept pose seen from N cameras, lit by an HDR map, annotated.

:func:`render_pose_views` runs these stages, each a function below and timed under its name in
:class:`StageTimes`:

==========  ===================================================================  ==============
stage       what                                                                 how often
==========  ===================================================================  ==============
pose        hand model forward pass, forearms (elbows drawn), Loop subdivision   once per pose
skin        the pose's person from the :class:`SkinBank` (textures, albedo)      once per pose
scene       environment map and rotation; the pose uploaded to both renderers   once per pose
camera      cameras, exposures, lenses and camera effects of the pose's views;    once per pose
            the map seen through them (defocused by each view's lens)
raster      part labels, depth and the preview RGB (pyrender)                    per view
visibility  per-keypoint skin test (:mod:`handsynth.visibility`)                 per view
mask_check  labels against the numpy silhouette at the same pixel centres        per view
photo       Cycles RGB: waiting for the worker, composite, alpha check. The      per view
            worker path-traces a view while this process rasterises it and
            encodes and hands over the view before
effects     the view's camera effects on its RGB (labels and depth untouched)    per view
encode      three PNGs                                                           per view
record      the image's :class:`ImageRecord`                                     per view
==========  ===================================================================  ==============

Seeds come from the settings' ``seed`` and stable ids, never from a shard or a row position
(:func:`handsynth.seeds.seed_for`): camera, exposure and the Cycles sampling seed from
``render_seed = seed_for("render", seed, pose_id, view)`` (recorded per image); the lens from
``seed_for("depth_of_field", seed, pose_id, view)`` and the camera effects from
``seed_for("camera_effects", seed, pose_id, view)`` (both recorded per image, :class:`CameraLook`); the
elbows from ``seed_for("elbow", seed, pose_id, attempt)`` (:mod:`handsynth.arms`); the skin from
``seed_for("skin", seed, pose_id)``; the map rotation from ``seed_for("env_rotation", seed,
pose_id)``; the map from ``seed_for("envmap", seed, distinct_pose_id)``. Re-rendering an image
therefore gives byte-identical PNGs wherever and in whatever batch it is rendered, and the raster
preview shows the same scene as Cycles.

Lighting is a capture rig: all views of one pose see the same map under the same rotation
(as InterHand2.6M's cameras see one frame at one instant), and all augmentations of a distinct
pose share the map, each under its own rotation; each view keeps its own exposure (a camera
setting). Why: a change of the world costs Cycles 1-1.4 CPU s (mostly its importance map), more
than path-tracing a 256 x 256 image, so the worker turns hands and camera instead of the map and
changes the map only between distinct poses (one render block). The draws stay varied: at paper
scale 3,680 distinct poses draw a map each and 110,000 poses a rotation each, and each pose wears
one of the skin bank's 64 people.
Every image records its map, rotation and exposure, and its forearms' draw
(:attr:`RenderedImage.scene`, :func:`arm_record`), its lens and its camera effects.

A view's camera is more than a pinhole (:class:`CameraLook`, both parts optional): a thin lens
focused on the hands' centre (:mod:`handsynth.render.depth_of_field`) blurs the Cycles render
and the composited background alike, and sensor and processing effects
(:mod:`handsynth.render.camera_effects`) are applied to the composited radiance before the PNG
is encoded. Both are geometry-preserving, so labels, depth and visibility, which the raster pass
makes through the same pinhole camera, stay exact.

Forearms (on unless :class:`ArmOptions` turns them off): each hand continues into its forearm,
labelled 33 (right) / 34 (left), in both passes; cameras frame the hands and let the forearms
leave the frame, and a view that would show an arm's far end (the cut tube, 55 cm from the wrist)
is drawn again (:func:`view_setup`). Hand part labels keep 1..32, keypoint visibility tests each
keypoint against its own hand's surface (a forearm in front hides it, as the other hand does), and
the IntagHand / IH2.6M masks, derived from labels 1..32, stay hand masks.

Accessories (a share ``ArmOptions.accessory_share`` of the hands; :mod:`handsynth.accessories`):
watches and bracelets labelled 37 (right) / 38 (left), rings 39 / 40, fitted in the ``pose`` stage
around the subdivided surface that renders, drawn in the raster pass as one more mesh and in Cycles
as a second object with a Principled BSDF per part (:mod:`handsynth.render.accessories`). They
hide what lies behind them like a forearm does, and each image records what was worn
(:func:`arm_record`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from handsynth import accessories, cameras, envmaps
from handsynth.annotate import ImageRecord
from handsynth.arms import ArmChoice, ArmOptions, choose_arms, draw_sleeves, posed_hand
from handsynth.hand_model import forearm as fa
from handsynth.hand_model.model import HandModel
from handsynth.hand_model.uv import UVLayout
from handsynth.pose_table import PoseTable
from handsynth.render import RenderOptions, SceneSpec, cloth, skin
from handsynth.render.camera_effects import CameraEffectRanges, CameraEffects, apply_effects, sample_effects
from handsynth.render.cycles import CyclesRenderer, over_background
from handsynth.render.depth_of_field import DepthOfField, DepthOfFieldRanges, sample_depth_of_field
from handsynth.render.pool import POOL
from handsynth.render.pixel_centres import silhouette_from_projection
from handsynth.render.raster import MAX_DIRECTIONAL_LIGHTS, HandMesh, HandRenderer, RenderResult, encode_png
from handsynth.render.skin_bank import SkinBank
from handsynth.seeds import rng_for, seed_for
from handsynth.visibility import keypoint_visibility

SIDES = ("right", "left")

#: Skin texture side in texels (albedo, roughness, bump per person).
TEXTURE_SIZE = 512
#: Sleeve fabric texture side in texels (one 5 cm tile, repeated: see :func:`_rest_forearm`).
CLOTH_TEXTURE_SIZE = 256
#: Exposure of a view: the map's auto key times a factor drawn in this range.
EXPOSURE_RANGE = (0.6, 1.5)
#: Stages in the order a view runs them (see the module doc).
STAGES = ("pose", "skin", "scene", "camera", "raster", "visibility", "mask_check", "photo", "effects", "encode", "record")


@dataclass(frozen=True)
class CameraLook:
    """What a view's camera adds to the clean render: the ranges its thin lens and its sensor and
    processing effects are drawn from. The default is the clean render (a pinhole, the tone curve
    alone); :meth:`from_switches` turns each part on with its real-camera ranges."""

    lens: DepthOfFieldRanges = DepthOfFieldRanges(share=0.0)
    effects: CameraEffectRanges = CameraEffectRanges.off()

    @classmethod
    def from_switches(cls, depth_of_field: bool, camera_effects: bool) -> "CameraLook":
        return cls(DepthOfFieldRanges() if depth_of_field else DepthOfFieldRanges(share=0.0),
                   CameraEffectRanges() if camera_effects else CameraEffectRanges.off())


@dataclass
class RenderedImage:
    record: ImageRecord
    pngs: dict[str, bytes]       # rgb / label / depth
    rgb: np.ndarray              # the stored RGB, for contact sheets
    raster_rgb: np.ndarray       # the raster preview of the same scene, without camera effects (the raster
                                 # backend's rgb is this with the effects)
    mask_iou: float              # rendered hand mask vs projected-mesh silhouette
    alpha_iou: float | None      # Cycles alpha (> 0.5) vs raster label mask; None for raster RGB
    backend: dict[str, object]   # renderer, samples, device, colour management
    scene: dict[str, object]     # env_rotation (rad), exposure, skin (bank entry), forearms (arm_record):
                                 # the draws besides the record's
    lens: DepthOfField           # the view's thin lens (f_number 0: a pinhole)
    effects: CameraEffects       # the camera effects applied to ``rgb`` (neutral values: off)


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    cpu: float = 0.0   # process CPU seconds, filled in by callers that measure it (benchmarks)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


# ---- what every pose shares ------------------------------------------------------------------------


@dataclass(frozen=True)
class HandSurface:
    """The surface both passes draw, for every pose: per side base and subdivided faces, per-face
    labels (minus the side's :data:`LABEL_OFFSET`) and a UV layout of the subdivided faces (one
    coordinate per face corner).

    Without forearms a side is its hand's closed surface (a flat cap over the wrist). With them it
    is the hand's open surface welded to its forearm (:meth:`Forearm.joined`), subdivided as ONE
    surface so the seam stays closed and smooth; the hand's faces come first (``n_hand_faces``),
    the forearm's after (labels 33 right, 34 left). The forearm's topology is the same for every
    pose (a fixed ring count), so one surface serves every pose."""

    subdivision: int
    forearms: bool
    base_faces: dict[str, np.ndarray]
    faces: dict[str, np.ndarray]
    face_labels: dict[str, np.ndarray]
    layouts: dict[str, UVLayout]
    n_vertices: dict[str, int]     # after subdivision
    n_hand_faces: dict[str, int]   # after subdivision: faces[s][:n] are the hand's

    @property
    def corner_uv(self) -> np.ndarray:
        """(F_right + F_left, 3, 2): the Cycles mesh's UVs."""
        return np.concatenate([self.layouts[s].corner_uv() for s in SIDES])

    @property
    def both_faces(self) -> np.ndarray:
        return np.concatenate([self.faces["right"], self.faces["left"] + self.n_vertices["right"]])

    @property
    def hand_of_face(self) -> np.ndarray:
        """Material slot of every face of :attr:`both_faces` without sleeves (see :func:`material_slots`)."""
        return np.concatenate([np.where(np.arange(len(self.faces[s])) < self.n_hand_faces[s], k, 2 + k)
                               for k, s in enumerate(SIDES)])

    def hand_faces(self, side: str) -> np.ndarray:
        """The subdivided faces of ``side``'s hand alone (what hand-only checks and visibility use)."""
        return self.faces[side][:self.n_hand_faces[side]]

    def hand_layout(self, side: str) -> UVLayout:
        """The UV layout of the hand's faces alone (the skin texture's domain)."""
        n = 3 * self.n_hand_faces[side]
        layout = self.layouts[side]
        return UVLayout(layout.uv[:n], layout.faces_uv[:self.n_hand_faces[side]], layout.vertex_ids[:n])


#: Label of a side's faces = offset + face label (right hand parts 1..16, left 17..32, forearms
#: 33/34, sleeves 35/36).
LABEL_OFFSET = {"right": 1, "left": 17}
#: Material slots of the Cycles mesh: per side (right, left) the hand's textured skin, the
#: forearm's skin (the person's tone: the hand's texture is laid out over the hand only) and the
#: sleeve's cloth.
MATERIAL_SLOTS = {"hand": (0, 1), "forearm": (2, 3), "sleeve": (4, 5)}


def hand_surface(model: HandModel, subdivision: int, forearms: bool = True) -> HandSurface:
    """The surface of ``model`` at ``subdivision``, worked out once per process (every block needs it)."""
    key = (str(model.identity["digest"]), subdivision, forearms)
    if key not in _SURFACES:
        _SURFACES[key] = _hand_surface(model, subdivision, forearms)
    return _SURFACES[key]


_SURFACES: dict[tuple[str, int, bool], HandSurface] = {}


#: Cloth tiles around and along a forearm's UV square: 5 cm tiles, ~20 cm around, the arm's reach along.
CLOTH_TILES = np.array([4.0, round(fa.REACH / 0.05)], np.float32)


def _rest_forearm(model: HandModel, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """A side's welded hand and forearm in the flat pose: vertices, faces, per-face labels (minus
    the side's offset), per-corner UVs and the hand's face count."""
    z = torch.zeros(1, 3)
    rest = model.forward(side, z, torch.zeros(1, 45), torch.zeros(1, 10), z).vertices
    arm = fa.attach_forearm(model, side, rest, z, torch.zeros(1, 10), z)
    vertices, faces = arm.joined(rest, model.open_faces(side))
    n_hand = len(model.open_faces(side))
    labels = np.concatenate([model.face_labels[side][:n_hand], arm.face_labels - LABEL_OFFSET[side]])
    # the forearm's UVs (u around, v along, each 0..1) scaled to whole cloth tiles (about 5 cm)
    uv = np.concatenate([model.uv_layout(side).corner_uv()[:n_hand], arm.uv.corner_uv() * CLOTH_TILES])
    return vertices[0].detach().double().numpy(), faces, labels, uv, n_hand



def _hand_surface(model: HandModel, subdivision: int, forearms: bool) -> HandSurface:
    base_faces, faces, labels, n_vertices, layouts, n_hand = {}, {}, {}, {}, {}, {}
    for s in SIDES:
        if forearms:
            rest, base_faces[s], base_labels, corners, n_hand[s] = _rest_forearm(model, s)
        else:
            rest, base_faces[s] = model.layers[s].v_template.detach().cpu().numpy(), model.faces(s)
            base_labels, corners, n_hand[s] = model.face_labels[s], model.uv_layout(s).corner_uv(), len(model.faces(s))
        rest, faces[s] = subdivide(rest, base_faces[s], subdivision)
        n_vertices[s], labels[s], n_hand[s] = len(rest), np.repeat(base_labels, 4 ** subdivision), n_hand[s] * 4 ** subdivision
        corners = subdivide_corners(corners, subdivision).reshape(-1, 2)
        layouts[s] = UVLayout(corners.astype(np.float32), np.arange(len(corners), dtype=np.int32).reshape(-1, 3),
                              faces[s].ravel().astype(np.int32))
    return HandSurface(subdivision, forearms, base_faces, faces, labels, layouts, n_vertices, n_hand)


# ---- per pose -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoseGeometry:
    pose: PoseTable                  # the one-row table of the pose
    pose_id: str
    distinct_pose_id: str
    vertices: dict[str, np.ndarray]  # side -> (V, 3) world metres, subdivided (hand and forearm)
    keypoints: np.ndarray            # (2, 21, 3) right then left, MANO order
    hand_points: np.ndarray          # (P, 3) the vertices of both hands alone (what cameras frame)
    arms: ArmChoice | None           # the forearms' draw; None without forearms
    face_labels: dict[str, np.ndarray]   # side -> subdivided faces' labels minus LABEL_OFFSET (sleeves vary per pose)
    dressing: accessories.Dressing = accessories.Dressing()   # watches, bracelets, rings (none without forearms)
    arm_ends: np.ndarray | None = None   # (2, L + 1, 3) each arm's last ring and cap centre; None without forearms

    @property
    def all_vertices(self) -> np.ndarray:
        return np.concatenate([self.vertices[s] for s in SIDES])


def pose_geometry(model: HandModel, surface: HandSurface, pose: PoseTable, *, seed: int,
                  sleeve_share: float = 0.0, accessory_share: float = 0.0) -> PoseGeometry:
    """Stage ``pose``: both hands of a one-row pose table posed (with their forearms when the
    surface has them, elbows and sleeves drawn from ``seed`` and the pose id: :mod:`handsynth.arms`)
    and subdivided, then dressed in the accessories drawn for it (:mod:`handsynth.accessories`,
    fitted around the subdivided surface that renders).

    One pose per forward pass, on one thread: a batched pass gives other float roundings for other
    batch sizes (seen: 500 pixels of a Cycles image 1e-4 off), and an image must not depend on its
    batch-mates nor on the machine's core count. One pose is also too small to share: torch's
    threads spin waiting for work (2 threads on the loaded 2-core machine: 36 ms of CPU per pose,
    one thread: 2.3 ms)."""
    pid = str(pose.meta["pose_id"].iloc[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {s: model.forward_numpy(s, pose.hand(s)) for s in SIDES}
        base = {s: out[s].vertices[0].cpu().numpy().astype(np.float64) for s in SIDES}
        arms, labels = None, surface.face_labels
        if surface.forearms:
            hands = {s: posed_hand(out[s].vertices, pose.hand(s)) for s in SIDES}
            arms, forearms = choose_arms(model, hands, seed, pid, draw_sleeves(ArmOptions(True, sleeve_share), seed, pid))
            base = {s: forearms[s].joined(out[s].vertices, model.open_faces(s))[0][0].cpu().numpy().astype(np.float64)
                    for s in SIDES}
            labels = {s: np.concatenate([surface.face_labels[s][:surface.n_hand_faces[s]],
                                         np.repeat(forearms[s].face_labels - LABEL_OFFSET[s], 4 ** surface.subdivision)])
                      for s in SIDES}
    finally:
        torch.set_num_threads(threads)
    vertices = {s: subdivide(base[s], surface.base_faces[s], surface.subdivision)[0] for s in SIDES}
    keypoints = np.stack([out[s].keypoints[0].cpu().numpy().astype(np.float64) for s in SIDES])
    hand_points = np.concatenate([vertices[s][np.unique(surface.hand_faces(s))] for s in SIDES])
    distinct = str(pose.meta["distinct_pose_id"].iloc[0]) if "distinct_pose_id" in pose.meta else pid
    dressing = accessories.Dressing()
    wishes = accessories.draw_accessories(accessory_share, seed, pid) if surface.forearms else []
    if wishes:
        sleeves = arms.sleeves
        sides = {s: accessories.SideSurface(vertices[s], surface.faces[s], labels[s][:surface.n_hand_faces[s]],
                                            keypoints[k], forearms[s], None if sleeves is None else sleeves.starts[s])
                 for k, s in enumerate(SIDES)}
        dressing = accessories.dress(wishes, sides)
    arm_ends = None if arms is None else np.stack([forearms[s].far_end()[0].cpu().numpy().astype(np.float64)
                                                   for s in SIDES])
    return PoseGeometry(pose, pid, distinct, vertices, keypoints, hand_points, arms, labels, dressing, arm_ends)


def material_slots(geometry: PoseGeometry) -> np.ndarray:
    """The Cycles mesh's material slot of every face (:data:`MATERIAL_SLOTS`), from the pose's labels."""
    out = []
    for k, s in enumerate(SIDES):
        label = geometry.face_labels[s] + LABEL_OFFSET[s]
        out.append(np.select([label == fa.FOREARM_LABELS[s], label == fa.SLEEVE_LABELS[s]],
                             [MATERIAL_SLOTS["forearm"][k], MATERIAL_SLOTS["sleeve"][k]], MATERIAL_SLOTS["hand"][k]))
    return np.concatenate(out).astype(np.uint8)


def sleeve_vertices(geometry: PoseGeometry, surface: HandSurface, side: str) -> np.ndarray:
    """Vertex ids of ``side`` that only sleeve faces use (they take the fabric's colour in the raster preview)."""
    sleeve = geometry.face_labels[side] + LABEL_OFFSET[side] == fa.SLEEVE_LABELS[side]
    return np.setdiff1d(surface.faces[side][sleeve], surface.faces[side][~sleeve])


@dataclass(frozen=True)
class PoseSkin:
    bank: SkinBank
    index: int                           # bank entry
    linear: dict[str, np.ndarray]        # side -> (V, 3) per-vertex linear albedo (Cycles' fallback colour)
    srgb: dict[str, np.ndarray]          # the same in sRGB, the raster preview's vertex colours

    @property
    def textures(self) -> skin.SkinTextures:
        """The entry's textures (Cycles wears them; the raster preview needs only the vertex colours)."""
        return self.bank.textures(self.index)


class SkinStage:
    """Stage ``skin``: the bank entry a pose wears, with its per-vertex albedo on the subdivided
    surface (the texture averaged over each vertex's UV corners), computed once per entry and
    process (:func:`skin_stage`: a render block is a call, and reading an entry's textures back
    from the disk cache for every demo block of 8 images cost 4 ms an image)."""

    def __init__(self, bank: SkinBank, surface: HandSurface) -> None:
        self.bank, self.surface = bank, surface
        self._albedo_of: dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}

    def __call__(self, geometry: PoseGeometry) -> PoseSkin:
        index = self.bank.index_for(geometry.pose_id)
        if index not in self._albedo_of:      # at most the bank's size: a few MB
            textures = self.bank.textures(index)
            linear = {s: self._vertex_albedo(textures, s) for s in SIDES}
            self._albedo_of[index] = linear, {s: skin.linear_to_srgb(linear[s]) for s in SIDES}
        return PoseSkin(self.bank, index, *self._albedo_of[index])

    def _vertex_albedo(self, textures: skin.SkinTextures, side: str) -> np.ndarray:
        """The hand's vertices from its texture; a forearm's own vertices take the mean of the
        wrist seam's (the texture is laid out over the hand only: sampled through the forearm's
        UVs it would paint nails and creases onto the arm)."""
        surface = self.surface
        linear = skin.vertex_albedo(textures, surface.hand_layout(side), surface.n_vertices[side])
        if surface.forearms:
            hand = np.unique(surface.hand_faces(side))
            arm = np.unique(surface.faces[side][surface.n_hand_faces[side]:])
            linear[np.setdiff1d(arm, hand)] = linear[np.intersect1d(arm, hand)].mean(axis=0)
        return linear


def skin_stage(model: HandModel, seed: int, surface: HandSurface) -> SkinStage:
    """The process's :class:`SkinStage` for ``model``'s bank under ``seed`` (and the cache folder
    of the moment) on ``surface``."""
    bank = SkinBank(model, seed, TEXTURE_SIZE)
    key = (str(bank.folder), surface.subdivision, surface.forearms)
    if key not in _SKIN_STAGES:
        _SKIN_STAGES[key] = SkinStage(bank, surface)
    return _SKIN_STAGES[key]


_SKIN_STAGES: dict[tuple[str, int, bool], SkinStage] = {}


@dataclass(frozen=True)
class PoseLighting:
    env_name: str
    rotation: float        # radians about world up: a whole number of map columns
    key_exposure: float    # the map's auto exposure (each view multiplies a random factor)


class EnvironmentLibrary:
    """The maps with what a pose lit by one needs: median-cut lights and auto exposure, worked out
    for a map when a pose first uses it, and the filtered pyramid the backgrounds are read from,
    kept for the last map used (a render block uses one map of the library; a 4K map's pyramid
    takes ~130 MB)."""

    def __init__(self, env_library: dict[str, np.ndarray]) -> None:
        if not env_library:
            raise ValueError("rendering needs at least one environment map")
        self.maps = env_library
        self.names = sorted(env_library)
        self._lighting: dict[str, tuple[list[envmaps.Light], np.ndarray, float]] = {}
        self._pyramid: tuple[str, envmaps.EnvmapPyramid] | None = None

    def pyramid(self, name: str) -> envmaps.EnvmapPyramid:
        """The map prepared for viewing (:func:`envmaps.envmap_view`), built when the map changes."""
        if self._pyramid is None or self._pyramid[0] != name:
            self._pyramid = name, envmaps.EnvmapPyramid(self.maps[name])
        return self._pyramid[1]

    def lights(self, name: str) -> tuple[list[envmaps.Light], np.ndarray, float]:
        """(median-cut lights, ambient, auto exposure) of one map."""
        if name not in self._lighting:
            env = self.maps[name]
            self._lighting[name] = (*envmaps.median_cut_lights(env, MAX_DIRECTIONAL_LIGHTS), envmaps.auto_exposure(env))
        return self._lighting[name]

    def pose_lighting(self, seed: int, geometry: PoseGeometry) -> PoseLighting:
        """The map (per distinct pose) and its rotation (per pose); see the module doc."""
        name = self.names[seed_for("envmap", seed, geometry.distinct_pose_id) % len(self.names)]
        width = self.maps[name].shape[1]
        rotation = 2 * np.pi * (seed_for("env_rotation", seed, geometry.pose_id) % width) / width
        return PoseLighting(name, rotation, self.lights(name)[2])


def hand_meshes(geometry: PoseGeometry, surface: HandSurface, colors: dict[str, np.ndarray]) -> list[HandMesh]:
    return [HandMesh(geometry.vertices[s], surface.faces[s], colors[s], geometry.face_labels[s], LABEL_OFFSET[s])
            for s in SIDES]


def accessory_meshes(geometry: PoseGeometry) -> list[HandMesh]:
    """The pose's accessories for the raster pass (labels 37-40, sRGB base colours), or none."""
    mesh = geometry.dressing.mesh
    if not len(mesh.faces):
        return []
    return [HandMesh(mesh.vertices, mesh.faces, skin.linear_to_srgb(mesh.linear_colors), mesh.face_labels, 0)]


# ---- per view -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewSetup:
    view: int
    render_seed: int
    camera: cameras.Camera
    exposure: float
    lens: DepthOfField
    effects: CameraEffects
    background: np.ndarray   # (H, W, 3) linear radiance of the rotated map through the camera and its lens
    arm_ends_in_frame: bool = False   # no view in the tries kept both arms' far ends out of the frame


def view_setup(geometry: PoseGeometry, lighting: PoseLighting, env: envmaps.EnvmapPyramid, seed: int, view: int,
               image_size: int, ranges: cameras.CameraRanges, look: CameraLook = CameraLook()) -> ViewSetup:
    """Stage ``camera``: the view's camera (every hand vertex inside the frame; forearms leave it:
    a view showing an arm's far end, where a person's upper arm and body would be, is drawn again;
    if no view of the tries hides both, the first view drawn without that condition is taken and
    the row says so), exposure, lens (focused on the hands' centre) and camera effects, each from
    its own seed (turning the lens or the effects off changes nothing else)."""
    render_seed = seed_for("render", seed, geometry.pose_id, view)
    rng = np.random.default_rng(render_seed)
    points = geometry.hand_points
    centre = points.mean(axis=0)
    ends_in_frame = False
    try:
        camera = cameras.sample_camera(centre, points, ranges, rng, image_size, image_size, hidden=geometry.arm_ends)
    except cameras.NoView:
        if geometry.arm_ends is None:
            raise
        camera = cameras.sample_camera(centre, points, ranges, rng, image_size, image_size)
        ends_in_frame = True
    exposure = lighting.key_exposure * float(rng.uniform(*EXPOSURE_RANGE))
    lens = sample_depth_of_field(rng_for("depth_of_field", seed, geometry.pose_id, view), camera, centre, look.lens)
    effects = sample_effects(rng_for("camera_effects", seed, geometry.pose_id, view), look.effects,
                             pixels_per_metre=float(camera.K[0, 0]) / lens.focus_distance_m)
    background = envmaps.envmap_view(env, camera, lighting.rotation, lens.background_blur_px)
    return ViewSetup(view, render_seed, camera, exposure, lens, effects, background, ends_in_frame)


def mask_check(geometry: PoseGeometry, surface: HandSurface, camera: cameras.Camera, labels: np.ndarray) -> float:
    """Stage ``mask_check``: IoU of the rendered mask (every label, forearms and accessories included)
    with the numpy silhouette of the same meshes: an alignment check of the raster pass, like with like."""
    worn, vertices = geometry.dressing.mesh, geometry.all_vertices
    faces = np.concatenate([surface.both_faces, worn.faces + len(vertices)])
    return silhouette_iou(labels > 0, silhouette_from_projection(np.concatenate([vertices, worn.vertices]), faces, camera))


def encode_images(rgb: np.ndarray, raster: RenderResult) -> dict[str, bytes]:
    """Stage ``encode``: the three PNGs of one image."""
    return {"rgb": encode_png(rgb), "label": encode_png(raster.labels), "depth": encode_png(raster.depth_mm)}


def image_record(geometry: PoseGeometry, setup: ViewSetup, lighting: PoseLighting, visibility: np.ndarray,
                 shard: str) -> ImageRecord:
    """Stage ``record``: everything the annotation row of the image needs."""
    pose, meta = geometry.pose, geometry.pose.meta.iloc[0]
    cam = setup.camera
    return ImageRecord(
        image_id=f"{geometry.pose_id}/v{setup.view:02d}",
        pose={"pose_id": geometry.pose_id, "distinct_pose_id": geometry.distinct_pose_id,
              "source_ref": str(meta["source_ref"]), "shard": shard},
        hands={s: {k: pose.hand(s)[k][0] for k in ("global_orient", "hand_pose", "betas", "transl")} for s in SIDES},
        keypoints_world=geometry.keypoints, K=cam.K, R=cam.R, t=cam.t, width=cam.width, height=cam.height,
        visibility=visibility, view=setup.view, render_seed=setup.render_seed, envmap=lighting.env_name)


#: A forearm's skin scatters under its surface (as the hands') up to 2 cm from the wrist and not
#: beyond 6 cm, fading linearly in between (see ``CyclesScene._skin_material`` in
#: :mod:`handsynth.render.cycles_worker`): the random walk cost most of what forearms added to a
#: Cycles image, and beyond the wrist its sub-pixel blur is not seen (README, *Rendering*).
FOREARM_SUBSURFACE_FADE_M = (0.02, 0.06)


def forearm_subsurface_fade() -> tuple[tuple[int, ...], tuple[float, float]]:
    """The forearm slots and :data:`FOREARM_SUBSURFACE_FADE_M` in their UV v, which runs along the
    arm in :data:`CLOTH_TILES` tiles over the arm's reach."""
    v_per_m = float(CLOTH_TILES[1]) / fa.REACH
    return MATERIAL_SLOTS["forearm"], tuple(d * v_per_m for d in FOREARM_SUBSURFACE_FADE_M)


def _cycles_renderer(surface: HandSurface, image_size: int, options: RenderOptions, log_fn) -> CyclesRenderer:
    return CyclesRenderer(image_size, image_size, surface.both_faces, surface.hand_of_face, samples=options.samples,
                          denoise=options.denoise, device=options.device, threads=options.threads,
                          adaptive_threshold=options.noise_threshold, uv=surface.corner_uv, log_fn=log_fn,
                          material_slots=1 + max(MATERIAL_SLOTS["sleeve"]) if surface.forearms else 0,
                          subsurface_fade=forearm_subsurface_fade() if surface.forearms else None)


def render_pose_views(model: HandModel, poses: PoseTable, n_views: int, image_size: int,
                      env_library: dict[str, np.ndarray], *, seed: int, options: RenderOptions = RenderOptions(),
                      arms: ArmOptions = ArmOptions(),
                      times: StageTimes | None = None, log_fn: Callable[[str], None] | None = None,
                      shard: str = "",
                      ranges: cameras.CameraRanges = cameras.CameraRanges(),
                      look: CameraLook = CameraLook()) -> Iterator[RenderedImage]:
    """Yield every (pose, view) image of ``poses`` with its record and encoded PNGs.

    ``look``: the lens and camera effects the views draw (default: none, the clean render).
    ``seed`` is the settings' seed (with the stable ids, the only source of randomness);
    ``shard`` only names the records' shard (images are stored in render blocks by the caller).
    The renderers are borrowed from the process's :data:`POOL` (kept between calls).
    """
    surface = hand_surface(model, options.subdivision, arms.forearms)
    run = _Run(model, seed, image_size, ranges, look, shard, EnvironmentLibrary(env_library), surface,
               skin_stage(model, seed, surface), arms, times or StageTimes(), log_fn)
    with POOL.borrow(("raster", image_size), lambda: HandRenderer(image_size, image_size)) as renderer:
        if options.backend == "raster":
            backend = {"renderer": "raster", "samples": 0, "device": "egl", "colour_management": envmaps.COLOUR_MANAGEMENT}
            yield from run.images(poses, n_views, renderer, None, backend)
            return
        with POOL.borrow(("cycles", image_size, options, arms.forearms, str(model.identity["digest"])),
                         lambda: _cycles_renderer(surface, image_size, options, log_fn),
                         discard=lambda worker: worker.close(kill=True)) as cycles:
            backend = {"renderer": "cycles", "samples": options.samples, "denoise": options.denoise,
                       "noise_threshold": options.noise_threshold, "device": cycles.device,
                       "blender": cycles.blender_version, "colour_management": envmaps.COLOUR_MANAGEMENT}
            yield from run.images(poses, n_views, renderer, cycles, backend)


@dataclass
class _Run:
    """What every pose of one :func:`render_pose_views` call shares."""

    model: HandModel
    seed: int
    image_size: int
    ranges: cameras.CameraRanges
    look: CameraLook
    shard: str
    library: EnvironmentLibrary
    surface: HandSurface
    skins: SkinStage
    arms: ArmOptions
    times: StageTimes
    log_fn: Callable[[str], None] | None

    def images(self, poses: PoseTable, n_views: int, renderer: HandRenderer, cycles: CyclesRenderer | None,
               backend: dict[str, object]) -> Iterator[RenderedImage]:
        """The stages of the module doc, pose by pose and view by view."""
        times, surface = self.times, self.surface
        for i in range(len(poses)):
            t = time.perf_counter()
            geometry = pose_geometry(self.model, surface, poses.take([i]), seed=self.seed,
                                     sleeve_share=self.arms.sleeve_share, accessory_share=self.arms.accessory_share)
            t = times.add("pose", t)
            person = self.skins(geometry)
            if cycles is not None and cycles.worn != (self.skins.bank.folder, person.index):
                textures = person.textures
                for k in range(len(SIDES)):   # the left hand's texture is the right's mirror (shared UV layout)
                    cycles.set_skin(k, textures.albedo, textures.roughness, textures.bump, textures.specular)
                cycles.worn = (self.skins.bank.folder, person.index)
            sleeves = geometry.arms.sleeves if geometry.arms is not None else None
            fabric = None if sleeves is None else cloth.cloth_textures(sleeves.cloth_seed, CLOTH_TEXTURE_SIZE)
            colors = {"srgb": dict(person.srgb), "linear": dict(person.linear)}
            if fabric is not None:
                linear = fabric.albedo.reshape(-1, 3).mean(axis=0)
                for s in SIDES:
                    worn = sleeve_vertices(geometry, surface, s)
                    for kind, value in (("linear", linear), ("srgb", skin.linear_to_srgb(linear))):
                        colors[kind][s] = colors[kind][s].copy()
                        colors[kind][s][worn] = value
                if cycles is not None:
                    for k in MATERIAL_SLOTS["sleeve"]:
                        cycles.set_cloth(k, fabric.albedo, fabric.roughness, fabric.bump, fabric.sheen)
            t = times.add("skin", t)
            lighting = self.library.pose_lighting(self.seed, geometry)
            env = self.library.maps[lighting.env_name]
            pyramid = self.library.pyramid(lighting.env_name)
            env_lights, ambient, _ = self.library.lights(lighting.env_name)
            renderer.set_scene(hand_meshes(geometry, surface, colors["srgb"]) + accessory_meshes(geometry),
                               envmaps.rotate_lights(env_lights, lighting.rotation), ambient)
            if cycles is not None:
                # skin.py gives the mean free path per channel in mm; Blender: radius x scale (m)
                material = {"subsurface_radius": [float(x) for x in person.textures.subsurface_radius],
                            "subsurface_scale_m": 0.001}
                cycles.set_geometry(hand_meshes(geometry, surface, colors["linear"]), material,
                                    material_slots(geometry) if surface.forearms else None)
                worn = geometry.dressing.mesh
                cycles.set_accessories(worn.vertices, worn.faces, worn.face_slots, [m.principled() for m in worn.materials])
            t = times.add("scene", t)
            setups = [view_setup(geometry, lighting, pyramid, self.seed, view, self.image_size, self.ranges, self.look)
                      for view in range(n_views)]
            photo_views = iter(setups)
            if cycles is not None:   # Blender path-traces a view while this process works on the one before
                self._begin_photo(cycles, next(photo_views), lighting, env)
            t = times.add("camera", t)
            for view, setup in enumerate(setups):
                raster = renderer.render_view(setup.camera, envmaps.tone_map(setup.background, setup.exposure))
                t = times.add("raster", t)
                visibility = keypoint_visibility(geometry.keypoints, setup.camera, raster.labels, raster.depth_mm,
                                                 [(geometry.vertices[s], surface.hand_faces(s)) for s in SIDES])
                t = times.add("visibility", t)
                iou = mask_check(geometry, surface, setup.camera, raster.labels)
                t = times.add("mask_check", t)
                clean, alpha_iou = raster.rgb, None      # the raster preview: 8-bit through the tone curve
                if cycles is not None:
                    rgba = cycles.finish()
                    following = next(photo_views, None)
                    if following is not None:
                        self._begin_photo(cycles, following, lighting, env)
                    clean = over_background(rgba, setup.background) * setup.exposure   # linear radiance
                    alpha_iou = silhouette_iou(rgba[..., 3] >= 0.5, raster.labels > 0)
                    t = times.add("photo", t)
                rgb = apply_effects(clean, setup.effects)
                t = times.add("effects", t)
                pngs = encode_images(rgb, raster)
                t = times.add("encode", t)
                record = image_record(geometry, setup, lighting, visibility, self.shard)
                scene = {"env_rotation": lighting.rotation, "exposure": setup.exposure, "skin": person.index,
                         **arm_record(geometry, raster.labels, fabric)}
                if geometry.arms is not None:
                    scene["arm_ends_in_frame"] = setup.arm_ends_in_frame
                times.add("record", t)
                yield RenderedImage(record, pngs, rgb, raster.rgb, iou, alpha_iou, backend, scene, setup.lens,
                                    setup.effects)
                t = time.perf_counter()
            if self.log_fn:
                self.log_fn(f"rendered pose {i + 1}/{len(poses)} ({geometry.pose_id}, {n_views} views, "
                            f"{backend['renderer']})")

    @staticmethod
    def _begin_photo(cycles: CyclesRenderer, setup: ViewSetup, lighting: PoseLighting, env: np.ndarray) -> None:
        cycles.begin(SceneSpec([], setup.camera, lighting.env_name, env, lighting.rotation, setup.exposure,
                               lens=setup.lens), setup.render_seed)


def arm_record(geometry: PoseGeometry, labels: np.ndarray, fabric: cloth.ClothTextures | None) -> dict[str, object]:
    """An image's forearm columns: whether it has forearms, the pose's draw (elbows, wrist angles,
    draws, crossings, sleeve cuffs), the pixels labelled forearm and sleeve per side (right, left),
    the sleeves' fabric (JSON; "" without sleeves), the accessories worn (JSON list: kind, side,
    where, sizes, materials with their seed) and drawn but left off (kind, side, why), and the
    pixels labelled 37-40 (right, left wrist piece; right, left ring)."""
    if geometry.arms is None:
        return {"forearms": False}
    return {"forearms": True, **geometry.arms.record(),
            "forearm_pixels": [int((labels == fa.FOREARM_LABELS[s]).sum()) for s in SIDES],
            "sleeve_pixels": [int((labels == fa.SLEEVE_LABELS[s]).sum()) for s in SIDES],
            "sleeve_cloth": "" if fabric is None else json.dumps(fabric.to_record(), sort_keys=True),
            **geometry.dressing.record(),
            "accessory_pixels": [int((labels == v).sum()) for v in accessories.ACCESSORY_LABELS]}


def subdivide(vertices: np.ndarray, faces: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Loop subdivision (each face -> 4 consecutive faces, so labels repeat 4x per step): smooth
    silhouettes for the photo, applied before both passes so labels and RGB show one surface."""
    from trimesh.remesh import subdivide_loop

    if steps == 0:
        return vertices, faces
    return subdivide_loop(vertices, faces, iterations=steps)


def subdivide_corners(corner_values: np.ndarray, steps: int) -> np.ndarray:
    """Per-face-corner values (F, 3, D), e.g. UVs, carried through :func:`subdivide`'s face order
    (children: [v0, m01, m20], [m01, v1, m12], [m20, m12, v2], [m01, m12, m20]) by linear midpoints."""
    for _ in range(steps):
        a, b, c = corner_values[:, 0], corner_values[:, 1], corner_values[:, 2]
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        corner_values = np.stack([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))], 1)
        corner_values = corner_values.reshape(-1, 3, corner_values.shape[-1])
    return corner_values


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0
