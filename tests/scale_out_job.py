"""A reconstructable job for the scale-out test: worker processes import it by module path."""

import os

from dagster import Definitions, define_asset_job, in_process_executor
from dagster_dask import dask_executor

from ih_assets.optimization import hand_anchors
from ih_assets.poses import deduped_poses, raw_poses
from ih_assets.rendering import environment_maps
from resources.hand_model import HandModelResource
from resources.settings import PipelineSettings
from resources.sources import PoseSourceResource
from resources.storage import LocalStorage, io_manager_for

ASSETS = [raw_poses, deduped_poses, hand_anchors, environment_maps]


def _job(executor):
    """The source chain on ``executor``, storing into the folder IH_LOCAL_ROOT."""
    storage = LocalStorage(root_dir=os.environ["IH_LOCAL_ROOT"], prefix="renderih")
    defs = Definitions(
        assets=ASSETS,
        jobs=[define_asset_job("source_chain", executor_def=executor)],
        resources={"settings": PipelineSettings.from_preset("test", n_procedural_poses=12),
                   "hand_model": HandModelResource(), "pose_source": PoseSourceResource(),
                   "storage": storage, "io_manager": io_manager_for(storage)},
    )
    return defs.resolve_job_def("source_chain")


def dask_job():
    return _job(dask_executor)


def single_process_job():
    return _job(in_process_executor)
