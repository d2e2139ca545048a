"""RenderIH's rendering step: every kept pose seen from N cameras, lit by an HDR map, annotated.

For pose p and view v, every random choice (camera, environment map, skin) comes from a generator
seeded by ("render", shard, pose id, view), recorded as ``render_seed``: re-rendering one image
gives byte-identical PNGs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from handsynth import cameras, envmaps, ids
from handsynth.render import skin
from handsynth.annotate import ImageRecord
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.render.raster import (MAX_DIRECTIONAL_LIGHTS, HandMesh, HandRenderer, encode_png, keypoint_visibility,
                              silhouette_from_projection)
from handsynth.seeds import seed_for

SIDES = ("right", "left")


@dataclass
class RenderedImage:
    record: ImageRecord
    pngs: dict[str, bytes]       # rgb / label / depth
    rgb: np.ndarray              # for contact sheets
    mask_iou: float              # rendered hand mask vs projected-mesh silhouette


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=lambda: {"pose": 0.0, "render": 0.0, "encode": 0.0})

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


def image_key(prefix: str, shard: str, pose_id: str, view: int, kind: str) -> str:
    """Object key of one image; injective in ``(pose_id, view, kind)`` (see :func:`ids.id_to_filename`)."""
    return f"{prefix}/render/{shard}/{ids.id_to_filename(pose_id)}_v{view:02d}_{kind}.png".lstrip("/")


def render_pose_views(model: HandModel, poses: PoseTable, shard: str, n_views: int, image_size: int,
                      env_library: dict[str, np.ndarray], key_prefix: str = "",
                      ranges: cameras.CameraRanges = cameras.CameraRanges(),
                      times: StageTimes | None = None,
                      log_fn: Callable[[str], None] | None = None) -> Iterator[RenderedImage]:
    """Yield every (pose, view) image of ``poses`` with its record and encoded PNGs."""
    times = times or StageTimes()
    env_names = sorted(env_library)
    lights = {name: envmaps.median_cut_lights(env_library[name], MAX_DIRECTIONAL_LIGHTS) for name in env_names}
    rest = {s: model.layers[s].v_template.detach().cpu().numpy() for s in SIDES}
    rest_joints = {s: model.rest_keypoints(s)[:16] for s in SIDES}
    faces = {s: model.faces(s) for s in SIDES}
    both_faces = np.concatenate([faces["right"], faces["left"] + 778])
    renderer = HandRenderer(image_size, image_size)
    try:
        for i in range(len(poses)):
            t = time.perf_counter()
            row = poses.take([i])
            out = {s: model.forward_numpy(s, row.hand(s)) for s in SIDES}
            verts = {s: out[s].vertices[0].cpu().numpy().astype(np.float64) for s in SIDES}
            kps = np.stack([out[s].keypoints[0].cpu().numpy().astype(np.float64) for s in SIDES])
            all_v = np.concatenate([verts["right"], verts["left"]])
            pid = str(row.meta["pose_id"].iloc[0])
            t = times.add("pose", t)
            for view in range(n_views):
                seed = seed_for("render", shard, pid, view)
                rng = np.random.default_rng(seed)
                cam = cameras.sample_camera(all_v.mean(axis=0), all_v, ranges, rng, image_size, image_size)
                env_name = env_names[int(rng.integers(len(env_names)))]
                hands = []
                for k, s in enumerate(SIDES):
                    colors, _ = skin.skin_colors(rest[s], rest_joints[s], rng)
                    hands.append(HandMesh(verts[s], faces[s], colors, model.face_labels[s], 1 + 16 * k))
                exposure = float(rng.uniform(0.7, 1.3))
                bg = envmaps.background_from_envmap(env_library[env_name], cam, exposure)
                result = renderer.render(hands, cam, *lights[env_name], bg)
                visibility = keypoint_visibility(kps, cam, result.depth_mm)
                sil = silhouette_from_projection(all_v, both_faces, cam)
                mask = result.labels > 0
                iou = float((mask & sil).sum() / max((mask | sil).sum(), 1))
                t = times.add("render", t)
                pngs = {"rgb": encode_png(result.rgb), "label": encode_png(result.labels), "depth": encode_png(result.depth_mm)}
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
                yield RenderedImage(record, pngs, result.rgb, iou)
            if log_fn:
                log_fn(f"{shard}: rendered pose {i + 1}/{len(poses)} ({n_views} views)")
    finally:
        renderer.close()
