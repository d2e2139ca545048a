"""Pipeline sizes and knobs, with named presets: ``test``, ``demo`` (default) and ``paper``.

One resource carries every size so that a run's configuration is one record, stored in the
dataset manifest. Presets are starting points; any field can be overridden in the Dagster
launchpad or through ``IH_<FIELD>`` environment variables (see :func:`settings_from_env`).
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args, get_origin

from dagster import ConfigurableResource
from pydantic import Field, ValidationError

PRESETS: dict[str, dict[str, Any]] = {
    # seconds: for asset tests with in-memory IO managers
    "test": dict(n_procedural_poses=8, dedup_threshold_mm=5.0, shard_size=4, n_augmentations=2,
                 optimize_iterations=20, optimize_batch_size=16, n_views=2, image_size=128,
                 n_anchors_per_hand=60, discriminator_epochs=3, n_environment_maps=2,
                 renderer="raster", render_samples=4, denoise=False, accessory_share=0.0),
    # minutes on a 2-core laptop; >= 100 annotated images end to end, photoreal (Cycles) RGB
    # (Cycles costs ~1-3 s per image on 2 cores: fewer, larger shards and 4 views keep the job short)
    "demo": dict(n_procedural_poses=24, dedup_threshold_mm=5.0, shard_size=12, n_augmentations=2,
                 optimize_iterations=215, optimize_batch_size=64, n_views=4, image_size=256,
                 n_anchors_per_hand=100, discriminator_epochs=15, n_environment_maps=4,
                 renderer="cycles", render_samples=8, denoise=True),
    # RenderIH: 3,680 distinct poses x 30 augmentations x 10 views
    "paper": dict(n_procedural_poses=60000, dedup_threshold_mm=12.0, shard_size=50, n_augmentations=30,
                  optimize_iterations=215, optimize_batch_size=256, n_views=10, image_size=256,
                  n_anchors_per_hand=100, discriminator_epochs=40, n_environment_maps=16,
                  renderer="cycles", render_samples=256, denoise=True),
}


#: Largest square image side: one 8192² view already needs ~1 GB for colour, labels and depth.
MAX_IMAGE_SIZE = 8192


class PipelineSettings(ConfigurableResource):
    """Sizes of every stage. Defaults are the ``demo`` preset.

    Every field carries its valid range (``ge``/``le``): a value outside it is refused when the
    resource is built, naming the field, instead of producing an empty "successful" dataset or
    failing after hours of optimization. ``n_augmentations`` must be >= 1 because the augmented
    copies are the only poses that go on (0 would leave every later stage empty).
    """

    preset: Literal["test", "demo", "paper", "custom"] = Field(
        default="demo", description="The preset the sizes start from; manifests record 'custom' when a field differs.")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Root seed; every random choice derives from it and the pose id.")
    n_procedural_poses: int = Field(default=PRESETS["demo"]["n_procedural_poses"], ge=1, le=10_000_000,
                                    description="Raw poses from the generator.")
    dedup_threshold_mm: float = Field(default=PRESETS["demo"]["dedup_threshold_mm"], ge=0.0, le=1000.0,
                                      allow_inf_nan=False, description="Poses closer than this are duplicates.")
    shard_size: int = Field(default=PRESETS["demo"]["shard_size"], ge=1, le=100_000,
                            description="Distinct poses per partition (shard).")
    n_augmentations: int = Field(default=PRESETS["demo"]["n_augmentations"], ge=1, le=1000,
                                 description="Augmentations per distinct pose (paper: 30).")
    optimize_iterations: int = Field(default=PRESETS["demo"]["optimize_iterations"], ge=0, le=100_000,
                                     description="Optimizer iterations (paper: 215).")
    optimize_schedule: Literal["renderih", "reference"] = Field(default="renderih", description="Loss-weight schedule preset.")
    optimize_batch_size: int = Field(default=PRESETS["demo"]["optimize_batch_size"], ge=1, le=65_536,
                                     description="Poses optimized together.")
    n_views: int = Field(default=PRESETS["demo"]["n_views"], ge=1, le=1000, description="Camera views per kept pose (paper: 10).")
    image_size: int = Field(default=PRESETS["demo"]["image_size"], ge=16, le=MAX_IMAGE_SIZE,
                            description="Square image side in pixels.")
    n_anchors_per_hand: int = Field(default=PRESETS["demo"]["n_anchors_per_hand"], ge=1, le=778,
                                    description="Contact anchors per hand (of MANO's 778 vertices).")
    discriminator_epochs: int = Field(default=PRESETS["demo"]["discriminator_epochs"], ge=1, le=10_000,
                                      description="Training epochs.")
    n_environment_maps: int = Field(default=PRESETS["demo"]["n_environment_maps"], ge=1, le=1024,
                                    description="Procedural HDR maps, only when the npm HDRIs are unavailable.")
    renderer: Literal["cycles", "raster"] = Field(default=PRESETS["demo"]["renderer"], description="RGB backend: Blender Cycles (photoreal) or pyrender (fast preview); labels/depth are always raster.")
    render_samples: int = Field(default=PRESETS["demo"]["render_samples"], ge=1, le=65_536, description="Cycles path samples per pixel (paper preset: production 256).")
    denoise: bool = Field(default=PRESETS["demo"]["denoise"], description="Cycles OpenImageDenoise (prefilter FAST, quality BALANCED).")
    render_device: Literal["auto", "cpu", "cuda", "optix"] = Field(default="auto", description="Cycles device; 'auto' follows IH_DEVICE (torch's) when set, else any GPU found; a missing GPU falls back to CPU (logged, recorded).")
    render_workers: int = Field(default=0, ge=0, le=1024, description="Render worker processes per render step, each with its own Blender; 0: one per visible NVIDIA GPU, else max(1, cores // 2). Changes speed, never images.")
    depth_of_field: bool = Field(default=True, description="Thin-lens depth of field per view, focused on the hands: "
                                 "focal length 4-50 mm and f/1.8-11 drawn per view (phone to interchangeable lens); "
                                 "Cycles blurs the hands, the composited background gets the same lens's disc; labels "
                                 "stay sharp. Recorded per image (lens_* columns). Off: a pinhole (RenderIH's look).")
    camera_effects: bool = Field(default=True, description="Seeded sensor and processing effects per view: exposure "
                                 "error, vignetting, slight motion blur, shot and read noise, white-balance error, JPEG "
                                 "quality 70-95 (ranges of real cameras: handsynth.render.camera_effects). Geometry-"
                                 "preserving: labels, depth and keypoints unchanged. Recorded per image (effect_* "
                                 "columns). Off: the clean render (RenderIH's look).")
    forearms: bool = Field(default=True, description="Hands continue into forearms leaving the frame (labels 33 right, 34 left), elbows drawn per pose; off: RenderIH's own look, hands ending at the wrist.")
    sleeve_share: float = Field(default=0.25, ge=0.0, le=1.0, allow_inf_nan=False, description="Share of poses whose forearms wear sleeves (one garment, cuffs 6-12 cm from the wrists, cloth textures; labels 35 right, 36 left); needs forearms.")
    accessory_share: float = Field(default=0.2, ge=0.0, le=1.0, allow_inf_nan=False, description="Share of hands wearing a wrist piece (a watch, or a bracelet: band or beads; labels 37 right, 38 left) and, drawn apart, of hands wearing a ring (labels 39 right, 40 left), fitted around the posed hand; needs forearms. The test preset: 0.")
    environment_dir: str = Field(default="", description="Folder of your own .hdr/.exr maps (e.g. Poly Haven 2K/4K) copied into the library; empty: the npm Poly Haven set.")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PipelineSettings":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(preset=name, **{**PRESETS[name], **overrides})

    def overridden(self) -> list[str]:
        """Fields whose value differs from the preset's (set in the launchpad or by ``IH_<FIELD>``)."""
        base = PRESETS.get(self.preset, {})
        return sorted(k for k, v in base.items() if getattr(self, k) != v)

    def record(self) -> dict[str, Any]:
        """The settings as a plain dict, for manifests and asset metadata.

        ``preset`` is recorded as ``"custom"`` when any size differs from the named preset, so a
        manifest never claims ``"test"`` for a run with other sizes; ``base_preset`` and
        ``overridden`` say where the sizes started and what changed.
        """
        out = self.model_dump() if hasattr(self, "model_dump") else dict(self)
        changed = self.overridden()
        out.update(preset="custom" if changed else self.preset, base_preset=self.preset, overridden=changed)
        return out


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def allowed_values(name: str) -> str:
    """What field ``name`` accepts, in words, from its type and declared range (for error messages)."""
    field = PipelineSettings.model_fields[name]
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(field.annotation))
    if field.annotation is bool:
        return "true or false (also 1/0, yes/no)"
    bounds = {attr: getattr(m, attr) for m in field.metadata for attr in ("ge", "gt", "le", "lt") if hasattr(m, attr)}
    kind = {int: "an integer", float: "a finite number"}.get(field.annotation, "text")
    low = f"{bounds['ge']}" if "ge" in bounds else f"above {bounds['gt']}" if "gt" in bounds else None
    high = f"{bounds['le']}" if "le" in bounds else f"below {bounds['lt']}" if "lt" in bounds else None
    return f"{kind} from {low} to {high}" if low is not None and high is not None else kind


