"""Camera and sensor effects: a seeded, recorded post-process that makes renders look photographed.

A rendered image is too clean: no sensor noise, no compression, no motion blur, white balance
and exposure always right. :func:`sample_effects` draws one camera's imperfections from ranges
taken from real cameras; :func:`apply_effects` applies them to an image in the order a camera
does (optics, then the sensor, then the image processor, then the encoder):

1. exposure error (auto-exposure misses by a fraction of a stop),
2. vignetting (cos^4-like falloff around an optical centre that need not be the crop's centre),
3. motion blur (a centred line kernel: the hand moving during the shutter time),
4. shot and read noise (photo-electron counts, in scene-linear units),
5. white-balance error (the camera assumes a slightly wrong illuminant: kelvin and tint),
6. the project's tone curve (:func:`handsynth.envmaps.tone_map`) to 8 bit,
7. JPEG compression (encode and decode at the drawn quality).

Every effect is geometry-preserving: nothing moves, warps or crops pixels, the blur kernel is
symmetric about its centre, so labels, depth and keypoints stay valid for the processed image.
Every effect has a share (how often it is on) and ranges in :class:`CameraEffectRanges`; all
values are always drawn (an effect that is off is recorded as its neutral value), so turning one
effect off leaves the others' values unchanged. :class:`CameraEffects` records as plain JSON and
the same record gives identical bytes (the noise has its own recorded seed).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage

from handsynth.envmaps import tone_map

#: Scene-linear radiance is mapped to pixels by the project's tone curve (Reinhard x/(1+x), then
#: gamma 1/2.2): an 8-bit image is brought back to linear by its inverse, exact on the 256 codes.
GAMMA = 2.2
#: Kelvin of the illuminant the renders are balanced for (sRGB's white, D65 ~ 6504 K).
REFERENCE_KELVIN = 6504.0
_LUMINANCE = np.array([0.2126, 0.7152, 0.0722])
#: CIE XYZ -> linear sRGB (IEC 61966-2-1).
_XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


@dataclass(frozen=True)
class CameraEffectRanges:
    """How often each effect is on (``*_share`` in [0, 1]) and the range it is drawn from.

    Sources (order of magnitude; the figures are the commonly published ones, not measured here):

    * Exposure: auto-exposure of phones and webcams usually lands within about +-0.5 EV of a
      mid-grey metering target; backlit hands go further.
    * Vignetting: the cos^4 law alone darkens the corner of a 256 px crop at 740 px focal length
      by ~0.17 EV; fast lenses wide open add mechanical vignetting (1-2 EV at a full frame's
      corner), phones correct most of it (lens-shading correction) and leave a few tenths of an EV.
    * Motion blur: a hand held still or gesturing slowly moves 0.02-0.3 m/s; shutter times of
      1/250-1/60 s (indoor auto-exposure) give 0.1-5 mm of travel, i.e. up to a few pixels at
      the ~700 px per metre of a 256 px crop of hands 1 m away.
    * Noise: consumer sensors collect a few thousand photo-electrons per pixel at saturation at
      base ISO (full well ~4,000-10,000 e- for 1-1.5 um phone pixels) and a few hundred at
      ISO 800-1600, with 1.5-4 e- of read noise (EMVA 1288 data sheets; R. N. Clark's sensor
      summaries). ``electrons_per_unit`` is the electron count at scene-linear 1.0 (a bright skin
      tone, ~73% of 8-bit white after the tone curve), after the crop's resampling; the range
      leaves out the noisiest few hundred electrons, as phones denoise before saving.
    * White balance: camera AWB errs by a few degrees of RGB angle (colour-constancy benchmarks,
      e.g. the NUS 8-camera set, report medians of ~2-4 degrees); 10 mired is ~2.3 degrees here.
    * JPEG: webcams' MJPEG streams sit at the low end of quality 70-95, phones at the high end.
    """

    exposure_share: float = 1.0
    exposure_ev: tuple[float, float] = (-0.5, 0.5)
    vignetting_share: float = 0.7
    vignetting_ev: tuple[float, float] = (0.05, 0.6)       # darkening at the crop's corner
    vignetting_centre: tuple[float, float] = (-0.5, 0.5)   # optical centre offset, in crop sizes
    motion_blur_share: float = 0.5
    hand_speed_m_s: tuple[float, float] = (0.02, 0.3)
    shutter_s: tuple[float, float] = (1 / 250, 1 / 60)
    noise_share: float = 0.9
    electrons_per_unit: tuple[float, float] = (300.0, 8000.0)   # drawn log-uniformly
    read_noise_e: tuple[float, float] = (1.5, 4.0)
    white_balance_share: float = 0.9
    white_balance_mired_sd: float = 12.0                  # normal, clipped at 2.5 sd
    white_balance_tint_sd: float = 0.015                  # green (+) / magenta (-) gain, normal, clipped
    jpeg_share: float = 0.8
    jpeg_quality: tuple[int, int] = (70, 95)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_share") and not 0.0 <= value <= 1.0:
                raise ValueError(f"camera effects: {f.name} must be in [0, 1], got {value}")
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"camera effects: {f.name} must be a (low, high) range, got {value}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"camera effects: jpeg_quality must lie in 1..100, got {self.jpeg_quality}")
        if self.electrons_per_unit[0] <= 0 or self.shutter_s[0] <= 0 or self.hand_speed_m_s[0] < 0:
            raise ValueError("camera effects: electrons_per_unit, shutter_s must be positive, hand_speed_m_s >= 0")

    @classmethod
    def off(cls) -> "CameraEffectRanges":
        """Every share 0: the clean render (the tone curve only)."""
        return cls(exposure_share=0.0, vignetting_share=0.0, motion_blur_share=0.0, noise_share=0.0,
                   white_balance_share=0.0, jpeg_share=0.0)


@dataclass(frozen=True)
class CameraEffects:
    """One image's effects; each at its neutral value when off (0 EV, no blur, no noise, no JPEG)."""

    exposure_ev: float = 0.0
    vignetting_ev: float = 0.0
    vignetting_centre: tuple[float, float] = (0.0, 0.0)   # offset from the image centre, in image sizes (x, y)
    motion_blur_px: float = 0.0                           # length of the blur path
    motion_blur_angle_deg: float = 0.0                    # direction of the path, from +x toward +y
    electrons_per_unit: float = 0.0                       # 0: no noise
    read_noise_e: float = 0.0
    noise_seed: int = 0
    white_balance_mired: float = 0.0                      # + : the camera assumed a warmer light -> bluer image
    white_balance_tint: float = 0.0                       # + : greener image
    jpeg_quality: int = 0                                 # 0: no JPEG

    def to_record(self) -> dict:
        """Plain JSON types (floats, ints, a list), as stored with the image's row."""
        record = asdict(self)
        record["vignetting_centre"] = [float(c) for c in self.vignetting_centre]
        return record

    @classmethod
    def from_record(cls, record: dict, where: str = "camera effects record") -> "CameraEffects":
        """The effects of a stored record; unknown, missing or mistyped fields are an error naming them."""
        names = {f.name: f for f in fields(cls)}
        unknown, missing = sorted(set(record) - set(names)), sorted(set(names) - set(record))
        if unknown or missing:
            raise ValueError(f"{where}: unknown fields {unknown}, missing fields {missing}")
        values = {}
        for name, value in record.items():
            if name == "vignetting_centre":
                if not (isinstance(value, (list, tuple)) and len(value) == 2
                        and all(isinstance(c, (int, float)) and math.isfinite(c) for c in value)):
                    raise ValueError(f"{where}: vignetting_centre must be two finite numbers, got {value!r}")
                values[name] = (float(value[0]), float(value[1]))
            elif name in ("noise_seed", "jpeg_quality"):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
                values[name] = value
            else:
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
                values[name] = float(value)
        if not 0 <= values["jpeg_quality"] <= 100:
            raise ValueError(f"{where}: jpeg_quality must be 0 (off) or 1..100, got {values['jpeg_quality']}")
        return cls(**values)


