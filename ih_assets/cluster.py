"""Execution on Kubernetes (``IH_ENV=cluster``): every step in its own Job, as
``deploy/k8s/run_config.yaml`` configures it (GPU nodes for the optimize and render steps, the
Blender image and one GPU per render worker for rendered_views).

The executor is configured in code from that file, so every run a backfill, schedule or sensor
launches gets the per-step resources without run config pasted into the launchpad. The image sets
``IH_K8S_RUN_CONFIG`` to where it copied the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from dagster import ExecutorDefinition

RUN_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "run_config.yaml"


def k8s_executor(path: str | os.PathLike | None = None) -> ExecutorDefinition:
    """dagster-k8s' ``k8s_job_executor`` with the ``execution.config`` of the cluster run config."""
    from dagster_k8s import k8s_job_executor

    source = Path(path or os.environ.get("IH_K8S_RUN_CONFIG", RUN_CONFIG))
    return k8s_job_executor.configured(yaml.safe_load(source.read_text())["execution"]["config"], name="k8s")
