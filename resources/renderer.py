"""Which renderer makes the RGB, on which device, with how many workers.

``IH_RENDERER`` (cycles | raster) and ``IH_RENDER_DEVICE`` (auto | cpu | cuda | optix) through the
settings resource; ``auto`` follows ``IH_DEVICE`` (the torch device, e.g. ``cuda:0``) when set.
Resolved once per run and recorded. Without a Blender environment the ``cycles`` choice falls back
to ``raster`` with a warning (the manifest rows then say ``raster``), so a machine without bpy
still produces a dataset.

``IH_RENDER_WORKERS`` render processes share one render step (each with its own Blender); 0 picks
one per visible NVIDIA GPU, else half the cores (a Cycles CPU render and the raster pass beside
it keep about two cores busy). Each worker's Cycles gets ``cores // workers`` threads. The same
figure sizes the cluster: ``deploy/k8s/run_config.yaml`` gives the render step as many GPUs as
it sets ``IH_RENDER_WORKERS`` to.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from handsynth.render import RenderOptions
from handsynth.render.cycles import cycles_available
from resources.settings import PipelineSettings

log = logging.getLogger(__name__)


def render_options(settings: PipelineSettings, log_fn=log.warning) -> RenderOptions:
    """The backend and device the settings ask for, or raster when Cycles cannot run here."""
    backend = settings.renderer
    if backend == "cycles":
        ok, why = cycles_available()
        if not ok:
            log_fn(f"renderer 'cycles' unavailable ({why}): rendering RGB with 'raster' instead")
            backend = "raster"
    device = settings.render_device
    if device == "auto" and os.environ.get("IH_DEVICE"):
        device = "cuda" if os.environ["IH_DEVICE"].startswith("cuda") else "cpu"
    return RenderOptions(backend=backend, samples=settings.render_samples, denoise=settings.denoise,
                         device=device, subdivision=1 if backend == "cycles" else 0)


def visible_gpus(environ: dict[str, str] | None = None, dev: Path = Path("/dev")) -> list[str]:
    """Ids of the NVIDIA GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set (empty or
    ``-1``: none), else one per ``/dev/nvidiaN`` node (a container sees only the GPUs it was given)."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
        return [] if ids[:1] == ["-1"] else ids
    nodes = [p.name for p in dev.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)] if dev.is_dir() else []
    return sorted((n.removeprefix("nvidia") for n in nodes), key=int)


def cpu_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    Kubernetes CPU limit) when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def render_workers(settings: PipelineSettings, gpus: list[str] | None = None, cores: int | None = None) -> int:
    """Worker processes per render step: ``settings.render_workers``, or from the devices."""
    if settings.render_workers:
        return settings.render_workers
    gpus = visible_gpus() if gpus is None else gpus
    return len(gpus) if gpus else max(1, (cpu_cores() if cores is None else cores) // 2)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """CPU threads for each worker's renderer, so that the workers together fill the cores."""
    return max(1, (cpu_cores() if cores is None else cores) // max(1, workers))