def sample_effects(rng: np.random.Generator, ranges: CameraEffectRanges = CameraEffectRanges(),
                   pixels_per_metre: float = 740.0) -> CameraEffects:
    """One camera's effects. ``pixels_per_metre`` = focal length (px) / distance to the hands (m)
    turns the hand's travel during the shutter time into pixels. The same number of values is
    drawn whatever the shares, so a share changes only its own effect."""
    on = rng.uniform(size=6) < np.array([ranges.exposure_share, ranges.vignetting_share, ranges.motion_blur_share,
                                         ranges.noise_share, ranges.white_balance_share, ranges.jpeg_share])
    exposure = rng.uniform(*ranges.exposure_ev)
    vignetting = rng.uniform(*ranges.vignetting_ev)
    centre = rng.uniform(*ranges.vignetting_centre, size=2)
    travel_m = rng.uniform(*ranges.hand_speed_m_s) * np.exp(rng.uniform(*np.log(ranges.shutter_s)))
    angle = rng.uniform(0.0, 180.0)
    electrons = np.exp(rng.uniform(*np.log(ranges.electrons_per_unit)))
    read = rng.uniform(*ranges.read_noise_e)
    noise_seed = int(rng.integers(2**62))
    mired = np.clip(rng.normal(0.0, ranges.white_balance_mired_sd), -2.5 * ranges.white_balance_mired_sd,
                    2.5 * ranges.white_balance_mired_sd)
    tint = np.clip(rng.normal(0.0, ranges.white_balance_tint_sd), -2.5 * ranges.white_balance_tint_sd,
                   2.5 * ranges.white_balance_tint_sd)
    quality = int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1))
    return CameraEffects(
        exposure_ev=float(exposure) if on[0] else 0.0,
        vignetting_ev=float(vignetting) if on[1] else 0.0,
        vignetting_centre=(float(centre[0]), float(centre[1])) if on[1] else (0.0, 0.0),
        motion_blur_px=float(travel_m * pixels_per_metre) if on[2] else 0.0,
        motion_blur_angle_deg=float(angle) if on[2] else 0.0,
        electrons_per_unit=float(electrons) if on[3] else 0.0,
        read_noise_e=float(read) if on[3] else 0.0,
        noise_seed=noise_seed if on[3] else 0,
        white_balance_mired=float(mired) if on[4] else 0.0,
        white_balance_tint=float(tint) if on[4] else 0.0,
        jpeg_quality=quality if on[5] else 0,
    )


