"""Dataset-level outputs: dataset_manifest and dataset_exports (IH2.6M, IntagHand).

Both summarise *every* pose shard, so they refuse to materialize from an incomplete set: zero
images, a registered shard whose annotations are missing (its run failed or has not run) or
older than its rendered views or than the latest ``deduped_poses`` (stale after a refresh).

Neither loads the annotation tables as inputs (a million rows would not fit): they depend on
``annotations`` without loading it. The manifest adds up the small per-shard summaries each
``annotations`` step records (:mod:`handsynth.shard_summary`); the exports read the tables a
batch of rows at a time from the objects their materializations record, verified first.

No WebDataset asset: the render blocks (``<prefix>/render/<shard>/<pose>.tar``) already are
WebDataset shards, one per distinct pose, so a second copy of every image is not made.
"""

import json
from dataclasses import dataclass
from typing import Callable, Iterator

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, Config, Failure, MetadataValue, Output, asset

from handsynth import exports, shard_summary, training
from handsynth.export_files import ExportFiles, remove_orphans, store_writer
from handsynth.render.blocks import read_member
from handsynth.storage import Store
from ih_assets import versions
from resources.hand_model import HandModelResource
from resources.io_managers import recorded_object
from resources.partitions import POSE_SHARDS_NAME
from resources.settings import PipelineSettings
from resources.storage import StorageResource

ANNOTATIONS = AssetKey("annotations")


