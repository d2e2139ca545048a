"""Rendering stages: environment_maps, rendered_views[shard], annotations[shard] (dataset-level outputs: dataset.py)."""

import dataclasses
import hashlib

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, Failure, MetadataValue, Output, asset

from handsynth import annotate, envmaps, plots, shard_summary, userfiles
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir
from handsynth.annotate import ImageRecord
from handsynth.arms import ArmOptions
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.render import RenderOptions
from handsynth.render.blocks import LOCATION_COLUMNS, plan_blocks, shard_folder
from handsynth.render.workers import RenderJob, ShardRender, render_shard
from handsynth.views import CameraLook
from ih_assets import versions
from ih_assets.metadata import image
from resources.hand_model import HandModelResource
from resources.io_managers import WRITTEN_OBJECTS
from resources.partitions import pose_shards
from resources.renderer import render_options, render_workers, threads_per_worker, visible_gpus
from resources.settings import PipelineSettings
from resources.storage import StorageResource

SIDES = ("right", "left")


#: Library maps under this name prefix were generated here (the fallback); they never count as the user's.
PROCEDURAL_PREFIX = "procedural_"


def _library_sources(settings: PipelineSettings) -> tuple[str, dict[str, bytes], dict[str, bytes]]:
    """Maps the library should hold when it is managed here: the user's folder, else the npm Poly
    Haven set (decoded, negative radiance repaired, stored as .hdr), else procedural maps.
    -> (source, map files, extra files). Every map is decoded and validated before it is returned."""
    if settings.environment_dir:
        return f"folder {settings.environment_dir}", envmaps.read_map_folder(settings.environment_dir), {}
    npm = assets_dir() / NPM_HDRI_PACKAGE
    if (npm / "hdri").is_dir():
        maps = envmaps.load_npm_hdris(npm / "hdri")
        repaired = {name: n for name, (_, n) in maps.items()}
        files = {f"{name}.hdr": envmaps.write_hdr(env) for name, (env, _) in maps.items()}
        extra = {f"{NPM_HDRI_PACKAGE}.LICENSE": (npm / "LICENSE").read_bytes()} if (npm / "LICENSE").exists() else {}
        return f"npm @pmndrs/assets 1.7.0 (Poly Haven, CC0; negative pixels repaired: {repaired})", files, extra
    files = {f"{PROCEDURAL_PREFIX}{i:03d}.hdr": envmaps.write_hdr(envmaps.procedural_envmap(seed=settings.seed * 1000 + i))
             for i in range(settings.n_environment_maps)}
    return "procedural (npm HDRIs not found: run scripts/fetch_assets.sh)", files, {}


@asset(code_version="2", group_name="rendering", kinds={"hdr", "json"})
def environment_maps(context: AssetExecutionContext, settings: PipelineSettings, storage: StorageResource) -> Output[dict]:
    """The HDR library: every .hdr/.exr under ``<prefix>/library/envmaps/``.

    With ``environment_dir`` the library follows that folder: maps are added, replaced and removed
    to match it, and its digest is recorded so the main job re-syncs when the folder changes.
    Without it, maps a user put into the bucket are used as they are; a library that is empty or
    holds only procedural maps follows the npm Poly Haven set (procedural maps only when npm is
    unavailable, with a warning). Every map is validated before anything is uploaded, so a
    rejected file never enters the library, and the data version covers the maps' bytes. Each
    map's size and SHA-256 are recorded (``written_objects``), so ``ih-pipeline verify`` finds a
    damaged map and the next main job re-syncs the library."""
    store = storage.object_store()
    folder = "/".join(p for p in (storage.prefix, "library/envmaps") if p)
    stored = {k: store.get_bytes(k) for k in store.list_keys(folder + "/") if k.lower().endswith(envmaps.LIBRARY_EXTENSIONS)}
    users_own = any(not k.rsplit("/", 1)[-1].startswith(PROCEDURAL_PREFIX) for k in stored)
    meta: dict = {}
    if settings.environment_dir or not users_own:
        source, files, extra = _library_sources(settings)
        if source.startswith("procedural"):
            context.log.warning(f"environment maps: {source}")
        wanted = {f"{folder}/{name}": data for name, data in files.items()}
        put = [key for key, data in wanted.items() if stored.get(key) != data]
        for key in put:   # new or changed first, then what the source no longer has
            store.put_bytes(key, wanted[key])
        gone = sorted(set(stored) - set(wanted))
        for key in gone:
            store.delete(key)
        for name, data in extra.items():
            store.put_bytes(f"{folder}/{name}", data)
        stored = wanted
        meta = {"maps_uploaded": len(put), "maps_removed": len(gone), "source_digest": userfiles.files_digest(files)}
        context.log.info(f"environment maps from {source}: {len(put)} uploaded, {len(gone)} removed")
    else:
        source = "library"
    library = {k.rsplit("/", 1)[-1].rsplit(".", 1)[0]: k for k in sorted(stored)}
    if len(library) != len(stored):
        raise ValueError(f"{folder}: two maps share a name with different extensions: {sorted(stored)}")
    maps = {name: envmaps.read_envmap(stored[key], key) for name, key in library.items()}  # validates all
    previews = [envmaps.tone_map(env, envmaps.auto_exposure(env)) for env in list(maps.values())[:8]]
    digests = {name: hashlib.sha256(stored[key]).hexdigest() for name, key in library.items()}
    versions.record(context, {"maps": library, "sha256": digests}, settings)
    written = {key: {"bytes": len(stored[key]), "sha256": digests[name]} for name, key in library.items()}
    return Output(library, metadata={**meta, "maps": len(library), "source": source, WRITTEN_OBJECTS: MetadataValue.json(written),
                                     "max_radiance": MetadataValue.json({n: round(float(e.max()), 1) for n, e in maps.items()}),
                                     "preview": image(plots.image_grid(previews, cols=4, max_side=128))})


