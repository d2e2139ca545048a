"""Rendering stages: environment_maps, rendered_views[shard], annotations[shard] (dataset-level outputs: dataset.py)."""

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, Output, asset

from handsynth import annotate, envmaps, plots
from handsynth.annotate import ImageRecord
from handsynth.pose_table import PoseTable
from handsynth.views import StageTimes, render_pose_views
from ih_assets.metadata import image
from resources.hand_model import HandModelResource
from resources.partitions import pose_shards
from resources.settings import PipelineSettings
from resources.storage import StorageResource

SIDES = ("right", "left")


@asset(group_name="rendering", kinds={"hdr", "json"})
def environment_maps(context: AssetExecutionContext, settings: PipelineSettings, storage: StorageResource) -> Output[dict]:
    """The HDR library: every .hdr under ``<prefix>/library/envmaps/``; if there are none, a few
    procedurally generated maps are written there first (nothing has to be downloaded)."""
    store = storage.object_store()
    folder = "/".join(p for p in (storage.prefix, "library/envmaps") if p)
    keys = [k for k in store.list_keys(folder + "/") if k.endswith(".hdr")]
    generated = 0
    if not keys:
        for i in range(settings.n_environment_maps):
            key = f"{folder}/procedural_{i:03d}.hdr"
            store.put_bytes(key, envmaps.write_hdr(envmaps.procedural_envmap(seed=settings.seed * 1000 + i)))
            keys.append(key)
            generated += 1
    library = {k.rsplit("/", 1)[-1][:-4]: k for k in sorted(keys)}
    previews = [envmaps.tone_map(envmaps.read_hdr(store.get_bytes(k), k)) for k in list(library.values())[:8]]
    return Output(library, metadata={"maps": len(library), "generated": generated,
                                     "preview": image(plots.image_grid(previews, cols=4, max_side=128))})


@asset(group_name="rendering", partitions_def=pose_shards, kinds={"png", "pyrender"}, pool="render",
       backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1))
def rendered_views(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                   storage: StorageResource, optimized_poses: PoseTable, environment_maps: dict) -> Output[pd.DataFrame]:
    """RGB, part-label and depth PNGs of every kept pose from ``n_views`` cameras; a manifest row per image."""
    store = storage.object_store()
    shard = context.partition_key
    kept = optimized_poses.take(optimized_poses.meta["kept"].to_numpy(dtype=bool))
    library = {name: envmaps.read_hdr(store.get_bytes(key), key) for name, key in environment_maps.items()}
    times = StageTimes()
    rows, sheet = [], []
    for img in render_pose_views(hand_model.get(), kept, shard, settings.n_views, settings.image_size, library,
                                 key_prefix=storage.prefix, times=times, log_fn=context.log.info):
        for kind, data in img.pngs.items():
            store.put_bytes(img.record.keys[kind], data)
        r = img.record
        rows.append({"image_id": r.image_id, "pose_id": r.pose["pose_id"], "view": r.view, "render_seed": r.render_seed,
                     "envmap": r.envmap, "rgb_key": r.keys["rgb"], "label_key": r.keys["label"], "depth_key": r.keys["depth"],
                     "mask_iou": img.mask_iou, "width": r.width, "height": r.height,
                     "K": r.K.reshape(9), "R": r.R.reshape(9), "t": r.t,
                     "visibility": r.visibility.reshape(42).astype(np.uint8)})
        if len(sheet) < 20:
            sheet.append(plots.draw_keypoints(img.rgb, annotate.project_record(r), r.visibility.reshape(42)))
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
        vis = np.stack(manifest["visibility"].to_numpy()).sum(axis=1)
        meta["histograms"] = image(plots.histograms({"view index": manifest["view"], "visible keypoints (of 42)": vis},
                                                    "views and visibility"))
    return Output(manifest, metadata=meta)


@asset(group_name="rendering", partitions_def=pose_shards, kinds={"parquet"},
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
    return Output(table, metadata={"images": len(table), "hand_model": model.name,
                                   "visible_keypoints_mean": float(table["visible_keypoints"].mean()) if len(table) else 0.0})
