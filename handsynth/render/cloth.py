"""Sleeve fabrics: seeded, tileable cloth textures (solid, stripes, knit, denim) with their colours.

Forearms that leave the frame are often covered by a sleeve, and a sleeve's fabric is what a
detector sees next to the wrist. The geometry comes with the forearms; this module paints the
cloth: linear albedo, roughness and a height map (same conventions as the skin's: ~1 mm per
unit around 0.5) on a square tile that repeats seamlessly (every pattern and noise is periodic
over the tile), plus the Principled BSDF sheen of the fibre. Texture axes: u (columns) runs
around the arm, v (rows) along it, so stripes ring the sleeve and knit ribs run down it.

Patterns, with the scales of real garments:

* ``solid``: one garment colour, a plain weave of ~0.4 mm threads, mottled fibre colour;
* ``stripes``: two colours (navy or white with another, Breton-like), 4-25 mm period, rings;
* ``knit``: 1x1 rib knit, wales ~2.5-4 mm apart along the arm, V-shaped stitches, heathered yarn;
* ``denim``: a 2/1 twill of indigo warp over white weft (~0.8 mm diagonal ribs), slubs along the
  warp and a wash from raw to light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handsynth.render.skin import srgb_to_linear

CLOTH_PATTERNS = ("solid", "stripes", "knit", "denim")

#: Common garment colours (sRGB, 0..1): black, charcoal, heather grey, off-white, navy, royal blue,
#: light blue, burgundy, red, forest green, olive, khaki, brown, mustard, pink, purple.
GARMENT_SRGB = np.array([
    [0.10, 0.10, 0.11], [0.25, 0.26, 0.28], [0.55, 0.55, 0.56], [0.90, 0.89, 0.85],
    [0.13, 0.16, 0.30], [0.20, 0.32, 0.65], [0.60, 0.72, 0.85], [0.42, 0.10, 0.16],
    [0.75, 0.15, 0.15], [0.14, 0.30, 0.20], [0.40, 0.40, 0.24], [0.72, 0.65, 0.50],
    [0.40, 0.28, 0.20], [0.80, 0.62, 0.20], [0.90, 0.62, 0.68], [0.38, 0.25, 0.50],
])
#: Denim washes (sRGB): raw, medium, light indigo, black denim; and the weft's unbleached white.
DENIM_SRGB = np.array([[0.12, 0.16, 0.28], [0.23, 0.32, 0.50], [0.45, 0.56, 0.70], [0.12, 0.12, 0.13]])
WEFT_SRGB = np.array([0.85, 0.84, 0.80])
#: Principled BSDF "Sheen Weight" of each fabric (fuzzy fibres scatter at grazing angles).
SHEEN = {"solid": 0.3, "stripes": 0.3, "knit": 0.6, "denim": 0.2}


@dataclass(frozen=True)
class ClothTextures:
    """One fabric on a ``tile_m`` x ``tile_m`` tile: ``albedo`` (S, S, 3) linear, ``roughness`` and
    ``bump`` (S, S) in [0, 1], float32, row 0 at the top (v = 1); ``colors_srgb`` the garment
    colours it was drawn with."""

    albedo: np.ndarray
    roughness: np.ndarray
    bump: np.ndarray
    sheen: float
    pattern: str
    tile_m: float
    colors_srgb: tuple[tuple[float, float, float], ...]
    seed: int

    def to_record(self) -> dict:
        """What to store with an image's row (the maps are re-made from the seed)."""
        return {"pattern": self.pattern, "seed": int(self.seed), "tile_m": float(self.tile_m),
                "sheen": float(self.sheen), "colors_srgb": [[float(c) for c in rgb] for rgb in self.colors_srgb]}


def periodic_noise(rng: np.random.Generator, size: int, feature_u: float, feature_v: float) -> np.ndarray:
    """(size, size) Gaussian-filtered white noise, unit std, periodic over the tile, with features of
    about ``feature_u`` x ``feature_v`` texels (elongated when they differ), made in Fourier space."""
    white = rng.standard_normal((size, size))
    fv, fu = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    gain = np.exp(-2.0 * np.pi**2 * ((fu * feature_u / 2.0) ** 2 + (fv * feature_v / 2.0) ** 2))
    noise = np.real(np.fft.ifft2(np.fft.fft2(white) * gain))
    return noise / (noise.std() + 1e-12)


def _count(tile_m: float, period_m: float) -> int:
    """How many whole periods fit the tile (at least one): periodic patterns tile seamlessly."""
    return max(1, int(round(tile_m / period_m)))