@dataclass(frozen=True)
class ShardTable:
    """Where one shard's annotation table is stored, and its summary."""

    shard: str
    key: str
    bytes: int | None   # recorded size and sha256 (None: not recorded, read unchecked)
    sha256: str | None
    summary: dict

    def batches(self, store: Store, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """The table (or these ``columns`` of it) in batches of rows, after a streamed check
        against its record."""
        if self.sha256 is not None and self.bytes is not None:
            store.verify(self.key, self.bytes, self.sha256)
        yield from training.iter_annotation_batches(store, self.key, columns)


def complete_shards(context: AssetExecutionContext, store: Store, prefix: str) -> list[ShardTable]:
    """Every registered shard's stored annotation table, after checking that each is there and
    fresh, and that there are images. Raises :class:`dagster.Failure` naming each missing or
    stale shard, or when there are no images. A shard whose record has no summary (made by
    older code) is summarised from its table: one shard in memory at a time."""
    instance = context.instance
    shards = instance.get_dynamic_partitions(POSE_SHARDS_NAME)
    if not shards:
        raise Failure("no pose shards are registered: materialize deduped_poses and the shards first")
    upstream = versions.latest_materialization(instance, AssetKey("deduped_poses"), None)
    problems, found = [], []
    folder = "/".join(p for p in (prefix, "annotations") if p)
    for shard in shards:
        done = versions.latest_materialization(instance, ANNOTATIONS, shard)
        rendered = versions.latest_materialization(instance, AssetKey("rendered_views"), shard)
        meta = done.asset_materialization.metadata if done is not None else {}
        key, size, sha = recorded_object(meta) or (f"{folder}/{shard}.parquet", None, None)
        if done is None or not store.exists(key):
            problems.append(f"{shard}: annotations missing (the shard failed or has not run)")
        elif (upstream and done.timestamp < upstream.timestamp) or (rendered and done.timestamp < rendered.timestamp):
            problems.append(f"{shard}: annotations older than deduped_poses or the shard's rendered_views (stale)")
        else:
            table = ShardTable(shard, key, size, sha, {})
            summary = meta["summary"].value if "summary" in meta else shard_summary.summarize(table.batches(store))
            found.append(ShardTable(shard, key, size, sha, shard_summary.check(summary, f"{shard} annotations")))
    if problems:
        raise Failure(f"{len(problems)} of {len(shards)} pose shards are not complete; re-run them first: "
                      + "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else ""),
                      metadata={"incomplete_shards": MetadataValue.json(problems)})
    if sum(t.summary["images"] for t in found) == 0:
        raise Failure(f"all {len(shards)} pose shards have zero images (no pose kept?): nothing to export")
    return found


@asset(code_version="2", group_name="dataset", kinds={"json"}, deps=[ANNOTATIONS])
def dataset_manifest(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                     storage: StorageResource) -> Output[dict]:
    """Counts, sizes, configuration, hand-model identity and code version of the whole dataset,
    added up from the per-shard summaries (no annotation table is loaded)."""
    from importlib.metadata import version

    shards = complete_shards(context, storage.object_store(), storage.prefix)
    totals = shard_summary.combine({t.shard: t.summary for t in shards})
    model = hand_model.get()
    manifest = {
        **totals, "settings": settings.record(),
        "hand_model": model.identity, "code_version": version("renderih-pipeline"),
        "keypoint_order": "per hand: 16 MANO joints then tips (thumb, index, middle, ring, pinky); right then left",
        "units": {"keypoints3d": "mm", "keypoints2d": "px", "transl": "m", "depth_png": "mm (uint16)"},
        "pixel_convention": "2D keypoints are the projection K(RX+t); integer pixel coordinates are pixel centres (OpenCV, IH2.6M): keypoint (u, v) lies in array element [round(v), round(u)]",
        "label_png": "0 background, 1..16 right-hand parts, 17..32 left-hand parts",
    }
    versions.record(context, manifest, settings)
    return Output(manifest, metadata={"images": totals["images"], "hand_model": model.name,
                                      "manifest": MetadataValue.json(json.loads(json.dumps(manifest, default=str)))})


class ExportConfig(Config):
    """Split fractions by distinct pose, e.g. ``train=0.8,val=0.1,test=0.1``."""

    splits: str = "train=0.8,val=0.1,test=0.1"


def export_to_store(store: Store, root: str, tables: Callable[[], Iterator[pd.DataFrame]], total: int,
                    pca_inverse: dict, splits: dict[str, float], log: Callable[[str], None] = lambda message: None) -> dict:
    """Write both layouts, complete with JPEG images and ``SHA256SUMS``, under ``root`` in an
    object store, streaming (``tables()`` yields annotation rows a batch at a time; images
    are read from the render blocks by range), then delete what a previous run left."""
    def read_image(image: exports.ExportImage, kind: str) -> bytes:
        return read_member(store, image.location, kind)

    out: dict = {}
    for name in ("interhand26m", "intaghand"):
        folder = f"{root}/{name}"
        images = exports.logged(exports.iter_export_images(tables()), log, name, total)
        with ExportFiles(store_writer(store, folder)) as files:
            if name == "interhand26m":
                result = exports.write_interhand_dataset(images, files, read_image, splits=splits)
                out[name] = {"paths": {s: {k: f"{folder}/{v}" for k, v in p.items()} for s, p in result.paths.items()},
                             "images": result.images, "frames": result.frames}
            else:
                result = exports.write_intaghand_dataset(images, files, read_image, pca_inverse, splits=splits)
                out[name] = {"images": result.images}
        out[name]["files"] = files.files
        existing = (k[len(folder) + 1:] for k in store.list_keys(folder + "/"))
        out[name]["orphans_removed"] = remove_orphans(existing, result.expects,
                                                      lambda p, f=folder: store.delete(f"{f}/{p}"))
    return out


@asset(code_version="2", group_name="dataset", kinds={"json", "jpeg"}, deps=[ANNOTATIONS])
def dataset_exports(context: AssetExecutionContext, config: ExportConfig, storage: StorageResource,
                    hand_model: HandModelResource) -> Output[dict]:
    """The dataset in InterHand2.6M's and IntagHand's on-disk layouts under ``<prefix>/exports/``,
    complete (annotations, JPEG images, derived images) with a ``SHA256SUMS`` per layout."""
    store = storage.object_store()
    shards = complete_shards(context, store, storage.prefix)
    splits = exports.parse_splits(config.splits)
    root = "/".join(p for p in (storage.prefix, "exports") if p)
    total = sum(t.summary["images"] for t in shards)
    columns = exports.export_columns()
    written = export_to_store(store, root, lambda: (b for t in shards for b in t.batches(store, columns)), total,
                              exports.pca_inverses(hand_model.get().identity["source"]), splits, log=context.log.info)
    ih = written["interhand26m"]
    versions.record(context, written)
    return Output(written, metadata={"images": total, "interhand_frames": ih["frames"],
                                     "images_per_split": MetadataValue.json(ih["images"]),
                                     "files": MetadataValue.json(written)})
