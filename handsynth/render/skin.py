"""Procedural skin textures in a hand model's UV layout: albedo, roughness, bump, nails; seeded.

Uniform skin gives a synthetic hand away. Here every texel is computed from the 3D rest-pose
surface point it maps to (rasterised from the model's :class:`~handsynth.hand_model.uv.UVLayout`),
so the same code textures the stand-in and real MANO, and the patterns run across UV seams:

* a tone drawn uniformly over the whole human range (Fitzpatrick I-VI-like albedos, authored
  in sRGB and converted to linear), with a per-seed undertone (redder or more olive);
* spatial variation: low-frequency blotches, mid-scale mottling and fine pores (3D value noise);
* redness at the knuckles and fingertips, palms lighter and pinker than backs (more so the
  darker the skin, as melanin is sparse in palmar skin);
* fingernails with their own colour, gloss and height (nail bed, lunula, free edge), found on
  the back of each distal phalanx;
* flexion creases on the palmar side of every finger joint and wrinkles over the back of the
  knuckles, in the bump map (low = crease) and a little in albedo and roughness;
* the palm's three main creases (distal and proximal transverse, thenar) placed from the joints
  with per-person jitter and depth, plus a few faint minor ones; loose folds over the MCP
  knuckles;
* on the back of the hand, ridges over the extensor tendons (fanning from the wrist to the
  knuckles) and dorsal veins (metacarpal veins and the venous arch), raised in the bump map,
  veins bluish in albedo; how much each shows varies per person;
* a fine micro-normal (texel-scale noise in the bump map), roughness varying with dryness and
  moisture, and a specular map (less in cavities, more on fingertip pads, keratin nails);
* a subsurface scattering radius per colour channel (mm, red largest).

Everything derives from ``seed``: the same seed gives identical maps. Palm-plane features
(creases, tendons, veins) are drawn in 2D coordinates of the palm plane
(:meth:`HandFrame.palm_coordinates`) and limited to the palm or the back by the texel's side.

User texture library. ``load_user_skin(png_bytes)`` reads a user's albedo PNG (sRGB, square,
painted in the model's UV layout: :meth:`HandModel.uv_layout`) and optionally a roughness PNG;
``skin_textures(..., user=...)`` then uses the user's albedo (and roughness) instead of the
procedural ones while nails mask, bump and subsurface radius still come from the geometry.
The intended storage is one folder per skin under ``<prefix>/library/skin/<name>/`` holding
``albedo.png`` and optionally ``roughness.png``; a view picks one skin by its seed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from handsynth.hand_model.standin import TIP_VERTEX_IDS
from handsynth.hand_model.uv import UVLayout

#: Skin tones (sRGB, 0..1) from very light to very dark, spaced evenly in ``tone``.
TONE_PALETTE_SRGB = np.array([
    [0.94, 0.78, 0.68],
    [0.88, 0.68, 0.56],
    [0.78, 0.57, 0.43],
    [0.63, 0.43, 0.30],
    [0.45, 0.29, 0.20],
    [0.27, 0.17, 0.12],
])
#: Colour of palmar skin that darker tones are pulled toward (sRGB).
PALM_SRGB = np.array([0.86, 0.66, 0.56])
#: Nail plate over its bed (pinkish; mixed with the skin around it), the lunula and free edge (sRGB).
NAIL_BED_SRGB = np.array([0.90, 0.68, 0.64])
NAIL_WHITE_SRGB = np.array([0.95, 0.90, 0.86])
#: Mean free path of light in skin (mm, R, G, B): red scatters farthest (Jensen et al. 2001).
SUBSURFACE_RADIUS_MM = np.array([3.67, 1.37, 0.68])
#: MANO joint order: the chain of each finger and the name of its tip.
FINGERS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12), "thumb": (13, 14, 15)}


@dataclass(frozen=True)
class SkinTextures:
    """One hand's skin maps, all (S, S) images in the model's UV layout, top row first (as PNG).

    ``albedo`` is LINEAR RGB in [0, 1]; ``bump`` is a height in [0, 1] around 0.5 for plain
    skin (creases down to about 0.15, tendons and veins up to about 0.75, nails about 0.6), meant
    as roughly 1 mm per unit (a Cycles Bump node with distance ~0.001 in a scene in metres);
    ``nail_mask`` is 1 on nails (glossier, thinner subsurface); ``subsurface_radius`` is in
    millimetres per RGB channel; ``specular`` drives the Principled BSDF's "Specular IOR Level"
    (0.35 for plain skin). Texel row 0 is the top of the image, i.e. v = 1 in the layout's
    OBJ-style coordinates.
    """

    albedo: np.ndarray             # (S, S, 3) float32 linear
    roughness: np.ndarray          # (S, S) float32
    bump: np.ndarray               # (S, S) float32
    nail_mask: np.ndarray          # (S, S) float32
    subsurface_radius: np.ndarray  # (3,) float32 mm
    tone: float                    # 0 light .. 1 dark
    seed: int
    specular: np.ndarray           # (S, S) float32: Principled "Specular IOR Level" (0.5 = F0 0.04)


@dataclass(frozen=True)
class UserSkin:
    """A user's maps in the model's UV layout: linear albedo (H, W, 3), optional roughness (H, W)."""

    albedo: np.ndarray
    roughness: np.ndarray | None = None


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def tone_srgb(tone: float) -> np.ndarray:
    """Base skin colour (sRGB) of a tone in [0, 1], interpolated along :data:`TONE_PALETTE_SRGB`."""
    x = np.clip(tone, 0.0, 1.0) * (len(TONE_PALETTE_SRGB) - 1)
    return np.array([np.interp(x, np.arange(len(TONE_PALETTE_SRGB)), TONE_PALETTE_SRGB[:, c]) for c in range(3)])


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# ---- rest-pose surface rasterised into UV space ---------------------------------------------
@dataclass(frozen=True)
class TexelSurface:
    """Rest-pose surface point and normal (S*S, 3) behind every texel (padding texels copy the nearest)."""

    position: np.ndarray
    normal: np.ndarray


def rasterize_uv(vertices: np.ndarray, faces: np.ndarray, layout: UVLayout, size: int) -> TexelSurface:
    """Which face (and barycentric point) each texel centre falls in; empty texels copy the nearest.

    Copying into the gutter around charts lets bilinear and mip-mapped lookups near a seam
    read skin rather than black.
    """
    face_id = -np.ones((size, size), dtype=np.int64)
    bary = np.zeros((size, size, 3))
    corners = layout.corner_uv().astype(np.float64)
    px = np.stack([corners[..., 0] * size - 0.5, (1.0 - corners[..., 1]) * size - 0.5], axis=-1)  # (F, 3, 2)
    for fi, (a, b, c) in enumerate(px):
        lo = np.maximum(np.floor(np.minimum(np.minimum(a, b), c)).astype(int), 0)
        hi = np.minimum(np.ceil(np.maximum(np.maximum(a, b), c)).astype(int), size - 1)
        if (hi < lo).any():
            continue
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        det = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        if abs(det) < 1e-12:
            continue
        w0 = ((b[1] - c[1]) * (xs - c[0]) + (c[0] - b[0]) * (ys - c[1])) / det
        w1 = ((c[1] - a[1]) * (xs - c[0]) + (a[0] - c[0]) * (ys - c[1])) / det
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        face_id[ys[inside], xs[inside]] = fi
        bary[ys[inside], xs[inside]] = np.stack([w0[inside], w1[inside], w2[inside]], axis=-1)
    covered = face_id >= 0
    if not covered.any():
        raise ValueError("UV layout covers no texel")
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    face_id, bary = face_id[iy, ix], bary[iy, ix]
    tri = np.asarray(faces, dtype=np.int64)[face_id.ravel()]                  # (S*S, 3)
    w = bary.reshape(-1, 3, 1)
    position = (vertices[tri] * w).sum(axis=1)
    vn = _vertex_normals(vertices, faces)
    normal = (vn[tri] * w).sum(axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    return TexelSurface(position, normal)


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # area-weighted
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / (np.linalg.norm(n, axis=1, keepdims=True) + 1e-12)


# ---- anatomy of the rest hand -----------------------------------------------------------------
@dataclass(frozen=True)
class HandFrame:
    """Bones (15 segments joint -> child or fingertip) and the directions that orient skin on them."""

    starts: np.ndarray   # (15, 3) joint positions 1..15
    ends: np.ndarray     # (15, 3)
    dorsal: np.ndarray   # (15, 3) unit, perpendicular to each bone: toward its nail / knuckle side
    palm_normal: np.ndarray  # (3,) out of the palm
    knuckles: np.ndarray  # (15, 3) skin point over each joint 1..15 on its back (dorsal) side
    joints: np.ndarray    # (16, 3) the rest joints (MANO order)
    radial: np.ndarray    # (3,) in the palm plane, toward the thumb side
    distal: np.ndarray    # (3,) in the palm plane, from the wrist toward the middle finger's MCP

    def palm_coordinates(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points -> (N, 2) metres in the palm plane: (radial, distal) from the wrist joint.
        Back and palm of the hand share these coordinates; features pick a side by a mask."""
        rel = np.asarray(points) - self.joints[0]
        return np.stack([rel @ self.radial, rel @ self.distal], axis=-1)


