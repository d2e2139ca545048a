"""Rendering backends behind one interface: ``raster`` (pyrender: exact labels, depth, visibility,
fast preview) and ``cycles`` (Blender Cycles: the photoreal RGB).

A backend takes a :class:`SceneSpec` (posed hands, camera, environment map with its rotation and
exposure, skin material) and a seed and returns :class:`RenderedRGB`. Labels, depth and keypoint
visibility always come from the raster pass of the same camera, whose pixel convention (integer
pixel coordinates are pixel centres, docs/ARCHITECTURE.md) the Cycles camera reproduces, so they
align with either RGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

BACKENDS = ("cycles", "raster")


@dataclass(frozen=True)
class RenderOptions:
    """Which backend makes the RGB and how; recorded with every image."""

    backend: str = "raster"       # one of BACKENDS
    samples: int = 16             # Cycles path samples per pixel
    denoise: bool = True          # Cycles: OpenImageDenoise (prefilter FAST, quality BALANCED)
    device: str = "auto"          # Cycles: auto | cpu | cuda | optix
    subdivision: int = 0          # Loop subdivision steps of the hand meshes, for BOTH passes (smooth
                                  # silhouettes in the photo and labels of the very same surface)
    threads: int = 0              # Cycles threads per worker (0: every core); several workers on one
                                  # machine share its cores. Outputs do not depend on it (tested)
    noise_threshold: float = 0.01  # Cycles adaptive sampling: a pixel stops once its noise estimate is
                                   # below this (Cycles' default), after at least 64 samples (Cycles'
                                   # automatic minimum at 0.01: inert at the demo's 8, active at the
                                   # paper's 256); 0 renders every pixel at ``samples``

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"renderer {self.backend!r}: choose one of {BACKENDS}")
        if self.samples < 1:
            raise ValueError(f"render samples must be >= 1, got {self.samples}")
        if self.threads < 0:
            raise ValueError(f"render threads must be >= 0 (0: every core), got {self.threads}")
        if not 0.0 <= self.noise_threshold < 1.0:
            raise ValueError(f"noise threshold must be in [0, 1), got {self.noise_threshold}")


@dataclass
class SceneSpec:
    hands: list[Any]              # handsynth.render.raster.HandMesh per hand (vertices, faces, colours)
    camera: Any                   # handsynth.cameras.Camera
    env_name: str
    env: np.ndarray               # (H, W, 3) linear equirectangular radiance
    env_rotation: float           # radians about world up
    exposure: float               # scale of linear radiance before the tone curve
    material: dict[str, Any] = field(default_factory=dict)
    lens: Any = None              # handsynth.render.depth_of_field.DepthOfField; None: a pinhole


@dataclass
class RenderedRGB:
    rgb: np.ndarray               # (H, W, 3) uint8
    alpha: np.ndarray             # (H, W) float32 coverage of the hands

