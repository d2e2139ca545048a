"""Resources per deployment, chosen in one place by ``IH_ENV`` (local | cluster | test).

- ``local`` (default): generated stand-in hand, procedural poses, the SeaweedFS server on loopback
  that ``scripts/run_pipeline.sh`` starts (``IH_S3_ENDPOINT``, default http://127.0.0.1:8333, with
  anonymous access unless ``AWS_ACCESS_KEY_ID`` is set), CPU; or, with ``IH_LOCAL_ROOT``, a local
  folder instead of S3 (no server).
- ``cluster``: everything from the environment: S3 endpoint (empty = AWS) and credentials,
  ``IH_MANO_DIR`` for real MANO files, ``IH_INTERHAND_MANO_FILES`` (comma-separated paths or
  s3:// URIs) for InterHand2.6M, ``IH_DEVICE`` (e.g. cuda).
- ``test``: in-memory storage; for asset tests.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar

from handsynth.storage import DEFAULT_BUCKET, DEFAULT_PREFIX, S3Settings
from resources.hand_model import HandModelResource
from resources.settings import settings_from_env
from resources.sources import PoseSourceResource
from resources.storage import LocalStorage, MemoryStorage, S3Storage, StorageResource, io_manager_for


def storage_for(environment: str) -> StorageResource:
    """The storage of ``environment``; S3 with the same defaults as ``handsynth.storage.open_store``
    (the command line and the training reader), so what the pipeline writes they can read."""
    env = os.environ
    prefix = env.get("IH_S3_PREFIX", DEFAULT_PREFIX)
    if environment == "test":
        return MemoryStorage(name=env.get("IH_MEMORY_STORE", "default"), prefix=prefix)
    if environment == "local" and env.get("IH_LOCAL_ROOT"):
        return LocalStorage(root_dir=env["IH_LOCAL_ROOT"], prefix=prefix)
    s3 = S3Settings.from_env(env, environment)
    given = s3.key is not None  # passed as EnvVar, so the values never enter Dagster's config
    return S3Storage(
        endpoint_url=s3.endpoint_url,
        bucket=env.get("IH_S3_BUCKET", DEFAULT_BUCKET),
        prefix=prefix,
        region_name=s3.region_name,
        addressing_style=s3.addressing_style,
        use_unsigned_session=s3.anonymous,
        aws_access_key_id=EnvVar("AWS_ACCESS_KEY_ID") if given else None,
        aws_secret_access_key=EnvVar("AWS_SECRET_ACCESS_KEY") if given else None,
        aws_session_token=EnvVar("AWS_SESSION_TOKEN") if given and s3.token is not None else None,
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
