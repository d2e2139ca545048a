"""Rendering stages: environment_maps, rendered_views[shard], annotations[shard] (dataset-level outputs: dataset.py)."""

from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, Output, asset

from handsynth import annotate, envmaps, plots
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir
from handsynth.annotate import ImageRecord
from handsynth.pose_table import PoseTable
from handsynth.views import StageTimes, render_pose_views
from ih_assets import versions
from ih_assets.metadata import image
from resources.hand_model import HandModelResource
from resources.partitions import pose_shards
from resources.renderer import render_options
from resources.settings import PipelineSettings
from resources.storage import StorageResource

SIDES = ("right", "left")


def _library_sources(settings: PipelineSettings) -> tuple[str, dict[str, bytes], dict[str, bytes]]:
    """Maps to put into an empty library: the user's folder, else the npm Poly Haven set (decoded,
    negative radiance repaired, stored as .hdr), else procedural maps. -> (source, files, extra files)."""
    if settings.environment_dir:
        folder = Path(settings.environment_dir)
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix.lower() in envmaps.LIBRARY_EXTENSIONS}
        if not files:
            raise ValueError(f"environment_dir {folder}: no {'/'.join(envmaps.LIBRARY_EXTENSIONS)} files")
        return f"folder {folder}", files, {}
    npm = assets_dir() / NPM_HDRI_PACKAGE
    if (npm / "hdri").is_dir():
        maps = envmaps.load_npm_hdris(npm / "hdri")
        repaired = {name: n for name, (_, n) in maps.items()}
        files = {f"{name}.hdr": envmaps.write_hdr(env) for name, (env, _) in maps.items()}
        extra = {f"{NPM_HDRI_PACKAGE}.LICENSE": (npm / "LICENSE").read_bytes()} if (npm / "LICENSE").exists() else {}
        return f"npm @pmndrs/assets 1.7.0 (Poly Haven, CC0; negative pixels repaired: {repaired})", files, extra
    return "procedural (npm HDRIs not found: run scripts/fetch_assets.sh)", {}, {}


@asset(code_version="1", group_name="rendering", kinds={"hdr", "json"})
def environment_maps(context: AssetExecutionContext, settings: PipelineSettings, storage: StorageResource) -> Output[dict]:
    """The HDR library: every .hdr/.exr under ``<prefix>/library/envmaps/``. An empty library (or
    one holding only procedural maps) is filled from ``environment_dir`` or the npm Poly Haven
    HDRIs; procedural maps remain only as a logged fallback. Every listed map is read and validated."""
    store = storage.object_store()
    folder = "/".join(p for p in (storage.prefix, "library/envmaps") if p)
    keys = [k for k in store.list_keys(folder + "/") if k.lower().endswith(envmaps.LIBRARY_EXTENSIONS)]
    source, generated = "library", 0
    if all(k.rsplit("/", 1)[-1].startswith("procedural_") for k in keys):
        source, files, extra = _library_sources(settings)
        if files:
            for key in keys:
                store.delete(key)
            keys = []
            for name, data in {**files, **extra}.items():
                store.put_bytes(f"{folder}/{name}", data)
            keys = [f"{folder}/{name}" for name in files]
        elif not keys:
            context.log.warning(f"environment maps: {source}")
            for i in range(settings.n_environment_maps):
                key = f"{folder}/procedural_{i:03d}.hdr"
                store.put_bytes(key, envmaps.write_hdr(envmaps.procedural_envmap(seed=settings.seed * 1000 + i)))
                keys.append(key)
                generated += 1
        context.log.info(f"environment maps from {source}")
    library = {k.rsplit("/", 1)[-1].rsplit(".", 1)[0]: k for k in sorted(keys)}
    if len(library) != len(keys):
        raise ValueError(f"{folder}: two maps share a name with different extensions: {sorted(keys)}")
    maps = {name: envmaps.read_envmap(store.get_bytes(key), key) for name, key in library.items()}  # validates all
    previews = [envmaps.tone_map(env, envmaps.auto_exposure(env)) for env in list(maps.values())[:8]]
    versions.record(context, library, settings)
    return Output(library, metadata={"maps": len(library), "generated": generated, "source": source,
                                     "max_radiance": MetadataValue.json({n: round(float(e.max()), 1) for n, e in maps.items()}),
                                     "preview": image(plots.image_grid(previews, cols=4, max_side=128))})


@asset(code_version="2", group_name="rendering", partitions_def=pose_shards, kinds={"png", "blender"}, pool="render",
       backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1))