def settings_from_env(environ: dict[str, str] | None = None) -> PipelineSettings:
    """``IH_PRESET`` picks the preset; ``IH_<FIELD>`` (e.g. ``IH_N_VIEWS=4``) overrides one field.

    A refused value is one ``ValueError`` line per run naming each variable, its value, what is
    wrong and what is allowed (the command line prints it without a traceback)."""
    env = dict(os.environ if environ is None else environ)
    preset = env.get("IH_PRESET", "demo")
    if preset not in PRESETS:
        raise ValueError(f"IH_PRESET={preset!r}: unknown preset; allowed: one of {', '.join(map(repr, sorted(PRESETS)))}")
    overrides: dict[str, Any] = {}
    problems = []
    for name, field in PipelineSettings.model_fields.items():
        raw = env.get(f"IH_{name.upper()}")
        if raw is None or name == "preset":
            continue
        if field.annotation is bool:
            if raw.lower() not in _TRUE + _FALSE:
                problems.append(f"IH_{name.upper()}={raw!r}: not a truth value; allowed: {allowed_values(name)}")
            overrides[name] = raw.lower() in _TRUE
        elif field.annotation in (int, float):
            try:
                overrides[name] = field.annotation(raw)
            except ValueError:
                problems.append(f"IH_{name.upper()}={raw!r}: not {'an integer' if field.annotation is int else 'a number'}; "
                                f"allowed: {allowed_values(name)}")
        else:
            overrides[name] = raw
    if not problems:
        try:
            return PipelineSettings.from_preset(preset, **overrides)
        except ValidationError as exc:
            problems = [f"IH_{str(e['loc'][0]).upper()}={e.get('input')!r}: {e['msg']}; allowed: {allowed_values(str(e['loc'][0]))}"
                        for e in exc.errors()]
    raise ValueError(f"invalid pipeline settings (preset {preset!r}): {'; '.join(problems)}")