def hand_frame(vertices: np.ndarray, joints: np.ndarray) -> HandFrame:
    """Bones and orientation of a RIGHT rest hand (MANO joint order; tips from MANO's tip vertices)."""
    palm_normal = np.cross(joints[1] - joints[0], joints[7] - joints[0])  # index x pinky MCP: out of the palm
    palm_normal /= np.linalg.norm(palm_normal)
    radial = joints[1] - joints[7]  # toward the thumb side
    radial -= (radial @ palm_normal) * palm_normal
    radial /= np.linalg.norm(radial)
    starts, ends, dorsal = [], [], []
    for name, chain in FINGERS.items():
        tip = vertices[TIP_VERTEX_IDS[name]]
        pts = [joints[j] for j in chain] + [tip]
        # the thumb's nail faces partly toward the radial side, the fingers' straight back
        back = -palm_normal if name != "thumb" else -0.55 * palm_normal + 0.85 * radial
        for k in range(3):
            axis = (pts[k + 1] - pts[k]) / np.linalg.norm(pts[k + 1] - pts[k])
            d = back - (back @ axis) * axis
            starts.append(pts[k])
            ends.append(pts[k + 1])
            dorsal.append(d / np.linalg.norm(d))
    order = np.argsort([j for chain in FINGERS.values() for j in chain])  # back to joint order 1..15
    starts, ends, dorsal = np.array(starts)[order], np.array(ends)[order], np.array(dorsal)[order]
    # the knuckle: the skin farthest out along the bone's dorsal direction within 12 mm of its joint
    knuckles = []
    for j in range(15):
        near = vertices[np.linalg.norm(vertices - starts[j], axis=1) < 0.012]
        depth = ((near - starts[j]) @ dorsal[j]).max() if len(near) else 0.0
        knuckles.append(starts[j] + depth * dorsal[j])
    distal = joints[4] - joints[0]
    distal -= (distal @ palm_normal) * palm_normal
    distal /= np.linalg.norm(distal)
    radial_axis = np.cross(palm_normal, distal)
    radial_axis *= np.sign(radial_axis @ radial)
    return HandFrame(starts, ends, dorsal, palm_normal, np.array(knuckles), np.asarray(joints, float), radial_axis, distal)


