"""Optimization stages: hand_anchors, pose_discriminator, optimized_poses[shard]."""

import torch
from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, Output, asset

from handsynth import anchors as anchor_ops
from handsynth import discriminator, optimize, plots
from handsynth.penetration import PenetrationField
from handsynth.pose_table import PoseTable
from ih_assets import versions
from ih_assets.metadata import image
from resources.hand_model import HandModelResource
from resources.partitions import pose_shards
from resources.settings import PipelineSettings


@asset(code_version="2", group_name="optimization", kinds={"json"})
def hand_anchors(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                 raw_poses: PoseTable) -> Output[dict]:
    """Contact anchors: vertices most often near the other hand with opposing normals, per hand,
    counted over a bounded sample of the raw poses (chosen by seed and pose id)."""
    sample = anchor_ops.anchor_sample(raw_poses, settings.seed)
    anchors = anchor_ops.select_anchors(hand_model.get(), sample, settings.n_anchors_per_hand)
    freq = {f"{s} anchor contact frequency": anchors.frequency[s] for s in ("right", "left")}
    versions.record(context, anchors.to_json(), settings)
    return Output(anchors.to_json(), metadata={
        "anchors_per_hand": len(anchors.face_ids["right"]), "poses_used": len(sample), "raw_poses": len(raw_poses),
        "frequency": image(plots.histograms(freq, "share of raw poses in contact at each anchor")),
    })


@asset(code_version="2", group_name="optimization", kinds={"torch", "safetensors"})
def pose_discriminator(context: AssetExecutionContext, settings: PipelineSettings) -> Output[dict]:
    """Naturalness discriminator trained on the gesture library's hands vs jittered copies."""
    net, report = discriminator.train_discriminator(discriminator.natural_hands(settings.seed), seed=settings.seed,
                                                    epochs=settings.discriminator_epochs, log_fn=context.log.info)
    _, card = discriminator.save_discriminator(net, report)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    versions.record(context, state, settings)
    return Output(state, metadata={
        "holdout_auc": report.holdout_auc, "holdout_accuracy": report.holdout_accuracy,
        "real_hands": report.n_real, "card": MetadataValue.json(card),
        "loss_curve": image(plots.curves({"BCE": report.loss_curve}, "discriminator training", xlabel="epoch")),
    })


@asset(code_version="4", group_name="optimization", partitions_def=pose_shards, kinds={"parquet", "torch"}, pool="optimize",
       backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1))
def optimized_poses(context: AssetExecutionContext, settings: PipelineSettings, hand_model: HandModelResource,
                    augmented_poses: PoseTable, hand_anchors: dict, pose_discriminator: dict) -> Output[PoseTable]:
    """Augmented poses optimized to be valid, natural and in contact; invalid ones marked dropped."""
    model = hand_model.get()
    config = optimize.OptimizeConfig(iterations=settings.optimize_iterations, schedule=settings.optimize_schedule,
                                     batch_size=settings.optimize_batch_size)
    torch.manual_seed(settings.seed)
    result = optimize.optimize_poses(model, augmented_poses, anchor_ops.Anchors.from_json(hand_anchors),
                                     discriminator.discriminator_from_state(pose_discriminator),
                                     PenetrationField(model), config, log_fn=context.log.info)
    keep, reason = optimize.filter_valid(result.stats)
    table = result.poses
    table.meta["kept"] = keep
    table.meta["drop_reason"] = reason
    for column in result.stats.columns:
        table.meta[column] = result.stats[column].to_numpy()
    summary = optimize.summary(result.stats, keep)
    naturalness = optimize.pose_report(model, table.take(keep))
    context.log.info(f"{context.partition_key}: kept {keep.sum()}/{len(keep)} poses; {summary}")
    st = result.stats
    versions.record(context, table, settings)
    return Output(table, metadata={
        "poses": len(table), "kept": int(keep.sum()), "retention": float(keep.mean()) if len(keep) else 0.0,
        "summary": MetadataValue.json(summary), "config": MetadataValue.json(optimize.config_record(config)),
        "kept_coupling": MetadataValue.json(naturalness["coupling"]),
        "kept_twist_std_deg": MetadataValue.json(naturalness["twist_std_deg"]),
        "kept_splay_std_deg": MetadataValue.json(naturalness["splay_std_deg"]),
        "seconds_per_stage": MetadataValue.json(result.seconds),
        "loss_curves": image(plots.curves(result.curves, "optimization (mean over poses)")),
        "penetration": image(plots.histograms({"max depth before (mm)": st["max_depth_mm_before"],
                                               "max depth after (mm)": st["max_depth_mm_after"]}, "penetration")),
    })
