"""Thin-lens depth of field focused on the hands: aperture, focus distance, background blur.

A camera focused on hands about a metre away blurs the far background into discs (the circle of
confusion); a pinhole render keeps it as sharp as the environment map allows, which at the
map's 0.7 degrees per texel is not sharp at all, only blocky. Here a lens is drawn per image
(physical focal length and f-number, hence the aperture diameter A = f / N), focused at the
hands' centre (distance s along the optical axis), and the environment is blurred by the disc
it implies. For a pinhole camera of focal length ``f_px`` pixels (K), the thin lens images a
point at depth d as a disc of diameter

    c_px = f_px * A * |1/s - 1/d|,      -> f_px * A / s for the far environment (d -> inf),

independent of the sensor size (``f_px`` already is the image distance in pixels). Typical
values at 256 px, f_px ~ 740, s ~ 1 m: a phone (f ~ 5 mm, N ~ 1.8, A ~ 3 mm) ~2 px; a
machine-vision camera (f 12-25 mm, N 4-8) 1.5-5 px; a 50 mm lens at f/2 (A = 25 mm) ~18 px.

:func:`cycles_dof` gives the Blender camera settings of the same lens, so that Cycles blurs the
hands (a little: they are within ~10 cm of the focus plane) as the background is blurred here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import signal

from handsynth.cameras import Camera


@dataclass(frozen=True)
class DepthOfFieldRanges:
    """How often a lens blurs (``share``) and its physical focal length and f-number, both drawn
    log-uniformly: from phone and webcam modules (4-6 mm at f/1.5-2.4) through machine-vision
    lenses (8-25 mm at f/2.8-8) to interchangeable-lens cameras (35-50 mm at f/1.8-11)."""

    share: float = 1.0
    focal_length_mm: tuple[float, float] = (4.0, 50.0)
    f_number: tuple[float, float] = (1.8, 11.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"depth of field: share must be in [0, 1], got {self.share}")
        for name in ("focal_length_mm", "f_number"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(f"depth of field: {name} must be a positive (low, high) range, got {(low, high)}")


@dataclass(frozen=True)
class DepthOfField:
    """One image's lens; ``f_number == 0`` is a pinhole (no blur anywhere)."""

    focal_length_mm: float = 0.0
    f_number: float = 0.0
    focus_distance_m: float = 1.0          # along the optical axis to the hands' centre
    background_blur_px: float = 0.0        # circle of confusion of the far environment (diameter)

    @property
    def aperture_mm(self) -> float:
        """Entrance pupil diameter A = f / N (0 for a pinhole)."""
        return self.focal_length_mm / self.f_number if self.f_number > 0 else 0.0

    def blur_px(self, focal_px: float, depth_m: float) -> float:
        """Circle of confusion (px) of a point at ``depth_m`` along the axis."""
        return circle_of_confusion_px(focal_px, self.aperture_mm * 1e-3, self.focus_distance_m, depth_m)

    def to_record(self) -> dict:
        """Plain JSON numbers, as stored with the image's row."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict, where: str = "depth of field record") -> "DepthOfField":
        names = [f.name for f in fields(cls)]
        if sorted(record) != sorted(names):
            raise ValueError(f"{where}: fields {sorted(record)}, expected {sorted(names)}")
        for name in names:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{where}: {name} must be a finite number >= 0, got {value!r}")
        if record["focus_distance_m"] <= 0:
            raise ValueError(f"{where}: focus_distance_m must be positive, got {record['focus_distance_m']!r}")
        return cls(**{name: float(record[name]) for name in names})


def circle_of_confusion_px(focal_px: float, aperture_m: float, focus_m: float, depth_m: float = math.inf) -> float:
    """Thin-lens blur disc diameter in pixels: ``focal_px * A * |1/s - 1/d|``."""
    inverse_depth = 0.0 if math.isinf(depth_m) else 1.0 / depth_m
    return float(focal_px * aperture_m * abs(1.0 / focus_m - inverse_depth))


def focus_distance(camera: Camera, point: np.ndarray) -> float:
    """Depth of a world point along the camera's optical axis (the focus plane is perpendicular to it)."""
    return float(camera.R[2] @ np.asarray(point, dtype=np.float64) + camera.t[2])


def sample_depth_of_field(rng: np.random.Generator, camera: Camera, focus_point: np.ndarray,
                          ranges: DepthOfFieldRanges = DepthOfFieldRanges()) -> DepthOfField:
    """A lens focused on ``focus_point`` (the hands' centre). Three values are drawn whatever the
    share, so the share changes nothing else drawn from ``rng`` after it."""
    on = rng.uniform() < ranges.share
    focal_mm = float(np.exp(rng.uniform(*np.log(ranges.focal_length_mm))))
    f_number = float(np.exp(rng.uniform(*np.log(ranges.f_number))))
    s = focus_distance(camera, focus_point)
    if s <= 0:
        raise ValueError(f"focus point is behind the camera (depth {s:.3f} m)")
    if not on:
        return DepthOfField(focus_distance_m=s)
    aperture_m = focal_mm / f_number * 1e-3
    return DepthOfField(focal_mm, f_number, s, circle_of_confusion_px(float(camera.K[0, 0]), aperture_m, s))


def cycles_dof(camera: Camera, dof: DepthOfField) -> dict[str, object]:
    """Blender camera-data settings (attribute paths) for the same thin lens. Blender's aperture
    diameter is ``lens / aperture_fstop`` with ``lens`` in mm derived from a 36 mm sensor width
    (:func:`handsynth.render.cycles_worker.camera_lens`), so its f-stop is that lens over the
    physical aperture diameter, not the physical f-number."""
    from handsynth.render.cycles_worker import SENSOR_WIDTH_MM, camera_lens

    lens = camera_lens(camera.K, camera.width, camera.height)["lens"]
    if dof.f_number <= 0:
        return {"dof.use_dof": False}
    return {"dof.use_dof": True, "dof.focus_distance": dof.focus_distance_m, "dof.aperture_fstop": lens / dof.aperture_mm,
            "dof.aperture_blades": 0, "sensor_width": SENSOR_WIDTH_MM, "lens": lens}


def disc_kernel(diameter_px: float) -> np.ndarray:
    """A normalised disc (a round aperture's blur) of ``diameter_px``, its edge pixels weighted by
    the area they cover (8 x 8 sub-samples); odd size, centred; a delta below 1/8 px."""
    radius = diameter_px / 2.0
    half = int(math.ceil(radius - 0.5)) if radius > 0.5 else 0
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    offsets = np.arange(-half, half + 1)
    x = (offsets[:, None] + sub[None, :]).ravel()
    inside = (x[:, None] ** 2 + x[None, :] ** 2) <= radius**2
    kernel = inside.reshape(2 * half + 1, 8, 2 * half + 1, 8).mean(axis=(1, 3))
    if kernel.sum() == 0:
        kernel[half, half] = 1.0
    return kernel / kernel.sum()


def defocus(image: np.ndarray, diameter_px: float) -> np.ndarray:
    """(H, W, C) linear image convolved with :func:`disc_kernel` (``valid`` region only: the
    caller renders a margin of ``margin_px(diameter_px)`` pixels around what it keeps)."""
    kernel = disc_kernel(diameter_px)
    return np.stack([signal.fftconvolve(image[..., c], kernel, mode="valid") for c in range(image.shape[-1])], axis=-1)


def margin_px(diameter_px: float) -> int:
    """Pixels a blur of ``diameter_px`` reads beyond each side of the image."""
    return disc_kernel(diameter_px).shape[0] // 2
