"""Resources per deployment, chosen in one place by ``IH_ENV`` (local | cluster | test).

- ``local`` (default): generated stand-in hand, procedural poses, the SeaweedFS server on loopback
  that ``scripts/run_pipeline.sh`` starts (``IH_S3_ENDPOINT``, default http://127.0.0.1:8333), CPU.
- ``cluster``: everything from the environment: S3 endpoint (empty = AWS) and credentials,
  ``IH_MANO_DIR`` for real MANO files, ``IH_INTERHAND_MANO_FILES`` (comma-separated paths or
  s3:// URIs) for InterHand2.6M, ``IH_DEVICE`` (e.g. cuda).
- ``test``: in-memory storage; for asset tests.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar

from resources.hand_model import HandModelResource
from resources.settings import settings_from_env
from resources.sources import PoseSourceResource
from resources.storage import MemoryStorage, S3Storage, StorageResource, io_manager_for


def storage_for(environment: str) -> StorageResource:
    env = os.environ
    if environment == "test":
        return MemoryStorage(name=env.get("IH_MEMORY_STORE", "default"), prefix="renderih")
    endpoint = env.get("IH_S3_ENDPOINT", "http://127.0.0.1:8333" if environment == "local" else "")
    return S3Storage(
        endpoint_url=endpoint or None,
        bucket=env.get("IH_S3_BUCKET", "renderih"),
        prefix=env.get("IH_S3_PREFIX", "renderih"),
        region_name=env.get("AWS_REGION", "us-east-1"),
        addressing_style="path" if endpoint else "auto",
        # SeaweedFS without an identities file accepts any key; real endpoints read the environment
        aws_access_key_id=EnvVar("AWS_ACCESS_KEY_ID") if "AWS_ACCESS_KEY_ID" in env else "local",
        aws_secret_access_key=EnvVar("AWS_SECRET_ACCESS_KEY") if "AWS_SECRET_ACCESS_KEY" in env else "local",
    )


def resources_for(environment: str | None = None) -> dict[str, Any]:
    """Every resource the assets need, for ``environment`` (default: ``IH_ENV`` or ``local``)."""
    environment = environment or os.environ.get("IH_ENV", "local")
    if environment not in ("local", "cluster", "test"):
        raise ValueError(f"IH_ENV={environment!r}: choose local, cluster or test")
    env = os.environ
    storage = storage_for(environment)
    mano_dir = env.get("IH_MANO_DIR", "")
    interhand_files = [f for f in env.get("IH_INTERHAND_MANO_FILES", "").split(",") if f]
    watch = env.get("IH_INTERHAND_WATCH_PREFIX", "")
    return {
        "settings": settings_from_env(),
        "storage": storage,
        "io_manager": io_manager_for(storage),
        "hand_model": HandModelResource(source="mano" if mano_dir else "standin", mano_folder=mano_dir,
                                        device=env.get("IH_DEVICE", "cpu")),
        "pose_source": PoseSourceResource(
            kind="interhand" if interhand_files or watch else "procedural",
            interhand_mano_files=interhand_files, interhand_prefix=watch,
            s3=storage if isinstance(storage, S3Storage) else None),
    }
