"""HDR environment maps: procedural ones, Radiance .hdr files, median-cut lights, backgrounds.

RenderIH lights each image with an HDR environment map that also forms the background. A
rasteriser cannot integrate a map per pixel, so the map is approximated by a few directional
lights found by Debevec's median cut (regions of equal energy, one light at each region's energy
centroid) plus an ambient term; the background is the map seen through the same camera.
Equirectangular maps, world +y up: column -> azimuth phi in [-pi, pi), row -> polar angle theta.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

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


def tone_map(hdr: np.ndarray, exposure: float = 1.0) -> np.ndarray:
    """Reinhard + sRGB gamma -> uint8."""
    x = hdr * exposure
    x = x / (1.0 + x)
    return np.clip(255.0 * x ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


def background_from_envmap(env: np.ndarray, camera: Camera, exposure: float = 1.0) -> np.ndarray:
    """The map seen through ``camera`` (H, W, 3) uint8: per-pixel ray -> equirect lookup."""
    h, w = camera.height, camera.width
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(camera.K).T @ camera.R   # world dirs
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    theta = np.arccos(np.clip(rays[..., 1], -1, 1))
    phi = np.arctan2(rays[..., 2], rays[..., 0])
    eh, ew, _ = env.shape
    r = np.clip((theta / np.pi * eh).astype(int), 0, eh - 1)
    c = np.clip(((phi + np.pi) / (2 * np.pi) * ew).astype(int), 0, ew - 1)
    return tone_map(env[r, c], exposure)


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


def read_hdr(data: bytes, name: str = "<hdr>") -> np.ndarray:
    """Decode a Radiance .hdr (flat or new-style RLE scanlines) into (H, W, 3) float32."""
    buf = io.BytesIO(data)
    if not buf.readline().startswith(b"#?"):
        raise ValueError(f"{name}: not a Radiance HDR file (missing '#?' header)")
    while True:
        line = buf.readline()
        if not line:
            raise ValueError(f"{name}: truncated header")
        if line.strip() == b"":
            break
        if line.startswith(b"FORMAT=") and b"32-bit_rle_rgbe" not in line:
            raise ValueError(f"{name}: unsupported format {line.strip().decode(errors='replace')}")
    size = buf.readline().split()
    if len(size) != 4 or size[0] != b"-Y" or size[2] != b"+X":
        raise ValueError(f"{name}: unsupported resolution line {b' '.join(size)!r}")
    h, w = int(size[1]), int(size[3])
    rest = np.frombuffer(buf.read(), dtype=np.uint8)
    out = np.zeros((h, w, 4), dtype=np.uint8)
    pos = 0
    for y in range(h):
        if w >= 8 and w < 32768 and pos + 4 <= len(rest) and rest[pos] == 2 and rest[pos + 1] == 2 and rest[pos + 2] < 128:
            pos += 4
            for ch in range(4):
                x = 0
                while x < w:
                    count = int(rest[pos])
                    pos += 1
                    if count > 128:
                        count -= 128
                        out[y, x:x + count, ch] = rest[pos]
                        pos += 1
                    else:
                        out[y, x:x + count, ch] = rest[pos:pos + count]
                        pos += count
                    x += count
        else:
            if pos + 4 * w > len(rest):
                raise ValueError(f"{name}: truncated pixel data at scanline {y}")
            out[y] = rest[pos:pos + 4 * w].reshape(w, 4)
            pos += 4 * w
    e = out[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0)
    return (out[..., :3] * scale[..., None]).astype(np.float32)
