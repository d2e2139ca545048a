"""Materials of the things people wear on their hands and wrists: watches, bracelets, rings; seeded.

The geometry comes with the forearms (labels 37-40, docs/ARCHITECTURE.md); this module decides
what each piece is made of, as Principled BSDF parameters (Blender's input names) that the Cycles
worker can set and a manifest row can record. Metals are metallic with their measured specular
colour; everything else is a dielectric with a diffuse colour:

* metal colours: linear reflectance at normal incidence (F0) from the physically based shading
  tables (Hoffman, "Physically Based Shading in Theory and Practice", SIGGRAPH 2013 course;
  Lagarde's table for titanium and platinum); rose gold is taken halfway between gold and copper;
* finishes: polished metal roughness 0.08-0.2, brushed 0.25-0.4; leather 0.45-0.7 with a
  little sheen; silicone and plastic 0.3-0.7; watch glass is clear (transmission 1, IOR 1.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handsynth.render.cloth import GARMENT_SRGB
from handsynth.render.skin import srgb_to_linear

ACCESSORY_KINDS = ("watch", "bracelet", "ring")

#: Linear F0 of metals (RGB).
METALS = {
    "gold": (1.000, 0.766, 0.336),
    "silver": (0.972, 0.960, 0.915),
    "aluminium": (0.913, 0.922, 0.924),
    "steel": (0.562, 0.565, 0.578),      # iron's F0: polished stainless looks the same to a camera
    "titanium": (0.542, 0.497, 0.449),
    "platinum": (0.673, 0.637, 0.585),
    "copper": (0.955, 0.637, 0.538),
    "rose_gold": (0.978, 0.702, 0.437),  # between gold and copper
}
#: sRGB colours of leathers (black, dark brown, tan, cognac), silicone/plastic straps and dials.
LEATHER_SRGB = np.array([[0.06, 0.05, 0.05], [0.25, 0.15, 0.09], [0.55, 0.36, 0.20], [0.45, 0.22, 0.10]])
DIAL_SRGB = np.array([[0.03, 0.03, 0.035], [0.92, 0.92, 0.90], [0.10, 0.17, 0.40], [0.20, 0.30, 0.22], [0.55, 0.56, 0.58]])
BEAD_SRGB = np.array([[0.30, 0.18, 0.10], [0.05, 0.05, 0.05], [0.85, 0.82, 0.76], [0.25, 0.45, 0.55], [0.55, 0.20, 0.25]])


@dataclass(frozen=True)
class SurfaceMaterial:
    """One Principled BSDF: ``base_color`` linear RGB (a metal's F0 when ``metallic`` is 1)."""

    name: str
    base_color: tuple[float, float, float]
    metallic: float
    roughness: float
    specular: float = 0.5        # "Specular IOR Level" (0.5 = F0 0.04)
    sheen: float = 0.0
    coat: float = 0.0
    transmission: float = 0.0

    def principled(self) -> dict[str, object]:
        """Input name -> value for Blender's Principled BSDF node."""
        return {"Base Color": (*self.base_color, 1.0), "Metallic": self.metallic, "Roughness": self.roughness,
                "Specular IOR Level": self.specular, "Sheen Weight": self.sheen, "Coat Weight": self.coat,
                "Transmission Weight": self.transmission, "IOR": 1.5}

    def to_record(self) -> dict:
        return {"name": self.name, "base_color": [float(c) for c in self.base_color], "metallic": float(self.metallic),
                "roughness": float(self.roughness), "specular": float(self.specular), "sheen": float(self.sheen),
                "coat": float(self.coat), "transmission": float(self.transmission)}


@dataclass(frozen=True)
class AccessoryMaterials:
    """The materials of one accessory's parts (watch: case, strap, dial, glass; bracelet: band and,
    for beaded ones, beads; ring: band)."""

    kind: str
    parts: dict[str, SurfaceMaterial]
    seed: int

    def to_record(self) -> dict:
        return {"kind": self.kind, "seed": int(self.seed), "parts": {k: m.to_record() for k, m in self.parts.items()}}


def _pick(rng: np.random.Generator, options: dict[str, float]) -> str:
    """One key, drawn with the given weights."""
    names = list(options)
    weights = np.array([options[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def metal(rng: np.random.Generator, options: dict[str, float], brushed_share: float = 0.3) -> SurfaceMaterial:
    """A metal drawn from ``options`` (name -> weight), polished or brushed."""
    name = _pick(rng, options)
    brushed = rng.uniform() < brushed_share
    roughness = rng.uniform(0.25, 0.4) if brushed else rng.uniform(0.08, 0.2)
    return SurfaceMaterial(f"{'brushed' if brushed else 'polished'} {name}", METALS[name], 1.0, float(roughness))


def dielectric(name: str, srgb: np.ndarray, roughness: float, **extra: float) -> SurfaceMaterial:
    """A non-metal of sRGB colour ``srgb``."""
    rgb = srgb_to_linear(np.clip(np.asarray(srgb, dtype=float), 0.0, 1.0))
    return SurfaceMaterial(name, (float(rgb[0]), float(rgb[1]), float(rgb[2])), 0.0, float(roughness), **extra)


def _strap(rng: np.random.Generator, case: SurfaceMaterial) -> SurfaceMaterial:
    kind = _pick(rng, {"leather": 0.35, "metal": 0.25, "silicone": 0.25, "fabric": 0.15})
    colour = GARMENT_SRGB[int(rng.integers(len(GARMENT_SRGB)))]
    if kind == "metal":      # a metal bracelet matches a metal case; a plastic watch gets a steel one
        if case.metallic:
            return SurfaceMaterial(f"bracelet of {case.name}", case.base_color, 1.0, min(1.0, case.roughness + 0.05))
        return metal(rng, {"steel": 1.0})
    if kind == "leather":
        return dielectric("leather", LEATHER_SRGB[int(rng.integers(len(LEATHER_SRGB)))], rng.uniform(0.45, 0.7), sheen=0.2)
    if kind == "silicone":
        return dielectric("silicone", colour, rng.uniform(0.4, 0.7))
    return dielectric("fabric", colour, rng.uniform(0.8, 0.95), sheen=0.4)


def accessory_materials(kind: str, seed: int) -> AccessoryMaterials:
    """The materials of one ``kind`` of accessory, deterministic per ``seed``."""
    if kind not in ACCESSORY_KINDS:
        raise ValueError(f"accessory kind {kind!r}: choose one of {ACCESSORY_KINDS}")
    rng = np.random.default_rng([int(seed), 37, ACCESSORY_KINDS.index(kind)])
    if kind == "watch":
        if rng.uniform() < 0.2:      # a sports / digital watch: plastic case
            case = dielectric("plastic", GARMENT_SRGB[int(rng.integers(len(GARMENT_SRGB)))], rng.uniform(0.3, 0.5), coat=0.3)
        else:
            case = metal(rng, {"steel": 0.5, "gold": 0.15, "titanium": 0.1, "rose_gold": 0.1, "aluminium": 0.1, "silver": 0.05})
        parts = {"case": case, "strap": _strap(rng, case),
                 "dial": dielectric("dial", DIAL_SRGB[int(rng.integers(len(DIAL_SRGB)))], rng.uniform(0.2, 0.5)),
                 "glass": SurfaceMaterial("glass", (1.0, 1.0, 1.0), 0.0, 0.02, transmission=1.0)}
    elif kind == "bracelet":
        style = _pick(rng, {"chain": 0.4, "beads": 0.25, "leather": 0.2, "string": 0.15})
        if style == "chain":
            parts = {"band": metal(rng, {"gold": 0.35, "silver": 0.35, "steel": 0.2, "rose_gold": 0.1}, 0.1)}
        elif style == "beads":
            bead = dielectric("bead", BEAD_SRGB[int(rng.integers(len(BEAD_SRGB)))], rng.uniform(0.15, 0.6), coat=0.5)
            parts = {"band": dielectric("cord", LEATHER_SRGB[int(rng.integers(len(LEATHER_SRGB)))], 0.7), "beads": bead}
        elif style == "leather":
            parts = {"band": dielectric("leather", LEATHER_SRGB[int(rng.integers(len(LEATHER_SRGB)))], rng.uniform(0.45, 0.7),
                                        sheen=0.2)}
        else:
            parts = {"band": dielectric("string", GARMENT_SRGB[int(rng.integers(len(GARMENT_SRGB)))], 0.9, sheen=0.5)}
    else:
        parts = {"band": metal(rng, {"gold": 0.4, "silver": 0.2, "platinum": 0.1, "steel": 0.1, "titanium": 0.1,
                                     "rose_gold": 0.1}, 0.15)}
    return AccessoryMaterials(kind, parts, int(seed))