#: rendered_views' code version; also part of every block's inputs digest, so bumping it makes
#: every stored block stale.
RENDER_CODE_VERSION = "12"


def _block_inputs(settings: PipelineSettings, options: RenderOptions, model: HandModel, maps: dict[str, bytes]) -> dict:
    """Everything besides a block's poses that decides its images (the block inputs digest)."""
    return {"code_version": RENDER_CODE_VERSION, "settings": versions.relevant_settings(settings, "rendered_views"),
            "options": {**dataclasses.asdict(options), "threads": None}, "hand_model": model.identity["digest"],
            "environment_maps": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(maps.items())}}


def _look_summary(manifest: pd.DataFrame) -> dict:
    """How often each part of the camera look was on in a shard, and the median background blur."""
    blur = manifest["lens_background_blur_px"]
    return {"depth_of_field": round(float((manifest["lens_f_number"] > 0).mean()), 3),
            "background_blur_px_median": round(float(blur[blur > 0].median()), 2) if (blur > 0).any() else 0.0,
            **{name: round(float((manifest[f"effect_{column}"] != 0).mean()), 3) for name, column in (
                ("exposure_error", "exposure_ev"), ("vignetting", "vignetting_ev"), ("motion_blur", "motion_blur_px"),
                ("noise", "electrons_per_unit"), ("white_balance_error", "white_balance_mired"), ("jpeg", "jpeg_quality"))}}


def _block_metadata(shard_render: ShardRender) -> dict:
    """What ran, what was skipped, what failed and why, per block (shown in the UI)."""
    per_status = {s: shard_render.with_status(s) for s in ("rendered", "skipped", "failed")}
    return {
        "blocks": len(shard_render.outcomes),
        **{f"blocks_{s}": len(found) for s, found in per_status.items()},
        "images_rendered": sum(o.images for o in per_status["rendered"]),
        "block_seconds": MetadataValue.json({o.distinct_pose_id: round(o.seconds, 2) for o in per_status["rendered"]}),
        "replaced": MetadataValue.json({o.distinct_pose_id: f"{o.found}: {o.reason}"
                                        for o in per_status["rendered"] + per_status["failed"]
                                        if o.found in ("corrupt", "stale")}),
        "failures": MetadataValue.json({o.distinct_pose_id: o.error for o in per_status["failed"]}),
        "objects_removed": len(shard_render.removed),
        "stage_seconds": MetadataValue.json({k: round(v, 2) for k, v in shard_render.stage_seconds.items()}),
    }


@asset(code_version=RENDER_CODE_VERSION, group_name="rendering", partitions_def=pose_shards, kinds={"tar", "blender"},
       pool="render", backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1))