@dataclass(frozen=True)
class TexelAnatomy:
    """Per-texel anatomical coordinates (all (N,) arrays) from which every map is painted."""

    bone: np.ndarray      # nearest bone 0..14 (joint 1..15), or -1 on the palm/back/wrist
    t: np.ndarray         # position along the nearest finger bone (0 at its joint, 1 at its end)
    angle: np.ndarray     # angle (rad) around the bone from its dorsal direction
    length: np.ndarray    # the bone's length (m)
    back: np.ndarray      # in [-1, 1]: +1 facing the back of the hand, -1 facing the palm


def texel_anatomy(surface: TexelSurface, frame: HandFrame) -> TexelAnatomy:
    p = surface.position
    seg = frame.ends - frame.starts
    length = np.linalg.norm(seg, axis=1)
    axis = seg / length[:, None]
    rel = p[:, None, :] - frame.starts[None]                      # (N, 15, 3)
    t = np.einsum("nbc,bc->nb", rel, axis) / length                # (N, 15)
    closest = frame.starts[None] + np.clip(t, 0, 1)[..., None] * seg[None]
    dist = np.linalg.norm(p[:, None] - closest, axis=2)
    bone = dist.argmin(axis=1)
    n = np.arange(len(p))
    # texels beside the proximal phalanges' starts belong to the palm, not the finger
    on_finger = t[n, bone] > -0.05
    radial = rel[n, bone] - (t[n, bone] * length[bone])[:, None] * axis[bone]
    d = frame.dorsal[bone]
    side = np.cross(axis[bone], d)
    angle = np.arctan2(np.einsum("nc,nc->n", radial, side), np.einsum("nc,nc->n", radial, d))
    back_dir = np.where(on_finger[:, None], d, -frame.palm_normal[None])
    back = np.einsum("nc,nc->n", surface.normal, back_dir)
    return TexelAnatomy(np.where(on_finger, bone, -1), t[n, bone], angle, length[bone], back)


