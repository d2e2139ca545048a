"""Dataset-level outputs: dataset_manifest, dataset_exports (IH2.6M, IntagHand) and webdataset_shards[shard].

The manifest and the exports summarise *every* pose shard, so they refuse to materialize from an
incomplete set: zero images, a registered shard whose annotations are missing (its run failed or
has not run) or older than its rendered views or than the latest ``deduped_poses`` (stale after a
refresh). Loading with ``allow_missing_partitions`` alone would silently export a partial set.
"""

import hashlib
import json

import pandas as pd
from dagster import (AssetExecutionContext, AssetIn, AssetKey, BackfillPolicy, Config, Failure, MetadataValue, Output,
                     asset)

from handsynth import exports, plots, training
from handsynth.annotate import stack
from handsynth.render.raster import decode_png
from ih_assets import versions
from ih_assets.metadata import image
from resources.hand_model import HandModelResource
from resources.partitions import POSE_SHARDS_NAME, pose_shards
from resources.settings import PipelineSettings
from resources.storage import StorageResource

_ALL_SHARDS = {"annotations": AssetIn(metadata={"allow_missing_partitions": True})}


def require_complete_shards(context: AssetExecutionContext, annotations: dict[str, pd.DataFrame]) -> int:
    """The number of images, after checking that every registered shard has fresh annotations.

    Raises :class:`dagster.Failure` naming each missing or stale shard, or when there are no images.
    """
    instance = context.instance
    shards = instance.get_dynamic_partitions(POSE_SHARDS_NAME)
    if not shards:
        raise Failure("no pose shards are registered: materialize deduped_poses and the shards first")
    upstream = versions.latest_materialization(instance, AssetKey("deduped_poses"), None)
    problems = []
    for shard in shards:
        done = versions.latest_materialization(instance, AssetKey("annotations"), shard)
        rendered = versions.latest_materialization(instance, AssetKey("rendered_views"), shard)
        if done is None or shard not in annotations:
            problems.append(f"{shard}: annotations missing (the shard failed or has not run)")
        elif (upstream and done.timestamp < upstream.timestamp) or (rendered and done.timestamp < rendered.timestamp):
            problems.append(f"{shard}: annotations older than deduped_poses or the shard's rendered_views (stale)")
    if problems:
        raise Failure(f"{len(problems)} of {len(shards)} pose shards are not complete; re-run them first: "
                      + "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else ""),
                      metadata={"incomplete_shards": MetadataValue.json(problems)})
    images = sum(len(annotations[s]) for s in shards)
    if images == 0:
        raise Failure(f"all {len(shards)} pose shards have zero images (no pose kept?): nothing to export")
    return images


@asset(code_version="1", group_name="dataset", kinds={"json"}, ins=_ALL_SHARDS)
def dataset_manifest(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                     annotations: dict) -> Output[dict]:
    """Counts, configuration, hand-model identity and code version of the whole dataset."""
    from importlib.metadata import version

    images = require_complete_shards(context, annotations)
    model = hand_model.get()
    counts = {shard: int(len(df)) for shard, df in sorted(annotations.items())}
    manifest = {
        "images": images, "images_per_shard": counts, "settings": settings.record(),
        "hand_model": model.identity, "code_version": version("renderih-pipeline"),
        "keypoint_order": "per hand: 16 MANO joints then tips (thumb, index, middle, ring, pinky); right then left",
        "units": {"keypoints3d": "mm", "keypoints2d": "px", "transl": "m", "depth_png": "mm (uint16)"},
        "pixel_convention": "2D keypoints are the projection K(RX+t); integer pixel coordinates are pixel centres (OpenCV, IH2.6M): keypoint (u, v) lies in array element [round(v), round(u)]",
        "label_png": "0 background, 1..16 right-hand parts, 17..32 left-hand parts",
    }
    versions.record(context, manifest, settings)
    return Output(manifest, metadata={"images": images, "hand_model": model.name,
                                      "manifest": MetadataValue.json(json.loads(json.dumps(manifest, default=str)))})


class ExportConfig(Config):
    """Split fractions by distinct pose, e.g. ``train=0.8,val=0.1,test=0.1``."""

    splits: str = "train=0.8,val=0.1,test=0.1"