def rendered_views(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                   storage: StorageResource, optimized_poses: PoseTable, environment_maps: dict) -> Output[pd.DataFrame]:
    """RGB (Cycles or raster), part-label and depth PNGs of every kept pose from ``n_views`` cameras;
    a manifest row per image recording the renderer, samples, device and colour management."""
    store = storage.object_store()
    shard = context.partition_key
    kept = optimized_poses.take(optimized_poses.meta["kept"].to_numpy(dtype=bool))
    library = {name: envmaps.read_envmap(store.get_bytes(key), key) for name, key in environment_maps.items()}
    options = render_options(settings, context.log.warning)
    times = StageTimes()
    rows, sheet, side_by_side = [], [], []
    for img in render_pose_views(hand_model.get(), kept, settings.n_views, settings.image_size, library,
                                 seed=settings.seed, options=options, times=times, log_fn=context.log.info,
                                 shard=shard, key_prefix=storage.prefix):
        for kind, data in img.pngs.items():
            store.put_bytes(img.record.keys[kind], data)
        r = img.record
        rows.append({"image_id": r.image_id, "pose_id": r.pose["pose_id"], "view": r.view, "render_seed": r.render_seed,
                     "envmap": r.envmap, **img.scene, "rgb_key": r.keys["rgb"], "label_key": r.keys["label"], "depth_key": r.keys["depth"],
                     "mask_iou": img.mask_iou, "alpha_iou": img.alpha_iou, "width": r.width, "height": r.height,
                     "renderer": img.backend["renderer"], "samples": img.backend["samples"],
                     "device": img.backend["device"], "colour_management": img.backend["colour_management"],
                     "K": r.K.reshape(9), "R": r.R.reshape(9), "t": r.t,
                     "visibility": r.visibility.reshape(42).astype(np.uint8)})
        if len(sheet) < 20:
            sheet.append(plots.draw_keypoints(img.rgb, annotate.project_record(r), r.visibility.reshape(42)))
        if len(side_by_side) < 16 and img.backend["renderer"] == "cycles":
            side_by_side += [img.rgb, img.raster_rgb]
    manifest = pd.DataFrame(rows)
    # a re-run with other data must not leave images of poses this shard no longer keeps
    written = set(manifest[["rgb_key", "label_key", "depth_key"]].to_numpy().ravel()) if len(manifest) else set()
    folder = "/".join(p for p in (storage.prefix, "render", shard) if p) + "/"
    stale = [k for k in store.list_keys(folder) if k not in written]
    for key in stale:
        store.delete(key)
    meta = {"images": len(manifest), "poses": len(kept), "stale_images_removed": len(stale), "stage_seconds": MetadataValue.json(
        {k: round(v, 2) for k, v in times.seconds.items()})}
    if len(manifest):
        meta["min_mask_iou"] = float(manifest["mask_iou"].min())
        meta["contact_sheet"] = image(plots.image_grid(sheet, cols=5))
        meta["renderer"] = MetadataValue.json(dict(img.backend))
        if side_by_side:
            meta["cycles_vs_raster"] = image(plots.image_grid(side_by_side, cols=4, max_side=256))
            meta["min_alpha_iou"] = float(manifest["alpha_iou"].min())
        vis = np.stack(manifest["visibility"].to_numpy()).sum(axis=1)
        meta["histograms"] = image(plots.histograms({"view index": manifest["view"], "visible keypoints (of 42)": vis},
                                                    "views and visibility"))
    versions.record(context, manifest, settings)
    return Output(manifest, metadata=meta)


@asset(code_version="1", group_name="rendering", partitions_def=pose_shards, kinds={"parquet"},
       backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1))
def annotations(context: AssetExecutionContext, hand_model: HandModelResource, optimized_poses: PoseTable,
                rendered_views: pd.DataFrame) -> Output[pd.DataFrame]:
    """One row per image: MANO pose/shape, 3D (world, camera) and 2D keypoints, K, R, t, visibility, boxes, lineage."""
    model = hand_model.get()
    by_id = {pid: i for i, pid in enumerate(optimized_poses.pose_ids)}
    rows = []
    for pid, views in rendered_views.groupby("pose_id", sort=False) if len(rendered_views) else []:
        row = optimized_poses.take([by_id[pid]])
        kps = np.stack([model.forward_numpy(s, row.hand(s)).keypoints[0].cpu().numpy().astype(np.float64) for s in SIDES])
        meta = row.meta.iloc[0]
        for v in views.itertuples():
            record = ImageRecord(
                image_id=v.image_id,
                pose={"pose_id": pid, "distinct_pose_id": str(meta["distinct_pose_id"]), "source_ref": str(meta["source_ref"]),
                      "shard": context.partition_key},
                hands={s: {k: row.hand(s)[k][0] for k in ("global_orient", "hand_pose", "betas", "transl")} for s in SIDES},
                keypoints_world=kps, K=np.asarray(v.K).reshape(3, 3), R=np.asarray(v.R).reshape(3, 3), t=np.asarray(v.t),
                width=int(v.width), height=int(v.height),
                visibility=np.asarray(v.visibility).reshape(2, 21).astype(bool), view=int(v.view),
                render_seed=int(v.render_seed), envmap=str(v.envmap),
                keys={"rgb": v.rgb_key, "label": v.label_key, "depth": v.depth_key})
            rows.append(annotate.annotation_row(record, model.name))
    table = annotate.annotation_table(rows)
    versions.record(context, table)
    return Output(table, metadata={"images": len(table), "hand_model": model.name,
                                   "visible_keypoints_mean": float(table["visible_keypoints"].mean()) if len(table) else 0.0})