def cloth_textures(seed: int, size: int = 256, pattern: str | None = None, tile_m: float = 0.05) -> ClothTextures:
    """A fabric drawn from ``seed`` (its pattern too, unless ``pattern`` is given); deterministic."""
    if pattern is not None and pattern not in CLOTH_PATTERNS:
        raise ValueError(f"cloth pattern {pattern!r}: choose one of {CLOTH_PATTERNS}")
    if size < 16 or tile_m <= 0:
        raise ValueError(f"cloth texture needs size >= 16 and tile_m > 0, got {size}, {tile_m}")
    rng = np.random.default_rng([int(seed), 35])
    drawn = CLOTH_PATTERNS[int(rng.integers(len(CLOTH_PATTERNS)))]
    pattern = pattern or drawn
    texel_m = tile_m / size
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size          # tile fractions: v (rows), u (columns)
    mottle = periodic_noise(rng, size, 0.002 / texel_m, 0.002 / texel_m)
    # plain weave: ~0.4 mm threads crossing over and under (one period = two threads), faded out
    # where a period spans fewer than 4 texels
    weave_n = _count(tile_m, 0.0008)
    weave = np.cos(2 * np.pi * weave_n * x) * np.cos(2 * np.pi * weave_n * y) * min(1.0, size / weave_n / 8.0)
    if pattern == "denim":
        colors = [DENIM_SRGB[int(rng.integers(len(DENIM_SRGB)))], WEFT_SRGB]
        n = 2 * (_count(tile_m, 0.0008) // 2 + 1)               # even, so the diagonal wraps
        twill = 0.5 + 0.5 * np.cos(2 * np.pi * (n * x + n // 2 * y))
        slubs = periodic_noise(rng, size, 0.0006 / texel_m, 0.01 / texel_m)   # streaks along the warp
        wash = rng.uniform(0.0, 0.15) * np.clip(0.6 + 0.3 * periodic_noise(rng, size, 0.02 / texel_m, 0.03 / texel_m), 0, 1)
        weft = (0.25 * (1 - twill) + wash)[..., None]
        rgb = np.asarray(colors[0]) * (1 + 0.08 * slubs[..., None]) * (1 - weft) + WEFT_SRGB * weft
        height = 0.5 + 0.12 * twill + 0.02 * slubs
        roughness = 0.85 + 0.04 * slubs
    elif pattern == "knit":
        colors = [GARMENT_SRGB[int(rng.integers(len(GARMENT_SRGB)))]]
        wales = 2 * _count(tile_m, 2 * rng.uniform(0.0025, 0.004))   # even: 1x1 rib pairs wrap around
        courses = _count(tile_m, 0.0025)
        across = np.mod(wales * x, 1.0)
        rib = np.cos(np.pi * (wales * x - 0.5)) ** 2 * np.where(np.mod(np.floor(wales * x), 2) == 0, 1.0, 0.6)
        stitch = 0.6 + 0.4 * np.cos(2 * np.pi * (courses * y + 2 * np.abs(across - 0.5)))   # V-shaped loops
        heather = periodic_noise(rng, size, 0.0005 / texel_m, 0.002 / texel_m)
        h = rib * stitch
        rgb = np.asarray(colors[0]) * (0.82 + 0.18 * h + 0.06 * heather)[..., None]
        height = 0.4 + 0.3 * h
        roughness = 0.9 + 0.03 * heather
    else:
        first = GARMENT_SRGB[int(rng.integers(len(GARMENT_SRGB)))]
        colors = [first]
        rgb = np.broadcast_to(first, (size, size, 3)).astype(np.float64)
        if pattern == "stripes":
            second = [GARMENT_SRGB[4], GARMENT_SRGB[3]][int(rng.integers(2))]
            if np.allclose(second, first):
                second = GARMENT_SRGB[0]
            colors.append(second)
            n, duty = _count(tile_m, np.exp(rng.uniform(np.log(0.004), np.log(0.025)))), rng.uniform(0.2, 0.6)
            off_centre = 0.5 - np.abs(np.mod(n * y - (1 - duty / 2), 1.0) - 0.5)   # periods from the stripe's middle
            band = np.clip((duty / 2 - off_centre) * size / n + 0.5, 0.0, 1.0)      # one texel of edge
            rgb = rgb * (1 - band[..., None]) + np.asarray(second) * band[..., None]
        rgb = rgb * (1 + 0.02 * mottle[..., None])
        height = 0.5 + 0.08 * weave
        roughness = rng.uniform(0.7, 0.9) + 0.03 * mottle
    albedo = srgb_to_linear(np.clip(rgb, 0.0, 1.0))
    return ClothTextures(
        albedo=albedo.astype(np.float32), roughness=np.clip(roughness, 0.3, 1.0).astype(np.float32),
        bump=np.clip(height, 0.0, 1.0).astype(np.float32), sheen=SHEEN[pattern], pattern=pattern, tile_m=float(tile_m),
        colors_srgb=tuple(tuple(float(c) for c in col) for col in colors), seed=int(seed))