def rendered_views(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                   storage: StorageResource, optimized_poses: PoseTable, environment_maps: dict) -> Output[pd.DataFrame]:
    """Every kept pose from ``n_views`` cameras: RGB (Cycles or raster), part labels and depth in
    one render block (a WebDataset tar + index) per distinct pose; a manifest row per image
    locating its bytes and recording the renderer, samples, device and colour management, the
    view's lens (``lens_*``: thin-lens depth of field, ``depth_of_field``) and camera effects
    (``effect_*``, ``camera_effects``).

    Resumable and parallel: blocks stored complete and current are skipped, others rendered on
    ``IH_RENDER_WORKERS`` processes; a failed block fails the step after the others are stored."""
    store = storage.object_store()
    shard = context.partition_key
    kept = optimized_poses.take(optimized_poses.meta["kept"].to_numpy(dtype=bool))
    maps = {name: store.get_bytes(key) for name, key in environment_maps.items()}
    library = {name: envmaps.read_envmap(maps[name], key) for name, key in environment_maps.items()}
    options = render_options(settings, context.log.warning)
    model = hand_model.get()
    blocks = plan_blocks(kept, storage.prefix, shard, _block_inputs(settings, options, model, maps))
    workers = render_workers(settings)
    job = RenderJob(model, library, settings.seed, settings.n_views, settings.image_size, options,
                    CameraLook.from_switches(settings.depth_of_field, settings.camera_effects),
                    ArmOptions(forearms=settings.forearms, sleeve_share=settings.sleeve_share,
                               accessory_share=settings.accessory_share))
    result = render_shard(store, shard_folder(storage.prefix, shard), blocks, job, workers, threads_per_worker(workers),
                          visible_gpus(), log_fn=context.log.info)
    meta = {"images": len(result.rows), "poses": len(kept), "workers": workers, **_block_metadata(result)}
    failed = result.with_status("failed")
    if failed:
        raise Failure(f"{len(failed)} of {len(blocks)} render blocks of {shard} failed (the others are stored; a "
                      f"re-run renders only what is missing): " + "; ".join(f"{o.distinct_pose_id}: {o.error}"
                                                                             for o in failed[:5]), metadata=meta)
    manifest = result.table()
    if len(manifest):
        meta["min_mask_iou"] = float(manifest["mask_iou"].min())
        meta["renderer"] = MetadataValue.json({k: str(manifest[k].iloc[0]) for k in ("renderer", "samples", "device",
                                                                                    "colour_management")})
        if result.sheet:
            meta["contact_sheet"] = image(plots.image_grid(result.sheet, cols=5))
        if result.side_by_side:
            meta["cycles_vs_raster"] = image(plots.image_grid(result.side_by_side, cols=4, max_side=256))
        if manifest["alpha_iou"].notna().any():
            meta["min_alpha_iou"] = float(manifest["alpha_iou"].min())
        meta["camera_look"] = MetadataValue.json(_look_summary(manifest))
        vis = np.stack(manifest["visibility"].to_numpy()).sum(axis=1)
        meta["histograms"] = image(plots.histograms({"view index": manifest["view"], "visible keypoints (of 42)": vis},
                                                    "views and visibility"))
    versions.record(context, manifest, settings)
    return Output(manifest, metadata=meta)


@asset(code_version="3", group_name="rendering", partitions_def=pose_shards, kinds={"parquet"},
       backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1))
def annotations(context: AssetExecutionContext, hand_model: HandModelResource, optimized_poses: PoseTable,
                rendered_views: pd.DataFrame) -> Output[pd.DataFrame]:
    """One row per image: MANO pose/shape, 3D (world, camera) and 2D keypoints, K, R, t, visibility,
    boxes, lineage, and where its bytes are (block tar, member offsets, sizes, sha256). Its
    materialization records the table's summary (:func:`handsynth.shard_summary.summarize`), which
    the dataset manifest adds up instead of loading every table."""
    model = hand_model.get()
    by_id = {pid: i for i, pid in enumerate(optimized_poses.pose_ids)}
    rows = []
    for pid, views in rendered_views.groupby("pose_id", sort=False) if len(rendered_views) else []:
        row = optimized_poses.take([by_id[pid]])
        kps = np.stack([model.forward_numpy(s, row.hand(s)).keypoints[0].cpu().numpy().astype(np.float64) for s in SIDES])
        meta = row.meta.iloc[0]
        for v in views.to_dict("records"):
            record = ImageRecord(
                image_id=v["image_id"],
                pose={"pose_id": pid, "distinct_pose_id": str(meta["distinct_pose_id"]), "source_ref": str(meta["source_ref"]),
                      "shard": context.partition_key},
                hands={s: {k: row.hand(s)[k][0] for k in ("global_orient", "hand_pose", "betas", "transl")} for s in SIDES},
                keypoints_world=kps, K=np.asarray(v["K"]).reshape(3, 3), R=np.asarray(v["R"]).reshape(3, 3),
                t=np.asarray(v["t"]), width=int(v["width"]), height=int(v["height"]),
                visibility=np.asarray(v["visibility"]).reshape(2, 21).astype(bool), view=int(v["view"]),
                render_seed=int(v["render_seed"]), envmap=str(v["envmap"]))
            rows.append({**annotate.annotation_row(record, model.name), **{c: v[c] for c in LOCATION_COLUMNS}})
    table = annotate.annotation_table(rows)
    versions.record(context, table)
    return Output(table, metadata={"images": len(table), "hand_model": model.name,
                                   "summary": MetadataValue.json(shard_summary.summarize(table)),
                                   "visible_keypoints_mean": float(table["visible_keypoints"].mean()) if len(table) else 0.0})
