"""The code location: every asset, check, job, schedule, sensor and resource in one place.

``workspace.yaml`` points ``dagster dev`` here. Resources come from
:func:`resources.environments.resources_for` (``IH_ENV``: local | cluster | test); on the cluster
every step runs in its own Kubernetes Job (:mod:`ih_assets.cluster`).
"""

from __future__ import annotations

import os

from dagster import AssetSelection, Definitions, define_asset_job, load_asset_checks_from_modules, load_assets_from_modules

from ih_assets import dataset, optimization, poses, rendering
from ih_assets.cluster import k8s_executor
from resources.partitions import pose_shards
from quality import optimization_checks, pose_checks, rendering_checks
from resources.environments import resources_for
from sensors.s3_sensors import new_interhand_files, new_library_files
from sensors.schedules import nightly_shard_backfill

UNPARTITIONED_JOB = "prepare_sources"
PARTITIONED_JOB = "generate_shard"
FINAL_JOB = "finalize_dataset"
#: Unpartitioned assets that summarise every shard, so they run after the shards.
_FINAL = [dataset.dataset_manifest.key, dataset.dataset_exports.key]

all_assets = load_assets_from_modules([poses, optimization, rendering, dataset])
all_checks = load_asset_checks_from_modules([pose_checks, optimization_checks, rendering_checks])

_partitioned = [a.key for a in all_assets if a.partitions_def is not None]
_unpartitioned = [a.key for a in all_assets if a.partitions_def is None and a.key not in _FINAL]

prepare_sources = define_asset_job(
    UNPARTITIONED_JOB, selection=AssetSelection.assets(*_unpartitioned),
    description="Unpartitioned assets: raw and deduped poses, anchors, discriminator, environment maps.")
generate_shard = define_asset_job(
    PARTITIONED_JOB, selection=AssetSelection.assets(*_partitioned), partitions_def=pose_shards,
    description="Everything per pose shard: augment, optimize, render, annotate.")

finalize_dataset = define_asset_job(
    FINAL_JOB, selection=AssetSelection.assets(*_FINAL),
    description="Dataset-level outputs over all shards: the manifest and the exports.")

defs = Definitions(
    executor=k8s_executor() if os.environ.get("IH_ENV") == "cluster" else None,
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[prepare_sources, generate_shard, finalize_dataset],
    schedules=[nightly_shard_backfill],
    sensors=[new_interhand_files, new_library_files],
    resources=resources_for(),
)