# ---- value noise --------------------------------------------------------------------------------
def value_noise(points: np.ndarray, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth 3D noise in [-1, 1] with features of about ``cell`` metres, at points (N, 3)."""
    lo = points.min(axis=0) - cell
    g = (points - lo) / cell
    shape = np.ceil(g.max(axis=0)).astype(int) + 2
    lattice = rng.uniform(-1.0, 1.0, size=tuple(shape)).astype(np.float32)
    i = np.floor(g)
    f = g - i
    # trilinear interpolation at the smoothstep-faded fraction is the smooth blend of the 8 corners
    return ndimage.map_coordinates(lattice, (i + f * f * (3 - 2 * f)).T, order=1, prefilter=False, mode="nearest",
                                   output=np.float64)


def _fbm(points: np.ndarray, cell: float, octaves: int, rng: np.random.Generator) -> np.ndarray:
    total, amp, norm = np.zeros(len(points)), 1.0, 0.0
    for k in range(octaves):
        total += amp * value_noise(points, cell / 2 ** k, rng)
        norm += amp
        amp *= 0.5
    return total / norm


# ---- the maps ---------------------------------------------------------------------------------
def _joint_band(an: TexelAnatomy, bones: tuple[int, ...], at: float, width_m: float) -> np.ndarray:
    """Closeness (0..1) to a plane across ``bones`` at fraction ``at`` of the bone, ``width_m`` wide.

    ``bones`` are 0-based bone ids; ``at`` = 0 is the bone's own joint. Texels of the parent
    bone see the same plane (at t = 1 + ...), so the band crosses the joint continuously.
    """
    out = np.zeros(len(an.t))
    for b in bones:
        for own, shift in ((b, 0.0), (b - 1 if b % 3 else None, 1.0)):
            if own is None:
                continue
            sel = an.bone == own
            offset_m = (an.t[sel] - shift - at) * an.length[sel]
            out[sel] = np.maximum(out[sel], np.exp(-0.5 * (offset_m / width_m) ** 2))
    return out


@dataclass(frozen=True)
class SkinRegions:
    """Where each skin feature lies, per texel (N,) in [0, 1]: what every seed paints on."""

    position: np.ndarray   # (N, 3) rest-pose surface point
    palm_side: np.ndarray
    back_side: np.ndarray
    nail: np.ndarray
    nail_base: np.ndarray  # lunula
    nail_edge: np.ndarray  # free edge
    fold: np.ndarray       # groove around the nail
    fingertip: np.ndarray
    knuckles: np.ndarray
    crease: np.ndarray
    wrinkles: np.ndarray
    palm_xy: np.ndarray    # (N, 2) palm-plane coordinates (m), see :meth:`HandFrame.palm_coordinates`
    palm: np.ndarray       # palm of the hand (not the fingers): where palm creases run
    dorsum: np.ndarray     # back of the hand (not the fingers): tendons and veins
    tendons: np.ndarray    # ridge over each extensor tendon, 0..1
    knuckle_wrinkles: np.ndarray  # loose skin over the MCP knuckles
    landmarks: dict        # palm-plane (2,) points: wrist, index/middle/ring/pinky MCP, thumb MCP, knuckles


def skin_regions(surface: TexelSurface, frame: HandFrame) -> SkinRegions:
    """Nails, knuckles, creases, palm and back from the texels' anatomical coordinates."""
    an = texel_anatomy(surface, frame)
    p = surface.position
    distal = np.isin(an.bone, (2, 5, 8, 11, 14))
    palm_side = _smoothstep(0.1, -0.6, an.back)
    back_side = _smoothstep(-0.1, 0.6, an.back)
    # nail: an oval on the back of the distal phalanx, squarer toward the free edge
    half_width = np.deg2rad(np.where(an.bone == 14, 55.0, 50.0))
    along = (an.t - 0.66) / 0.27
    across = np.abs(an.angle) / half_width
    oval = np.abs(along) ** np.where(along > 0, 4.0, 2.0) + across ** 3
    nail = distal * _smoothstep(1.0, 0.8, oval)
    sigma = np.array([0.007, 0.0045, 0.0035] * 4 + [0.007, 0.005, 0.0045])  # MCP, PIP, DIP; thumb CMC, MCP, IP
    sigma[12] = 1e-4  # the thumb's CMC lies deep: no knuckle on the skin
    near_knuckle = np.exp(-0.5 * (np.linalg.norm(p[:, None] - frame.knuckles[None], axis=2) / sigma) ** 2)
    interphalangeal = back_side * near_knuckle[:, [1, 2, 4, 5, 7, 8, 10, 11, 14]].max(axis=1)
    crease = _smoothstep(-0.2, -0.7, an.back) * np.maximum.reduce([
        _joint_band(an, (1, 4, 7, 10, 2, 5, 8, 11, 14), 0.0, 0.0007),   # PIP / DIP / thumb IP
        _joint_band(an, (1, 4, 7, 10, 2, 5, 8, 11, 14), 0.06, 0.0005),  # their second line
        _joint_band(an, (0, 3, 6, 9, 13), 0.33, 0.0008),                # base of each finger
    ])
    off_finger = np.isin(an.bone, (-1, 12)).astype(np.float64)   # the palm and the thumb's metacarpal (thenar)
    palm_xy = frame.palm_coordinates(p)
    landmarks = palm_landmarks(frame)
    # the back of the hand from past the wrist crease to the knuckles
    dorsum = back_side * off_finger * _smoothstep(-0.1, 0.05, (palm_xy[:, 1] - landmarks["wrist"][1]) / landmarks["length"][0])
    return SkinRegions(
        position=p, palm_side=palm_side, back_side=back_side, nail=nail,
        nail_base=nail * _smoothstep(-0.62, -0.85, along),
        nail_edge=nail * _smoothstep(0.72, 0.9, along),
        fold=distal * np.exp(-0.5 * ((oval - 1.05) / 0.08) ** 2) * (along < 0.5),
        fingertip=distal * _smoothstep(0.45, 0.95, an.t),
        knuckles=back_side * near_knuckle.max(axis=1),
        crease=crease,
        wrinkles=interphalangeal * (0.5 + 0.5 * np.sin(an.t * an.length / 0.0016 * np.pi)) ** 4,
        palm_xy=palm_xy, palm=palm_side * off_finger, dorsum=dorsum,
        tendons=dorsum * _extensor_tendons(palm_xy, landmarks),
        # a few loose folds across each MCP knuckle, ~2.5 mm apart
        knuckle_wrinkles=back_side * near_knuckle[:, [0, 3, 6, 9]].max(axis=1)
        * (0.5 + 0.5 * np.sin(an.t * an.length / 0.0025 * np.pi)) ** 6,
        landmarks=landmarks,
    )


def palm_landmarks(frame: HandFrame) -> dict[str, np.ndarray]:
    """Palm-plane (2,) points the palm creases, tendons and veins are drawn between: the wrist
    joint, the MCP joints of index, middle, ring and pinky, the thumb's MCP, the skin over the
    four MCP knuckles and the thumb's, and the palm's length (wrist to middle MCP, as a (1,) array)."""
    j = frame.palm_coordinates(frame.joints)
    k = frame.palm_coordinates(frame.knuckles)
    return {"wrist": j[0], "index": j[1], "middle": j[4], "ring": j[10], "pinky": j[7], "thumb": j[14],
            "index_knuckle": k[0], "middle_knuckle": k[3], "ring_knuckle": k[9], "pinky_knuckle": k[6],
            "thumb_knuckle": k[13], "length": np.array([np.linalg.norm(j[4] - j[0])])}


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 24) -> np.ndarray:
    """(n, 2) points of the quadratic Bezier curve p0 -> p2 pulled toward p1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _polyline_distance(points: np.ndarray, line: np.ndarray, reach: float = 0.008) -> tuple[np.ndarray, np.ndarray]:
    """Distance (N,) from 2D points to a polyline (K, 2), and where along it (0..1 of its length)
    the nearest point lies; points farther than ``reach`` from the line's bounding box get an
    infinite distance (every profile drawn with it is ~0 there), which keeps this cheap."""
    dist, along = np.full(len(points), np.inf), np.zeros(len(points))
    near = np.flatnonzero(((points >= line.min(axis=0) - reach) & (points <= line.max(axis=0) + reach)).all(axis=1))
    if not len(near):
        return dist, along
    p = points[near]
    a, ab = line[:-1], np.diff(line, axis=0)
    seg_len = np.linalg.norm(ab, axis=1)
    t = np.clip(np.einsum("nkc,kc->nk", p[:, None] - a[None], ab) / np.maximum(seg_len**2, 1e-18), 0.0, 1.0)
    offset = p[:, None] - (a[None] + t[..., None] * ab[None])
    d2 = np.einsum("nkc,nkc->nk", offset, offset)
    k = d2.argmin(axis=1)
    n = np.arange(len(p))
    dist[near] = np.sqrt(d2[n, k])
    along[near] = (np.concatenate([[0.0], np.cumsum(seg_len)])[k] + t[n, k] * seg_len[k]) / max(seg_len.sum(), 1e-12)
    return dist, along


def _extensor_tendons(palm_xy: np.ndarray, lm: dict[str, np.ndarray]) -> np.ndarray:
    """Ridges over the four extensor digitorum tendons (from close together over the wrist, under
    the extensor retinaculum, fanning out to the MCP knuckles) and extensor pollicis longus (to
    the thumb's MCP), ~2.5 mm wide, fading in past the wrist and out over the knuckle."""
    length = float(lm["length"][0])
    out = np.zeros(len(palm_xy))
    starts = {"index": 0.07, "middle": 0.02, "ring": -0.03, "pinky": -0.08}   # radial offsets at the wrist
    lines = [(lm["wrist"] + length * np.array([du, 0.12]), lm[f"{name}_knuckle"], 1.0) for name, du in starts.items()]
    lines.append((lm["wrist"] + length * np.array([0.16, 0.02]), lm["thumb_knuckle"], 0.7))
    for start, end, strength in lines:
        d, along = _polyline_distance(palm_xy, np.stack([start, end]))
        envelope = _smoothstep(0.05, 0.4, along) * _smoothstep(1.0, 0.85, along)
        out = np.maximum(out, strength * envelope * np.exp(-0.5 * (d / 0.0011) ** 2))
    return out


def palm_creases(r: SkinRegions, rng: np.random.Generator) -> np.ndarray:
    """Depth (N,) 0..1 of one person's palm creases: the distal transverse ("heart"), proximal
    transverse ("head") and thenar ("life") lines placed from the joints (control points jittered
    by ~2 mm per person), each ~1 mm wide with its own depth, plus 2-6 faint minor creases."""
    lm = r.landmarks
    length = float(lm["length"][0])
    w, m, ring, pinky, index, thumb = lm["wrist"], lm["middle"], lm["ring"], lm["pinky"], lm["index"], lm["thumb"]
    notch = index + 0.55 * (thumb - index)               # radial border between the index and thumb bases
    lines = [
        (pinky + length * np.array([-0.12, -0.08]), ring + length * np.array([0.0, -0.10]), 0.5 * (index + m)),
        (notch, m + length * np.array([-0.05, -0.30]), pinky + length * np.array([-0.08, -0.35])),
        (notch + length * np.array([0.0, -0.03]), w + length * np.array([-0.02, 0.45]), w + length * np.array([0.12, 0.03])),
    ]
    on = np.flatnonzero(r.palm > 0.01)
    xy = r.palm_xy[on]
    depth = np.zeros(len(on))
    for p0, p1, p2 in lines:
        jitter = rng.normal(0.0, 0.002, size=(3, 2))
        d, _ = _polyline_distance(xy, _bezier(p0 + jitter[0], p1 + jitter[1], p2 + jitter[2]))
        depth = np.maximum(depth, rng.uniform(0.6, 1.0) * np.exp(-0.5 * (d / rng.uniform(0.0004, 0.0006)) ** 2))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    for _ in range(int(rng.integers(2, 7))):
        centre = rng.uniform(lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo))
        direction = rng.normal(size=2)
        half = rng.uniform(0.006, 0.015) * direction / np.linalg.norm(direction)
        d, along = _polyline_distance(xy, _bezier(centre - half, centre + rng.normal(0, 0.002, 2), centre + half, 8))
        depth = np.maximum(depth, rng.uniform(0.2, 0.45) * np.sin(np.pi * along) * np.exp(-0.5 * (d / 0.0003) ** 2))
    out = np.zeros(len(r.palm))
    out[on] = depth * r.palm[on]
    return out


