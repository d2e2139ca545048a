"""Pose stages: raw_poses -> deduped_poses -> augmented_poses[shard]."""

from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, Output, asset

from handsynth import augment, dedup, plots
from handsynth.pose_table import PoseTable
from ih_assets import versions
from ih_assets.metadata import image
from resources.partitions import POSE_SHARDS_NAME, pose_shards
from resources.hand_model import HandModelResource
from resources.settings import PipelineSettings
from resources.sources import PoseSourceResource


@asset(code_version="2", group_name="poses", kinds={"parquet", "torch"})
def raw_poses(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
              pose_source: PoseSourceResource) -> Output[PoseTable]:
    """Two-hand MANO poses from InterHand2.6M, or from the seeded procedural generator (default)."""
    model = hand_model.get()
    context.log.info(f"hand model: {model.name}; pose source: {pose_source.kind}")
    table, summary = pose_source.load(model, settings.n_procedural_poses, settings.seed)
    context.log.info(f"{len(table)} raw two-hand poses")
    versions.record(context, table, settings)
    return Output(table, metadata={"poses": len(table), "hand_model": model.name,
                                   "source": MetadataValue.json(summary)})


@asset(code_version="1", group_name="poses", kinds={"parquet"})
def deduped_poses(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                  raw_poses: PoseTable) -> Output[PoseTable]:
    """Near-duplicate poses removed; one shard (dynamic partition) per ``shard_size`` kept poses."""
    table = dedup.remove_similar_poses(hand_model.get(), raw_poses, settings.dedup_threshold_mm, settings.shard_size)
    shards = sorted(table.meta["shard"].unique())
    registered = set(context.instance.get_dynamic_partitions(POSE_SHARDS_NAME))
    stale = sorted(registered - set(shards))
    for key in stale:  # a re-run with other sizes must not leave orphan shards behind
        context.instance.delete_dynamic_partition(POSE_SHARDS_NAME, key)
    context.instance.add_dynamic_partitions(POSE_SHARDS_NAME, [s for s in shards if s not in registered])
    context.log.info(f"{len(raw_poses)} -> {len(table)} distinct poses in {len(shards)} shards")
    sizes = table.meta["cluster_size"].to_numpy()
    versions.record(context, table, settings)
    return Output(table, metadata={
        "poses_in": len(raw_poses), "poses_out": len(table), "shards": len(shards),
        "threshold_mm": settings.dedup_threshold_mm, "removed_shards": MetadataValue.json(stale),
        "cluster_sizes": image(plots.histograms({"frames per kept pose": sizes}, "dedup clusters")),
    })


@asset(code_version="2", group_name="poses", partitions_def=pose_shards, kinds={"parquet"},
       backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1))
def augmented_poses(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                    deduped_poses: PoseTable) -> Output[PoseTable]:
    """``n_augmentations`` copies per distinct pose, moved along natural finger synergies within range."""
    shard = context.partition_key
    distinct = deduped_poses.take(deduped_poses.meta["shard"].to_numpy() == shard)
    table, report = augment.augment_pose_table(hand_model.get(), distinct, settings.n_augmentations, settings.seed)
    context.log.info(f"{shard}: {len(distinct)} distinct -> {len(table)} augmented poses")
    versions.record(context, table, settings)
    return Output(table, metadata={
        "distinct_poses": len(distinct), "poses": len(table),
        "max_limit_violation_deg": MetadataValue.json(report["max_violation_deg"]),
        "share_violating_limits": float(report["share_violating"]),
        "coupling_source": MetadataValue.json(report["coupling_source"]),
        "coupling_augmented": MetadataValue.json(report["coupling"]),
        "synergy_basis": report["synergy_basis"],
        "violations": image(plots.histograms({"largest joint-limit violation (deg)": report["per_pose_max_deg"]},
                                             "anatomical limits after augmentation")),
    })