def export_to_store(store, root: str, table: pd.DataFrame, pca_inverse: dict, splits: dict[str, float],
                    log=lambda message: None) -> dict:
    """Write both layouts under ``root`` in an object store and delete what a previous run left.

    Object stores have no links, so images are not copied: each layout gets ``image_index.json``
    (layout path -> rendered image key) and ``ih-pipeline export`` builds the complete folder.
    """
    images = exports.export_images(table)
    out: dict = {}
    for name in ("interhand26m", "intaghand"):
        folder = f"{root}/{name}"
        index: dict[str, str] = {}
        put = lambda path, data, folder=folder: store.put_bytes(f"{folder}/{path}", data)  # noqa: E731
        if name == "interhand26m":
            result = exports.write_interhand_dataset(exports.logged(images, log, name), put, index.__setitem__,
                                                     splits=splits)
            out[name] = {"paths": {s: {k: f"{folder}/{v}" for k, v in p.items()} for s, p in result.paths.items()},
                         "images": result.images, "frames": result.frames}
        else:
            result = exports.write_intaghand_dataset(exports.logged(images, log, name), put, index.__setitem__,
                                                     store.get_bytes, pca_inverse, splits=splits)
            out[name] = {"images": result.images}
        put("image_index.json", json.dumps(index, sort_keys=True).encode())
        written = {f"{folder}/{p}" for p in result.files if p not in index} | {f"{folder}/image_index.json"}
        orphans = exports.remove_orphans(store.list_keys(folder + "/"), written, store.delete)
        out[name]["orphans_removed"] = len(orphans)
    return out


@asset(code_version="1", group_name="dataset", kinds={"json"}, ins=_ALL_SHARDS)
def dataset_exports(context: AssetExecutionContext, config: ExportConfig, storage: StorageResource,
                    hand_model: HandModelResource, annotations: dict) -> Output[dict]:
    """The dataset in InterHand2.6M's and IntagHand's on-disk layouts under ``<prefix>/exports/``
    (annotations and derived images; RGB images by index, see ``ih-pipeline export``)."""
    require_complete_shards(context, annotations)
    splits = exports.parse_splits(config.splits)
    store = storage.object_store()
    root = "/".join(p for p in (storage.prefix, "exports") if p)
    table = pd.concat([df for _, df in sorted(annotations.items())], ignore_index=True)
    written = export_to_store(store, root, table, exports.pca_inverses(hand_model.get().identity["source"]), splits,
                              log=context.log.info)
    ih = written["interhand26m"]
    versions.record(context, written)
    return Output(written, metadata={"images": len(table), "interhand_frames": ih["frames"],
                                     "images_per_split": MetadataValue.json(ih["images"]),
                                     "files": MetadataValue.json(written)})


@asset(code_version="1", group_name="dataset", partitions_def=pose_shards, kinds={"tar"},
       backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1))
def webdataset_shards(context: AssetExecutionContext, storage: StorageResource, annotations: pd.DataFrame) -> Output[dict]:
    """One WebDataset tar per pose shard (``{key}.png``, ``.label.png``, ``.depth.png``, ``.json``)
    at ``<prefix>/webdataset/<shard>.tar``; a re-rendered shard replaces its tar."""
    store = storage.object_store()
    key = "/".join(p for p in (storage.prefix, "webdataset", f"{context.partition_key}.tar") if p)
    data = training.webdataset_tar(annotations, store.get_bytes)
    store.put_bytes(key, data)
    meta = {"samples": len(annotations), "bytes": len(data), "key": key}
    if len(annotations):
        row = annotations.iloc[0]
        rgb = decode_png(store.get_bytes(str(row["rgb_key"])))
        uv = stack(annotations.iloc[:1], "keypoints2d_px", (42, 2))[0]
        meta["first_sample"] = image(plots.image_grid([plots.draw_keypoints(rgb, uv, row["visibility"])], cols=1))
    written = {"key": key, "samples": len(annotations), "bytes": len(data),
               "sha256": hashlib.sha256(data).hexdigest()}   # the tar's content decides the data version
    versions.record(context, written)
    return Output(written, metadata=meta)