def dorsal_veins(r: SkinRegions, rng: np.random.Generator) -> np.ndarray:
    """Prominence (N,) 0..1 of one person's dorsal veins: 3-5 dorsal metacarpal veins meandering
    from the wrist toward the finger webs and the dorsal venous arch across them, each 2-4 mm
    wide and coming and going along its length (veins dip under fat)."""
    lm = r.landmarks
    length = float(lm["length"][0])
    knuckles = [lm[f"{name}_knuckle"] for name in ("thumb", "index", "middle", "ring", "pinky")]
    webs = [0.5 * (a + b) for a, b in zip(knuckles[:-1], knuckles[1:])]
    on = np.flatnonzero(r.dorsum > 0.01)
    xy = r.palm_xy[on]
    lines = []
    for web in rng.choice(len(webs), size=int(rng.integers(3, 6)), replace=True):
        start = lm["wrist"] + length * np.array([rng.uniform(-0.25, 0.25), rng.uniform(0.0, 0.15)])
        end = webs[web] - length * np.array([0.0, rng.uniform(0.05, 0.2)])
        t = np.linspace(0.0, 1.0, 20)[:, None]
        path = start + t * (end - start)
        normal = np.array([-(end - start)[1], (end - start)[0]]) / np.linalg.norm(end - start)
        wiggle = sum(rng.uniform(0.001, 0.004) * np.sin(np.pi * k * t + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3))
        lines.append(path + (wiggle - wiggle[0] * (1 - t) - wiggle[-1] * t) * normal)
    arch_v = rng.uniform(0.45, 0.65) * length
    lines.append(_bezier(np.array([lm["pinky"][0] - 0.1 * length, arch_v - 0.1 * length]),
                         np.array([lm["middle"][0], arch_v + 0.1 * length]),
                         np.array([lm["thumb"][0], arch_v - 0.15 * length])))
    veins = np.zeros(len(on))
    for line in lines:
        d, along = _polyline_distance(xy, line)
        knots = rng.uniform(0.0, 1.0, 6) ** 0.7                   # strength along the vein: comes and goes
        strength = np.interp(along, np.linspace(0, 1, 6), knots)
        veins = np.maximum(veins, strength * np.exp(-0.5 * (d / rng.uniform(0.001, 0.0016)) ** 2))
    out = np.zeros(len(r.dorsum))
    out[on] = veins * r.dorsum[on]
    return out


