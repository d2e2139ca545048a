"""HDR environment maps: procedural ones, .hdr/.exr files, the npm Poly Haven set, median-cut lights, backgrounds.

RenderIH lights each image with an HDR environment map that also forms the background. A
rasteriser cannot integrate a map per pixel, so the map is approximated by a few directional
lights found by Debevec's median cut (regions of equal energy, one light at each region's energy
centroid) plus an ambient term; the background is the map seen through the same camera.
Equirectangular maps, world +y up: column -> azimuth phi in [-pi, pi), row -> polar angle theta.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handsynth import userfiles
from handsynth.cameras import Camera

#: File types of the environment-map library (under ``library/envmaps/``) that ``environment_maps`` reads
#: and the library sensor watches.
LIBRARY_EXTENSIONS: tuple[str, ...] = (".hdr", ".exr")


def pixel_directions(height: int, width: int) -> np.ndarray:
    """Unit direction (H, W, 3) of each equirectangular pixel centre."""
    theta = (np.arange(height) + 0.5) / height * np.pi
    phi = (np.arange(width) + 0.5) / width * 2 * np.pi - np.pi
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    return np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], axis=-1)


def procedural_envmap(seed: int, height: int = 64, width: int = 128) -> np.ndarray:
    """A deterministic linear-HDR map (H, W, 3): sky gradient, ground, a sun and 0-3 bright windows."""
    rng = np.random.default_rng(seed)
    d = pixel_directions(height, width)
    up = d[..., 1:2]
    zenith = rng.uniform([0.15, 0.25, 0.5], [0.4, 0.5, 0.9])
    horizon = rng.uniform([0.6, 0.6, 0.6], [1.0, 0.95, 0.9])
    ground = rng.uniform([0.1, 0.08, 0.05], [0.35, 0.3, 0.25])
    sky = horizon + (zenith - horizon) * np.clip(up, 0, 1) ** 0.6
    env = np.where(up > 0, sky, ground * (0.6 + 0.4 * (1 + up)))
    sun_dir = rng.normal(size=3)
    sun_dir[1] = abs(sun_dir[1]) + 0.3
    sun_dir /= np.linalg.norm(sun_dir)
    sun = np.exp((d @ sun_dir - 1.0) / 0.0015)[..., None] * rng.uniform(60, 200) * np.array([1.0, 0.95, 0.85])
    env = env + sun
    for _ in range(rng.integers(0, 4)):
        w = rng.normal(size=3)
        w /= np.linalg.norm(w)
        env = env + (d @ w > rng.uniform(0.97, 0.99))[..., None] * rng.uniform(3, 12) * rng.uniform(0.8, 1.0, 3)
    return env.astype(np.float32)


@dataclass(frozen=True)
class Light:
    direction: np.ndarray  # (3,) unit, from the scene toward the light
    rgb: np.ndarray        # (3,) irradiance-like intensity


def median_cut_lights(env: np.ndarray, n_lights: int = 8) -> tuple[list[Light], np.ndarray]:
    """Debevec's median cut into ``n_lights`` (a power of two) lights; also the mean radiance (ambient)."""
    h, w, _ = env.shape
    theta = (np.arange(h) + 0.5) / h * np.pi
    solid = (np.sin(theta) * (np.pi / h) * (2 * np.pi / w))[:, None, None]   # pixel solid angles
    energy = env * solid
    lum = energy @ np.array([0.2126, 0.7152, 0.0722])
    regions = [(0, h, 0, w)]
    while len(regions) < n_lights:
        split = []
        for (r0, r1, c0, c1) in regions:
            block = lum[r0:r1, c0:c1]
            # split across the longer side, measured as angles on the sphere
            tall = (r1 - r0) * np.pi / h >= (c1 - c0) * 2 * np.pi / w * np.sin(theta[(r0 + r1) // 2])
            if (tall and r1 - r0 > 1) or c1 - c0 <= 1:
                cum = np.cumsum(block.sum(axis=1))
                k = r0 + int(np.clip(np.searchsorted(cum, cum[-1] / 2) + 1, 1, r1 - r0 - 1))
                split += [(r0, k, c0, c1), (k, r1, c0, c1)]
            else:
                cum = np.cumsum(block.sum(axis=0))
                k = c0 + int(np.clip(np.searchsorted(cum, cum[-1] / 2) + 1, 1, c1 - c0 - 1))
                split += [(r0, r1, c0, k), (r0, r1, k, c1)]
        regions = split
    dirs = pixel_directions(h, w)
    lights = []
    for (r0, r1, c0, c1) in regions:
        e = lum[r0:r1, c0:c1]
        if e.sum() <= 0:
            continue
        centroid = (dirs[r0:r1, c0:c1] * e[..., None]).sum(axis=(0, 1))
        lights.append(Light(centroid / np.linalg.norm(centroid), energy[r0:r1, c0:c1].sum(axis=(0, 1))))
    ambient = (env * solid).sum(axis=(0, 1)) / (4 * np.pi)
    return lights, ambient


#: How linear radiance becomes 8-bit pixels, for both backends; recorded in every manifest row.
COLOUR_MANAGEMENT = ("scene-linear Rec.709 x exposure (auto key 0.22 x random 0.6-1.5) -> Reinhard x/(1+x) "
                     "per channel -> gamma 1/2.2 -> 8 bit")

_LUMINANCE = np.array([0.2126, 0.7152, 0.0722])


def tone_map(hdr: np.ndarray, exposure: float = 1.0) -> np.ndarray:
    """Reinhard + sRGB gamma -> uint8."""
    x = np.maximum(hdr * exposure, 0.0)
    x = x / (1.0 + x)
    return np.clip(255.0 * x ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


def auto_exposure(env: np.ndarray, key: float = 0.22) -> float:
    """Scale that maps the map's typical luminance to ``key`` (Reinhard's photographic key). The
    typical luminance is the geometric mean of the log-average (what a background looks like) and
    the arithmetic mean (what lights the hands; dominated by the sun or lamps), both solid-angle
    weighted: a dark studio with bright softboxes is then not blown out, a sky not left black."""
    h = env.shape[0]
    weight = np.sin((np.arange(h) + 0.5) / h * np.pi)[:, None] * np.ones(env.shape[:2])
    lum = np.maximum(env @ _LUMINANCE, 0.0)
    log_avg = np.exp((weight * np.log(lum + 1e-4)).sum() / weight.sum())
    mean = (weight * lum).sum() / weight.sum()
    return float(key / max(np.sqrt(log_avg * mean), 1e-6))


def rotate_lights(lights: list[Light], rotation: float) -> list[Light]:
    """Median-cut lights of a map turned by ``rotation`` radians about world up (azimuth + rotation)."""
    c, s = np.cos(rotation), np.sin(rotation)
    turn = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
    return [Light(turn @ light.direction, light.rgb) for light in lights]


#: Gaussian smoothing (map texels) of a map before it is viewed, separately for its luminance
#: and its colour. The npm maps are 512 x 256 and lossy (DWAB, which stores colour coarser than
#: luminance): a camera seeing ~20 degrees of one magnifies each texel ~9x, so a bright texel shows
#: as a hard square (the cubic B-spline lookup rounds it) and the codec's colour damage as blue
#: or red specks (smoothing colour over ~1 texel removes them). Luminance keeps its detail: 0.3
#: texel on top of the B-spline's ~0.6. Chosen by looking at all 18 maps (0.7 on both was soft).
MAP_LUMA_SMOOTHING_TEXELS = 0.3
MAP_CHROMA_SMOOTHING_TEXELS = 1.0


def _smooth_map(env: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an equirectangular map (H, W[, C]): clamped at the poles, wrapped in azimuth."""
    from scipy import ndimage

    if sigma <= 0:
        return env
    extra = env.ndim - 2
    return ndimage.gaussian_filter(env, (sigma, sigma) + (0,) * extra, mode=("nearest", "wrap") + ("nearest",) * extra)


class EnvmapPyramid:
    """A map prepared for viewing: level 0 is the map with its luminance smoothed by
    ``luma_texels`` and its colour by ``chroma_texels``, each further level halves the previous
    one (2 x 2 means), down to 16 texels high. Build it once per map and pass it to
    :func:`envmap_view` when the same map is viewed many times; levels are made on first use."""

    def __init__(self, env: np.ndarray, luma_texels: float = MAP_LUMA_SMOOTHING_TEXELS,
                 chroma_texels: float = MAP_CHROMA_SMOOTHING_TEXELS) -> None:
        self.env = env
        self.luma_texels, self.chroma_texels = luma_texels, chroma_texels
        self._levels: list[np.ndarray] = []

    def level(self, k: int) -> np.ndarray:
        """Level ``k`` (clamped to the coarsest level of at least 16 x 32 texels)."""
        if not self._levels:
            env = np.asarray(self.env, dtype=np.float32)
            colour = _smooth_map(env, self.chroma_texels)
            luminance = _smooth_map(env @ _LUMINANCE, self.luma_texels)
            scale = luminance / np.maximum(colour @ _LUMINANCE, 1e-30)
            self._levels.append((colour * scale[..., None]).astype(np.float32))
        while len(self._levels) <= k:
            last = self._levels[-1]
            h, w, _ = last.shape
            if h < 32 or h % 2 or w % 2:
                break
            self._levels.append(last.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)))
        return self._levels[min(k, len(self._levels) - 1)]


def envmap_view(env: np.ndarray | EnvmapPyramid, camera: Camera, rotation: float = 0.0,
                defocus_px: float = 0.0) -> np.ndarray:
    """Linear radiance (H, W, 3) of the map turned by ``rotation`` seen through ``camera``, one ray
    per pixel centre (integer coordinates, the project's convention). Turning moves a feature at
    azimuth phi = atan2(z, x) to phi + rotation (Cycles: Mapping node rotation z = +rotation, as
    the world y-up -> Blender z-up map flips azimuth).

    The lookup is filtered to the output's footprint: the pyramid level whose texels are no
    smaller than a pixel at the image centre (a 4K map is shrunk, not aliased), read with a cubic
    B-spline (non-negative weights: no ringing, no negative radiance; smooth, so a magnified map
    shows no texel squares). ``defocus_px`` > 0 blurs the view with a lens's disc of that diameter
    (:mod:`handsynth.render.depth_of_field`), reading a margin beyond the frame."""
    from scipy import ndimage

    from handsynth.render.depth_of_field import defocus, margin_px

    pyramid = env if isinstance(env, EnvmapPyramid) else EnvmapPyramid(env)
    full_width = pyramid.env.shape[1]
    texels_per_px = full_width / (2 * np.pi * float(camera.K[0, 0]))
    level = pyramid.level(max(0, int(np.ceil(np.log2(texels_per_px)))) if texels_per_px > 1 else 0)
    m = margin_px(defocus_px) if defocus_px > 0 else 0
    h, w = camera.height + 2 * m, camera.width + 2 * m
    u, v = np.meshgrid(np.arange(w, dtype=float) - m, np.arange(h, dtype=float) - m)   # integer = pixel centre
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(camera.K).T @ camera.R   # world dirs
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    theta = np.arccos(np.clip(rays[..., 1], -1, 1))
    phi = np.arctan2(rays[..., 2], rays[..., 0]) - rotation
    eh, ew, _ = level.shape
    pad = 2  # the B-spline reads two texels on each side: clamp at the poles, wrap in azimuth
    padded = np.pad(np.pad(level, ((pad, pad), (0, 0), (0, 0)), mode="edge"), ((0, 0), (pad, pad), (0, 0)), mode="wrap")
    y = theta / np.pi * eh - 0.5 + pad
    x = np.mod((phi + np.pi) / (2 * np.pi), 1.0) * ew - 0.5 + pad
    view = np.stack([ndimage.map_coordinates(padded[..., c], [y, x], order=3, prefilter=False, mode="nearest")
                     for c in range(3)], axis=-1)
    if m:
        view = np.maximum(defocus(view, defocus_px), 0.0)
    return view.astype(np.float32)


def background_from_envmap(env: np.ndarray | EnvmapPyramid, camera: Camera, exposure: float = 1.0,
                           rotation: float = 0.0, defocus_px: float = 0.0) -> np.ndarray:
    """The map seen through ``camera`` (H, W, 3) uint8, tone-mapped like the rendered hands."""
    return tone_map(envmap_view(env, camera, rotation, defocus_px), exposure)


# ---- Radiance RGBE (.hdr) -------------------------------------------------------------------------


def write_hdr(env: np.ndarray) -> bytes:
    """Encode (H, W, 3) float radiance as an uncompressed Radiance RGBE file."""
    h, w, _ = env.shape
    m = env.max(axis=-1)
    exp = np.where(m > 1e-32, np.floor(np.log2(np.maximum(m, 1e-32))) + 1, -128)
    scale = np.where(m > 1e-32, 256.0 / np.exp2(exp), 0.0)
    rgbe = np.zeros((h, w, 4), dtype=np.uint8)
    rgbe[..., :3] = np.clip(env * scale[..., None], 0, 255).astype(np.uint8)
    rgbe[..., 3] = np.where(m > 1e-32, exp + 128, 0).astype(np.uint8)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode()
    return header + rgbe.tobytes()


#: Limits on a map's size: a header may claim any dimensions, and decoding allocates them first.
MAX_HDR_SIDE = 32768
MAX_HDR_PIXELS = 2**27  # 16k x 8k, the largest HDRIs published; ~0.5 GB while decoding
#: Smallest map median cut can split into 8 lights (``MAX_DIRECTIONAL_LIGHTS``).
MIN_HDR_HEIGHT, MIN_HDR_WIDTH = 4, 8


class EnvironmentMapError(ValueError):
    """An environment map file is malformed; the message names the file and what is wrong."""


def read_hdr_header(data: bytes, name: str = "<hdr>") -> tuple[int, int, int]:
    """Validate a Radiance .hdr header: ``(height, width, offset of the pixel data)``.

    Cheap (no pixels decoded), so a library can be checked when it is listed. The dimensions are
    checked against sane bounds and against the file length: every scanline needs at least
    ``4 + 8 * ceil(width / 128)`` bytes (RLE) or ``4 * width`` (flat), so a header that claims
    more than the file holds is refused before anything is allocated.
    """
    buf = io.BytesIO(data)
    if not buf.readline().startswith(b"#?"):
        raise EnvironmentMapError(f"{name}: not a Radiance HDR file (missing '#?' header)")
    while True:
        line = buf.readline()
        if not line:
            raise EnvironmentMapError(f"{name}: truncated header (no blank line before the resolution)")
        if line.strip() == b"":
            break
        if line.startswith(b"FORMAT=") and b"32-bit_rle_rgbe" not in line:
            raise EnvironmentMapError(f"{name}: unsupported format {line.strip().decode(errors='replace')}")
    size = buf.readline().split()
    if len(size) != 4 or size[0] != b"-Y" or size[2] != b"+X":
        raise EnvironmentMapError(f"{name}: unsupported resolution line {b' '.join(size)!r} (expected '-Y H +X W')")
    if not (size[1].isdigit() and size[3].isdigit()):
        raise EnvironmentMapError(f"{name}: resolution {size[1]!r} x {size[3]!r} is not two positive integers")
    h, w = int(size[1]), int(size[3])
    if not (MIN_HDR_HEIGHT <= h <= MAX_HDR_SIDE and MIN_HDR_WIDTH <= w <= MAX_HDR_SIDE) or h * w > MAX_HDR_PIXELS:
        raise EnvironmentMapError(
            f"{name}: resolution {h} x {w} is outside {MIN_HDR_HEIGHT}..{MAX_HDR_SIDE} x "
            f"{MIN_HDR_WIDTH}..{MAX_HDR_SIDE} (at most {MAX_HDR_PIXELS} pixels)")
    offset = buf.tell()
    per_line = min(4 * w, 4 + 8 * -(-w // 128)) if 8 <= w < 32768 else 4 * w
    if len(data) - offset < h * per_line:
        raise EnvironmentMapError(
            f"{name}: {len(data) - offset} bytes of pixel data cannot hold {h} x {w} pixels "
            f"(at least {h * per_line}); the file is truncated or its resolution is wrong")
    return h, w, offset


def read_hdr(data: bytes, name: str = "<hdr>") -> np.ndarray:
    """Decode a Radiance .hdr (flat or new-style RLE scanlines) into (H, W, 3) float32.

    Every malformed input is an :class:`EnvironmentMapError` naming the file and scanline:
    runs of length 0 (which would never advance) or past the scanline end, and data that ends
    early. A map without any light is refused too: it would render black images.
    """
    h, w, offset = read_hdr_header(data, name)
    rest = np.frombuffer(data, dtype=np.uint8, offset=offset)
    out = np.zeros((h, w, 4), dtype=np.uint8)
    pos, n = 0, len(rest)
    for y in range(h):
        if 8 <= w < 32768 and pos + 4 <= n and rest[pos] == 2 and rest[pos + 1] == 2 and rest[pos + 2] < 128:
            if (int(rest[pos + 2]) << 8 | int(rest[pos + 3])) != w:
                raise EnvironmentMapError(f"{name}: scanline {y} is encoded for width "
                                          f"{int(rest[pos + 2]) << 8 | int(rest[pos + 3])}, the header says {w}")
            pos += 4
            for ch in range(4):
                x = 0
                while x < w:
                    if pos >= n:
                        raise EnvironmentMapError(f"{name}: run-length data ends inside scanline {y}")
                    count = int(rest[pos])
                    pos += 1
                    run = count > 128
                    count = count - 128 if run else count
                    if count == 0 or count > w - x:
                        raise EnvironmentMapError(
                            f"{name}: scanline {y} channel {ch} has a run of {count} pixels at x={x} (width {w})")
                    take = 1 if run else count
                    if pos + take > n:
                        raise EnvironmentMapError(f"{name}: run-length data ends inside scanline {y}")
                    out[y, x:x + count, ch] = rest[pos] if run else rest[pos:pos + count]
                    pos += take
                    x += count
        else:
            if pos + 4 * w > n:
                raise EnvironmentMapError(f"{name}: truncated pixel data at scanline {y}")
            out[y] = rest[pos:pos + 4 * w].reshape(w, 4)
            pos += 4 * w
    e = out[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0)
    env = (out[..., :3] * scale[..., None]).astype(np.float32)
    if not env.any():
        raise EnvironmentMapError(f"{name}: every pixel is black; the map holds no light")
    return env


# ---- OpenEXR (.exr), the npm Poly Haven set, validation ------------------------------------------


def read_exr(data: bytes, name: str = "<exr>") -> np.ndarray:
    """Decode an OpenEXR file (any compression the OpenEXR library knows, DWAB included) into
    (H, W, 3) float32 linear RGB. OpenEXR's Python binding opens files by name only."""
    import tempfile

    import OpenEXR

    if not data.startswith(b"\x76\x2f\x31\x01"):
        raise ValueError(f"{name}: not an OpenEXR file (bad magic number)")
    with tempfile.NamedTemporaryFile(suffix=".exr") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            with OpenEXR.File(tmp.name) as exr:
                channels = {k: v.pixels for k, v in exr.channels().items()}
        except Exception as exc:  # the binding raises plain RuntimeErrors on corrupt data
            raise ValueError(f"{name}: unreadable OpenEXR data ({exc})") from exc
    for packed in ("RGB", "RGBA"):
        if packed in channels:
            return np.asarray(channels[packed][..., :3], dtype=np.float32)
    if all(c in channels for c in "RGB"):
        return np.stack([channels[c] for c in "RGB"], axis=-1).astype(np.float32)
    raise ValueError(f"{name}: no R, G, B channels (has {sorted(channels)})")


def read_envmap(data: bytes, name: str) -> np.ndarray:
    """Read a library map by its extension (one of :data:`LIBRARY_EXTENSIONS`) and validate it."""
    lower = name.lower()
    if lower.endswith(".exr"):
        env = read_exr(data, name)
    elif lower.endswith(".hdr"):
        env = read_hdr(data, name)
    else:
        raise ValueError(f"{name}: environment maps must end in one of {LIBRARY_EXTENSIONS}")
    validate_envmap(env, name)
    return env


def validate_envmap(env: np.ndarray, name: str) -> None:
    """An equirectangular map must be (H, 2H, 3), finite and non-negative (negative radiance renders
    as black blocks in Cycles)."""
    if env.ndim != 3 or env.shape[2] != 3 or env.shape[1] != 2 * env.shape[0]:
        raise ValueError(f"{name}: shape {env.shape} is not an equirectangular (H, 2H, 3) map")
    bad = ~np.isfinite(env)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.any(-1).sum())} pixels are NaN or infinite")
    if (env < 0).any():
        raise ValueError(f"{name}: {int((env < 0).any(-1).sum())} pixels have negative radiance "
                         f"(min {float(env.min()):.3g}); repair them with repair_negative_radiance")
    if float(env.max()) <= 0:
        raise ValueError(f"{name}: the map is black")


def _codec_damage(out: np.ndarray) -> np.ndarray:
    """(H, W, 3) bool: negative or non-finite values, and whole pixels that are a bright
    single-channel spike (two channels ~0; two npm maps have a pure-blue "sun" of 11,800)."""
    bad = ~np.isfinite(out) | (out < 0)
    peak = np.nan_to_num(out, nan=0.0, posinf=0.0).max(axis=-1, keepdims=True)
    spike = (((out <= 1e-3 * peak) | bad).sum(axis=-1) >= 2) & (peak[..., 0] > 1.0)
    return bad | spike[..., None]


def repair_negative_radiance(env: np.ndarray, size: int = 5, max_rounds: int = 8) -> tuple[np.ndarray, int]:
    """Replace every negative or non-finite value by the median of the valid values of the same
    channel in its ``size`` x ``size`` neighbourhood (wrapping around in azimuth). Lossy DWAB
    compression rings around the sun and lamps; clamping to 0 would leave black halos, and
    replacing whole pixels would erase a sun whose other channels are right. Bright pixels with
    only one positive channel are replaced whole. Returns the repaired
    map and the number of pixels touched; clusters wider than the window take more rounds."""
    out = np.array(env, dtype=np.float32)
    bad = _codec_damage(out)
    n_bad = int(bad.any(axis=-1).sum())
    r = size // 2
    for _ in range(max_rounds):
        if not bad.any():
            return out, n_bad
        vals = np.where(bad, np.nan, out)
        padded = np.pad(vals, ((r, r), (0, 0), (0, 0)), mode="edge")
        padded = np.pad(padded, ((0, 0), (r, r), (0, 0)), mode="wrap")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(0, 1))  # (H, W, 3, s, s)
        rows, cols, chans = np.nonzero(bad)
        patch = windows[rows, cols, chans].reshape(len(rows), -1)
        has = ~np.isnan(patch).all(axis=1)
        out[rows[has], cols[has], chans[has]] = np.nanmedian(patch[has], axis=1)
        bad[rows[has], cols[has], chans[has]] = False
        bad |= _codec_damage(out)            # medians of spiky neighbours can form a new spike
    if bad.any():
        raise ValueError(f"{int(bad.any(-1).sum())} negative pixels left after {max_rounds} rounds of {size}x{size} repair")
    return out, n_bad


def npm_hdri_exr(js_text: str, name: str) -> bytes:
    """The EXR bytes inside one ``@pmndrs/assets`` ``hdri/*.exr.js`` module
    (``export default 'data:application/exr;base64,...'``)."""
    import base64
    import binascii
    import re

    match = re.fullmatch(r"\s*export default\s*['\"]data:application/exr;base64,([A-Za-z0-9+/=]+)['\"];?\s*", js_text)
    if not match:
        raise ValueError(f"{name}: not an @pmndrs/assets HDRI module (expected export default 'data:application/exr;base64,...')")
    try:
        return base64.b64decode(match.group(1), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{name}: bad base64 EXR data ({exc})") from exc


def read_map_folder(folder: str | os.PathLike[str]) -> dict[str, bytes]:
    """``name -> bytes`` of every map (:data:`LIBRARY_EXTENSIONS`) in a user's folder, each one
    decoded and validated here, so nothing of a folder with one bad file goes further. Links and
    special files are refused (:mod:`handsynth.userfiles`); other file types are ignored."""
    names = userfiles.list_files(folder, LIBRARY_EXTENSIONS)
    if not names:
        raise EnvironmentMapError(f"{folder}: no {'/'.join(LIBRARY_EXTENSIONS)} files in the environment-map folder")
    files = userfiles.read_files(folder, names)
    by_stem: dict[str, str] = {}
    for name, data in files.items():
        stem = name.rsplit(".", 1)[0]
        if stem in by_stem:
            raise EnvironmentMapError(f"{folder}: {by_stem[stem]} and {name} would share the map name {stem!r}")
        by_stem[stem] = name
        read_envmap(data, str(Path(folder, name)))
    return files


def load_npm_hdris(folder: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Every ``*.exr.js`` in ``folder`` decoded and repaired: name -> (map, pixels repaired)."""
    maps = {}
    names = userfiles.list_files(folder, (".exr.js",))
    for file_name, data in userfiles.read_files(folder, names).items():
        where = str(Path(folder, file_name))
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where}: not an ASCII JavaScript module ({exc})") from exc
        env, repaired = repair_negative_radiance(read_exr(npm_hdri_exr(text, where), where))
        validate_envmap(env, where)
        maps[file_name[: -len(".exr.js")]] = (env, repaired)
    return maps