# ---- the effects, each on scene-linear (H, W, 3) float64 --------------------------------------------


def linear_from_tone_mapped(rgb: np.ndarray) -> np.ndarray:
    """Scene-linear radiance behind an 8-bit image of :func:`tone_map` (its exact inverse on the
    256 codes; code 255 maps to a large finite value)."""
    y = (np.asarray(rgb, dtype=np.float64) / 255.0) ** GAMMA
    return y / np.maximum(1.0 - y, 1e-9)


def vignetting_gain(height: int, width: int, corner_ev: float, centre: tuple[float, float]) -> np.ndarray:
    """(H, W) gain of the cos^4 law ``(1 + (r / f)^2)^-2`` whose effective focal length f makes the
    gain 2^-corner_ev at the crop's half-diagonal from the optical centre."""
    if corner_ev <= 0.0:
        return np.ones((height, width))
    r_corner = 0.5 * math.hypot(width, height)
    f = r_corner / math.sqrt(2.0 ** (corner_ev / 2.0) - 1.0)
    cx, cy = (width - 1) / 2.0 + centre[0] * width, (height - 1) / 2.0 + centre[1] * height
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return (1.0 + ((u - cx) ** 2 + (v - cy) ** 2) / f**2) ** -2


def motion_blur_kernel(length_px: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel of ``length_px`` centred on its middle texel (odd size, symmetric
    under a half turn, so it moves no edge or centroid); bilinear splats of 16 samples per pixel."""
    half = length_px / 2.0
    size = 2 * int(math.ceil(half)) + 1
    kernel = np.zeros((size, size))
    n = max(2, int(math.ceil(length_px * 16)))
    s = np.linspace(-half, half, n)
    x = size // 2 + s * math.cos(math.radians(angle_deg))
    y = size // 2 + s * math.sin(math.radians(angle_deg))
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)), w)
    kernel = 0.5 * (kernel + kernel[::-1, ::-1])      # exact symmetry despite rounding of the samples
    return kernel / kernel.sum()


def white_point_rgb(kelvin: float) -> np.ndarray:
    """Linear sRGB (luminance 1) of the Planckian light at ``kelvin`` (Kim et al. 2002 cubic
    spline of the Planckian locus, 1667-25000 K)."""
    t = float(np.clip(kelvin, 1667.0, 25000.0))
    if t <= 4000.0:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222.0:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000.0:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    rgb = _XYZ_TO_SRGB @ np.array([x / y, 1.0, (1.0 - x - y) / y])
    return rgb / (rgb @ _LUMINANCE)


def white_balance_gains(mired: float, tint: float) -> np.ndarray:
    """Per-channel gains (luminance-preserving) of a camera that balanced for the light
    ``mired`` away from :data:`REFERENCE_KELVIN` (positive: warmer) while the scene was lit by the
    reference light: it divides by the wrong white. ``tint`` scales green by (1 + tint)."""
    assumed = 1e6 / (1e6 / REFERENCE_KELVIN + mired)
    gains = white_point_rgb(REFERENCE_KELVIN) / white_point_rgb(assumed) * np.array([1.0, 1.0 + tint, 1.0])
    return gains / (gains @ _LUMINANCE)


def sensor_noise(linear: np.ndarray, electrons_per_unit: float, read_noise_e: float, seed: int) -> np.ndarray:
    """Shot noise (Poisson, variance = electrons) and read noise (Gaussian, in electrons), both
    drawn as Gaussians in scene-linear units from a generator seeded by ``seed``."""
    z = np.random.default_rng(seed).standard_normal(linear.shape)
    electrons = np.maximum(linear, 0.0) * electrons_per_unit
    return linear + z * np.sqrt(electrons + read_noise_e**2) / electrons_per_unit


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode an (H, W, 3) uint8 image as JPEG (4:2:0, libjpeg's standard tables at ``quality``)
    and decode it: the blocking, ringing and chroma loss of a camera's JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0",
                                                    optimize=False, progressive=False)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def apply_effects(image: np.ndarray, effects: CameraEffects) -> np.ndarray:
    """``image``: (H, W, 3) uint8 as :func:`tone_map` made it, or float scene-linear radiance
    (exposure applied, what goes into :func:`tone_map`) -> (H, W, 3) uint8 with the effects.
    Deterministic: the same image and effects give identical bytes."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"camera effects take an (H, W, 3) image, got shape {image.shape}")
    if image.dtype == np.uint8 and effects == CameraEffects():
        return image.copy()     # what the round trip through linear gives, exactly (tested), without its cost
    linear = linear_from_tone_mapped(image) if image.dtype == np.uint8 else np.asarray(image, dtype=np.float64)
    h, w, _ = linear.shape
    if effects.exposure_ev:
        linear = linear * 2.0 ** effects.exposure_ev
    if effects.vignetting_ev > 0.0:
        linear = linear * vignetting_gain(h, w, effects.vignetting_ev, effects.vignetting_centre)[..., None]
    if effects.motion_blur_px > 0.0:
        kernel = motion_blur_kernel(effects.motion_blur_px, effects.motion_blur_angle_deg)
        linear = np.stack([ndimage.convolve(linear[..., c], kernel, mode="reflect") for c in range(3)], axis=-1)
    if effects.electrons_per_unit > 0.0:
        linear = sensor_noise(linear, effects.electrons_per_unit, effects.read_noise_e, effects.noise_seed)
    if effects.white_balance_mired or effects.white_balance_tint:
        linear = linear * white_balance_gains(effects.white_balance_mired, effects.white_balance_tint)
    rgb = tone_map(linear)
    if effects.jpeg_quality:
        rgb = jpeg_round_trip(rgb, effects.jpeg_quality)
    return rgb