@dataclass(frozen=True)
class SkinDetail:
    """One person's skin detail, per texel (N,): palm crease depth, vein and tendon prominence,
    knuckle folds (all 0..1), moisture (about -1..1, low frequency), micro-relief (unit std,
    texel scale), and a dryness offset of the whole skin's roughness."""

    lines: np.ndarray
    veins: np.ndarray
    tendons: np.ndarray
    folds: np.ndarray
    moisture: np.ndarray
    micro: np.ndarray
    dryness: float


def skin_detail(r: SkinRegions, seed: int, size: int) -> SkinDetail:
    """The detail of the person ``seed`` on regions ``r`` of a ``size`` texture, from its own
    generator, so the tone and noise drawn by :func:`skin_textures` stay what they were."""
    rng = np.random.default_rng([int(seed), 19])
    lines = palm_creases(r, rng)
    veins = dorsal_veins(r, rng) * rng.uniform(0.0, 1.0) ** 1.5    # many hands show faint veins
    tendons = r.tendons * rng.uniform(0.3, 1.0)                    # leaner hands show more
    folds = r.knuckle_wrinkles * rng.uniform(0.5, 1.0)
    dryness = float(rng.normal(0.0, 0.04))
    moisture = value_noise(r.position, 0.02, rng)
    micro = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.7, mode="wrap").ravel()
    return SkinDetail(lines, veins, tendons, folds, moisture, micro / (micro.std() + 1e-12), dryness)


