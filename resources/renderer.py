"""Which renderer makes the RGB, on which device: ``IH_RENDERER`` (cycles | raster) and
``IH_RENDER_DEVICE`` (auto | cpu | cuda | optix) through the settings resource; ``auto`` follows
``IH_DEVICE`` (the torch device, e.g. ``cuda:0``) when set. Resolved once per run and recorded.

Without a Blender environment the ``cycles`` choice falls back to ``raster`` with a warning (the
manifest rows then say ``raster``), so a machine without bpy still produces a dataset.
"""

from __future__ import annotations

import logging
import os

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
