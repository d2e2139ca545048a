"""RenderIH's rendering step: every kept pose seen from N cameras, lit by an HDR map, annotated.

For pose p and view v, every random choice (camera, environment map and its rotation, exposure)
comes from a generator seeded by ("render", shard, pose id, view), recorded as
``render_seed``, and is drawn the same way whichever backend makes the RGB: re-rendering one
image gives byte-identical PNGs, and the raster preview shows the same scene as Cycles. Labels,
depth and visibility always come from the raster pass; with Cycles, its alpha is checked against
the raster labels (``alpha_iou``). The skin (textures from :mod:`handsynth.render.skin`) is one
person's per pose, seeded by ("skin", shard, pose id).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from handsynth import cameras, envmaps, ids
from handsynth.render import RenderOptions, SceneSpec, skin
from handsynth.annotate import ImageRecord
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.render.pixel_centres import silhouette_from_projection
from handsynth.render.raster import MAX_DIRECTIONAL_LIGHTS, HandMesh, HandRenderer, encode_png
from handsynth.seeds import seed_for
from handsynth.visibility import keypoint_visibility

SIDES = ("right", "left")

#: Skin texture side in texels (albedo, roughness, bump per hand and image).
TEXTURE_SIZE = 512


@dataclass
class RenderedImage:
    record: ImageRecord
    pngs: dict[str, bytes]       # rgb / label / depth
    rgb: np.ndarray              # the stored RGB, for contact sheets
    raster_rgb: np.ndarray       # the raster preview of the same scene (== rgb for the raster backend)
    mask_iou: float              # rendered hand mask vs projected-mesh silhouette
    alpha_iou: float | None      # Cycles alpha (> 0.5) vs raster label mask; None for raster RGB
    backend: dict[str, object]   # renderer, samples, device, colour management


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=lambda: {"pose": 0.0, "skin": 0.0, "raster": 0.0, "visibility": 0.0,
                                                                            "mask_check": 0.0, "cycles": 0.0,
                                                                            "encode": 0.0})
    cpu: float = 0.0   # process CPU seconds, filled in by callers that measure it (benchmarks)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


def image_key(prefix: str, shard: str, pose_id: str, view: int, kind: str) -> str:
    """Object key of one image; injective in ``(pose_id, view, kind)`` (see :func:`ids.id_to_filename`)."""
    return f"{prefix}/render/{shard}/{ids.id_to_filename(pose_id)}_v{view:02d}_{kind}.png".lstrip("/")


def render_pose_views(model: HandModel, poses: PoseTable, shard: str, n_views: int, image_size: int,
                      env_library: dict[str, np.ndarray], key_prefix: str = "",
                      ranges: cameras.CameraRanges = cameras.CameraRanges(),
                      times: StageTimes | None = None, options: RenderOptions = RenderOptions(),
                      log_fn: Callable[[str], None] | None = None) -> Iterator[RenderedImage]:
    """Yield every (pose, view) image of ``poses`` with its record and encoded PNGs."""
    times = times or StageTimes()
    env_names = sorted(env_library)
    lights = {name: envmaps.median_cut_lights(env_library[name], MAX_DIRECTIONAL_LIGHTS) for name in env_names}
    key_exposure = {name: envmaps.auto_exposure(env_library[name]) for name in env_names}
    base_faces = {s: model.faces(s) for s in SIDES}
    base_rest = {s: model.layers[s].v_template.detach().cpu().numpy() for s in SIDES}
    rest, faces = {}, {}
    for s in SIDES:
        rest[s], faces[s] = subdivide(base_rest[s], base_faces[s], options.subdivision)
    face_labels = {s: np.repeat(model.face_labels[s], 4 ** options.subdivision) for s in SIDES}
    both_faces = np.concatenate([faces["right"], faces["left"] + len(rest["right"])])
    layouts = {s: model.uv_layout(s) for s in SIDES}
    renderer = HandRenderer(image_size, image_size)
    cycles = None
    backend = {"renderer": "raster", "samples": 0, "device": "egl", "colour_management": envmaps.COLOUR_MANAGEMENT}
    if options.backend == "cycles":
        from handsynth.render.cycles import CyclesRenderer

        hand_of_face = np.repeat([0, 1], [len(faces[s]) for s in SIDES])
        uv = np.concatenate([subdivide_corners(layouts[s].uv[layouts[s].faces_uv], options.subdivision) for s in SIDES])
        cycles = CyclesRenderer(image_size, image_size, both_faces, hand_of_face, samples=options.samples,
                                denoise=options.denoise, device=options.device, threads=options.threads, uv=uv,
                                log_fn=log_fn)
        backend = {"renderer": "cycles", "samples": options.samples, "denoise": options.denoise,
                   "device": cycles.device, "blender": cycles.blender_version,
                   "colour_management": envmaps.COLOUR_MANAGEMENT}
    try:
        for i in range(len(poses)):
            t = time.perf_counter()
            row = poses.take([i])
            out = {s: model.forward_numpy(s, row.hand(s)) for s in SIDES}
            verts = {s: subdivide(out[s].vertices[0].cpu().numpy().astype(np.float64), base_faces[s], options.subdivision)[0]
                     for s in SIDES}
            kps = np.stack([out[s].keypoints[0].cpu().numpy().astype(np.float64) for s in SIDES])
            all_v = np.concatenate([verts["right"], verts["left"]])
            pid = str(row.meta["pose_id"].iloc[0])
            t = times.add("pose", t)
            # one person per pose, seen from every view: one skin (the left hand's texture is the
            # right's mirror through the shared UV layout, so one texture serves both)
            texture = skin.skin_textures(model, "right", seed_for("skin", shard, pid), size=TEXTURE_SIZE)
            colors = {s: skin.linear_to_srgb(subdivide(skin.vertex_albedo(texture, layouts[s], len(base_rest[s])),
                                                       base_faces[s], options.subdivision)[0]) for s in SIDES}
            if cycles is not None:
                for k in range(len(SIDES)):
                    cycles.set_skin(k, texture.albedo, texture.roughness, texture.bump)
            t = times.add("skin", t)
            for view in range(n_views):
                seed = seed_for("render", shard, pid, view)
                rng = np.random.default_rng(seed)
                cam = cameras.sample_camera(all_v.mean(axis=0), all_v, ranges, rng, image_size, image_size)
                env_name = env_names[int(rng.integers(len(env_names)))]
                hands = [HandMesh(verts[s], faces[s], colors[s], face_labels[s], 1 + 16 * k) for k, s in enumerate(SIDES)]
                env = env_library[env_name]
                exposure = key_exposure[env_name] * float(rng.uniform(0.6, 1.5))
                rotation = 2 * np.pi * int(rng.integers(env.shape[1])) / env.shape[1]
                bg = envmaps.background_from_envmap(env, cam, exposure, rotation)
                env_lights, ambient = lights[env_name]
                result = renderer.render(hands, cam, envmaps.rotate_lights(env_lights, rotation), ambient, bg)
                t = times.add("raster", t)
                visibility = keypoint_visibility(kps, cam, result.labels, result.depth_mm,
                                                 [(verts[s], faces[s]) for s in SIDES])
                t = times.add("visibility", t)
                sil = silhouette_from_projection(all_v, both_faces, cam)
                mask = result.labels > 0
                iou = silhouette_iou(mask, sil)
                t = times.add("mask_check", t)
                rgb, alpha_iou = result.rgb, None
                if cycles is not None:
                    # skin.py gives the mean free path per channel in mm; Blender: radius x scale (m)
                    material = {"subsurface_radius": [float(x) for x in texture.subsurface_radius],
                                "subsurface_scale_m": 0.001}
                    linear_hands = [HandMesh(h.vertices, h.faces, skin.srgb_to_linear(h.colors), h.face_labels,
                                             h.label_offset) for h in hands]
                    photo = cycles.render(SceneSpec(linear_hands, cam, env_name, env, rotation, exposure, material), seed)
                    rgb, alpha_iou = photo.rgb, silhouette_iou(photo.alpha >= 0.5, mask)
                    t = times.add("cycles", t)
                pngs = {"rgb": encode_png(rgb), "label": encode_png(result.labels), "depth": encode_png(result.depth_mm)}
                t = times.add("encode", t)
                keys = {k: image_key(key_prefix, shard, pid, view, k) for k in pngs}
                meta = row.meta.iloc[0]
                record = ImageRecord(
                    image_id=f"{pid}/v{view:02d}",
                    pose={"pose_id": pid, "distinct_pose_id": str(meta.get("distinct_pose_id", pid)),
                          "source_ref": str(meta["source_ref"]), "shard": shard},
                    hands={s: {k: row.hand(s)[k][0] for k in ("global_orient", "hand_pose", "betas", "transl")} for s in SIDES},
                    keypoints_world=kps, K=cam.K, R=cam.R, t=cam.t, width=image_size, height=image_size,
                    visibility=visibility, view=view, render_seed=seed, envmap=env_name, keys=keys)
                yield RenderedImage(record, pngs, rgb, result.rgb, iou, alpha_iou, backend)
            if log_fn:
                log_fn(f"{shard}: rendered pose {i + 1}/{len(poses)} ({n_views} views, {backend['renderer']})")
    finally:
        renderer.close()
        if cycles is not None:
            cycles.close()


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