_REGIONS_CACHE: dict[tuple[str, int], SkinRegions] = {}


def _regions_of(model, size: int) -> SkinRegions:
    """:func:`skin_regions` of a model's right rest hand at one texture size, computed once per
    (model digest, size): every seed paints on the same geometry."""
    key = (str(model.identity["digest"]), size)
    if key not in _REGIONS_CACHE:
        layer = model.layers["right"]
        vertices = layer.v_template.detach().cpu().numpy().astype(np.float64)
        joints = layer.J_regressor.detach().cpu().numpy() @ vertices
        surface = rasterize_uv(vertices, model.faces("right"), model.uv_layout("right"), size)
        _REGIONS_CACHE.clear()  # one model and size at a time (~140 MB at 1024 texels)
        _REGIONS_CACHE[key] = skin_regions(surface, hand_frame(vertices, joints))
    return _REGIONS_CACHE[key]


def skin_textures(model, side: str, seed: int, size: int = 512, user: UserSkin | None = None) -> SkinTextures:
    """Skin maps for one hand of ``model`` (a :class:`HandModel`), deterministic per ``seed``.

    The texture is painted on the right hand's rest surface; the left hand is its mirror with
    the same UV layout, so the same seed gives both hands of one person the same skin.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', not {side!r}")
    if size < 16:
        raise ValueError(f"texture size {size} is too small (at least 16 texels)")
    r = _regions_of(model, size)
    rng = np.random.default_rng(seed)
    tone = float(rng.uniform(0.0, 1.0))
    undertone = float(rng.normal(0.0, 1.0))
    freckles = float(rng.uniform(0.0, 1.0) < 0.3) * float(rng.uniform(0.2, 1.0)) * (1.0 - tone) ** 2
    p = r.position
    palm_side, back_side, nail, fingertip, knuckles = r.palm_side, r.back_side, r.nail, r.fingertip, r.knuckles
    crease, wrinkles = r.crease, r.wrinkles
    d = skin_detail(r, seed, size)
    lines, veins, tendons, folds, dryness, moisture, micro = (d.lines, d.veins, d.tendons, d.folds, d.dryness,
                                                              d.moisture, d.micro)

    # -- albedo, authored in sRGB
    base = tone_srgb(tone) * (1.0 + 0.025 * undertone * np.array([1.0, -0.3, -1.0]))
    low = _fbm(p, 0.03, 2, rng)
    mid = _fbm(p, 0.006, 2, rng)
    fine = value_noise(p, 0.0007, rng)
    spots = _smoothstep(0.35, 0.75, value_noise(p, 0.0012, rng)) * freckles * back_side
    shade = 1.0 + 0.06 * low + 0.035 * mid + 0.02 * fine
    rgb = base[None] * shade[:, None]
    rgb *= 1.0 - spots[:, None] * np.array([0.12, 0.2, 0.28])[None]   # freckles: browner, not grey
    palm_mix = palm_side * (0.15 + 0.55 * tone)
    rgb = rgb * (1 - palm_mix[:, None]) + (PALM_SRGB * (1.0 - 0.25 * tone) * shade[:, None]) * palm_mix[:, None]
    red = np.clip(0.45 * knuckles + 0.35 * fingertip + 0.08 * palm_side + 0.05 * np.clip(mid, 0, 1), 0, 1)
    rgb *= (1.0 - red[:, None] * np.array([0.0, 0.18, 0.16])[None])
    rgb *= (1.0 - 0.07 * crease - 0.04 * wrinkles - 0.14 * lines - 0.04 * folds + 0.03 * tendons)[:, None]
    # blood in veins seen through the skin: less red and green, more so on lighter skin
    rgb *= 1.0 - (veins * (1.15 - tone))[:, None] * np.array([0.10, 0.06, 0.01])[None]
    nail_rgb = 0.45 * rgb + 0.55 * NAIL_BED_SRGB * (1.0 - 0.15 * tone) + 0.03 * mid[:, None]
    nail_rgb = nail_rgb + (NAIL_WHITE_SRGB - nail_rgb) * np.maximum(r.nail_base, r.nail_edge)[:, None]
    rgb = rgb * (1 - nail[:, None]) + nail_rgb * nail[:, None]
    albedo = srgb_to_linear(np.clip(rgb, 0.0, 1.0))

    # -- roughness and height
    cavities = np.clip(crease + lines + wrinkles + folds, 0.0, 1.0)
    roughness = (0.5 + dryness + 0.06 * mid + 0.03 * fine + 0.04 * moisture + 0.08 * palm_side - 0.06 * fingertip
                 + 0.1 * cavities + 0.04 * knuckles - 0.04 * tendons)
    roughness = roughness * (1 - nail) + (0.2 + 0.03 * fine) * nail
    bump = (0.5 + 0.05 * fine + 0.02 * mid + 0.02 * micro - 0.35 * crease - 0.15 * wrinkles - 0.3 * lines
            - 0.12 * folds + 0.3 * tendons + 0.2 * veins + 0.12 * nail - 0.25 * r.fold * (1 - nail))
    # Principled "Specular IOR Level": 0.5 is F0 = 0.04 (IOR 1.5); skin's IOR ~1.4 gives F0 ~0.028,
    # i.e. ~0.35; less in cavities (their highlights are shadowed), more on moist fingertip pads,
    # keratin nails ~0.5
    specular = 0.35 * (1.0 + 0.15 * moisture + 0.1 * fingertip) * (1.0 - 0.5 * cavities)
    specular = specular * (1 - nail) + 0.5 * nail

    if user is not None:
        albedo = _resize(user.albedo, size).reshape(-1, 3)
        if user.roughness is not None:
            roughness = _resize(user.roughness[..., None], size).ravel()
        tone = _tone_of(albedo[nail.ravel() < 0.5])
    radius = SUBSURFACE_RADIUS_MM * rng.uniform(0.85, 1.15)
    shape2, shape3 = (size, size), (size, size, 3)
    return SkinTextures(
        albedo=np.clip(albedo, 0, 1).reshape(shape3).astype(np.float32),
        roughness=np.clip(roughness, 0.05, 1).reshape(shape2).astype(np.float32),
        bump=np.clip(bump, 0, 1).reshape(shape2).astype(np.float32),
        nail_mask=np.clip(nail, 0, 1).reshape(shape2).astype(np.float32),
        subsurface_radius=radius.astype(np.float32),
        tone=tone,
        seed=int(seed),
        specular=np.clip(specular, 0, 1).reshape(shape2).astype(np.float32),
    )


def _tone_of(albedo_linear: np.ndarray) -> float:
    """The palette tone whose luminance matches the median skin luminance of a user's map."""
    lum = np.median(linear_to_srgb(albedo_linear) @ np.array([0.2126, 0.7152, 0.0722]))
    grid = np.linspace(0.0, 1.0, 101)
    pal = np.array([tone_srgb(t) @ np.array([0.2126, 0.7152, 0.0722]) for t in grid])
    return float(grid[np.argmin(np.abs(pal - lum))])


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an (H, W, C) float image to (size, size, C)."""
    h, w = image.shape[:2]
    zoom = (size / h, size / w) + (1,) * (image.ndim - 2)
    return ndimage.zoom(image.astype(np.float64), zoom, order=1, mode="nearest", grid_mode=True)


def load_user_skin(albedo_png: bytes, roughness_png: bytes | None = None, where: str = "user skin") -> UserSkin:
    """Decode a user's albedo PNG (sRGB, square, in the model's UV layout) and optional roughness PNG.

    Only image data is decoded (PIL), never anything executable; ``where`` names the source
    (e.g. the S3 key) in errors.
    """
    from PIL import Image, UnidentifiedImageError

    def read(data: bytes, what: str) -> np.ndarray:
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{where}: {what} is not a readable image ({e})") from None
        if img.format != "PNG":
            raise ValueError(f"{where}: {what} must be a PNG, got {img.format}")
        if img.width != img.height or img.width < 16:
            raise ValueError(f"{where}: {what} must be square and at least 16 px, got {img.width}x{img.height}")
        arr = np.asarray(img.convert("RGB" if what == "albedo" else "L"), dtype=np.float64)
        return arr / 255.0

    albedo = srgb_to_linear(read(albedo_png, "albedo"))
    roughness = read(roughness_png, "roughness") if roughness_png is not None else None
    return UserSkin(albedo=albedo.astype(np.float32), roughness=None if roughness is None else roughness.astype(np.float32))


def sample_texture(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of an (S, S, C) image (top row first) at OBJ-style uv (N, 2) -> (N, C)."""
    s = image.shape[0]
    x = np.clip(uv[:, 0] * s - 0.5, 0, s - 1)
    y = np.clip((1.0 - uv[:, 1]) * s - 0.5, 0, s - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, s - 1), np.minimum(y0 + 1, s - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x1] * fx * (1 - fy)
            + image[y1, x0] * (1 - fx) * fy + image[y1, x1] * fx * fy)


def vertex_albedo(textures: SkinTextures, layout: UVLayout, n_vertices: int) -> np.ndarray:
    """Linear albedo (V, 3) at each vertex: the texture averaged over the vertex's UV copies.

    For the fast raster preview, which colours vertices instead of sampling a texture.
    """
    values = sample_texture(textures.albedo, layout.uv)
    out = np.zeros((n_vertices, 3))
    count = np.zeros(n_vertices)
    np.add.at(out, layout.vertex_ids, values)
    np.add.at(count, layout.vertex_ids, 1.0)
    return (out / np.maximum(count, 1.0)[:, None]).astype(np.float32)
