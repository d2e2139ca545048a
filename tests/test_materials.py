"""Sleeve fabrics and accessory materials: seeded, tileable, each pattern what it says, records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handsynth.render import accessories, cloth

SIZE = 128


@pytest.fixture(scope="module")
def fabrics():
    return {(p, s): cloth.cloth_textures(s, SIZE, p) for p in cloth.CLOTH_PATTERNS for s in range(3)}


def test_fabrics_are_deterministic_per_seed_and_draw_their_pattern(fabrics):
    for (pattern, seed), t in fabrics.items():
        again = cloth.cloth_textures(seed, SIZE, pattern)
        for field in ("albedo", "roughness", "bump"):
            assert np.array_equal(getattr(t, field), getattr(again, field)), (pattern, field)
        assert t.albedo.shape == (SIZE, SIZE, 3) and t.albedo.dtype == np.float32
        assert 0 <= t.albedo.min() and t.albedo.max() <= 1 and 0 <= t.bump.min() and t.bump.max() <= 1
        assert 0.3 <= t.roughness.min() and t.roughness.max() <= 1.0
    assert not np.array_equal(fabrics[("solid", 0)].albedo, fabrics[("solid", 1)].albedo)
    drawn = {cloth.cloth_textures(s, 32).pattern for s in range(30)}
    assert drawn == set(cloth.CLOTH_PATTERNS)
    with pytest.raises(ValueError, match="tartan"):
        cloth.cloth_textures(0, SIZE, "tartan")


def test_fabrics_tile_without_seams(fabrics):
    """The step across the tile's edge is no larger than the steps inside it, in both directions."""
    for key, t in fabrics.items():
        for image in (t.albedo.sum(axis=-1), t.bump):
            for axis in (0, 1):
                inside = np.abs(np.diff(image, axis=axis)).max()
                first, last = np.take(image, 0, axis=axis), np.take(image, -1, axis=axis)
                assert np.abs(first - last).max() <= 1.05 * inside + 1e-6, key


def _dominant_frequency(signal: np.ndarray) -> int:
    spectrum = np.abs(np.fft.rfft(signal - signal.mean()))
    return int(spectrum[1:].argmax() + 1)


def test_each_pattern_has_its_structure(fabrics):
    stripes = fabrics[("stripes", 0)].albedo.sum(axis=-1)
    assert stripes.mean(axis=1).std() > 5 * stripes.mean(axis=0).std()      # rings around the arm: vary along v only
    assert len(fabrics[("stripes", 0)].colors_srgb) == 2
    knit = fabrics[("knit", 1)]
    ribs = _dominant_frequency(knit.bump.mean(axis=0))                         # ribs run down the arm
    assert 0.0025 <= knit.tile_m / ribs <= 0.0042                              # wales 2.5-4 mm apart
    denim = fabrics[("denim", 2)]
    spectrum = np.abs(np.fft.fft2(denim.bump - denim.bump.mean()))
    fy, fx = np.unravel_index(spectrum.argmax(), spectrum.shape)
    assert fx != 0 and fy != 0                                                 # twill: diagonal ribs
    blue = denim.albedo.reshape(-1, 3).mean(axis=0)
    assert blue[2] > blue[0] or np.ptp(blue) < 0.02                           # indigo (or black denim)
    solid = fabrics[("solid", 0)].albedo
    assert solid.std(axis=(0, 1)).max() < 0.1 * solid.mean() + 0.01           # one colour


def test_fabric_and_accessory_records_are_json(fabrics):
    record = fabrics[("denim", 0)].to_record()
    assert json.loads(json.dumps(record)) == record and record["pattern"] == "denim"
    for kind in accessories.ACCESSORY_KINDS:
        rec = accessories.accessory_materials(kind, 4).to_record()
        assert json.loads(json.dumps(rec)) == rec and rec["kind"] == kind


def test_accessory_materials_are_seeded_physical_and_varied():
    for kind in accessories.ACCESSORY_KINDS:
        assert accessories.accessory_materials(kind, 7) == accessories.accessory_materials(kind, 7)
        names = set()
        for seed in range(60):
            materials = accessories.accessory_materials(kind, seed)
            for part, m in materials.parts.items():
                names.add(m.name)
                assert 0.0 <= m.roughness <= 1.0 and all(0.0 <= c <= 1.0 for c in m.base_color)
                if m.metallic:
                    assert m.base_color in accessories.METALS.values()       # a measured F0
                    assert m.roughness <= 0.45
                node = m.principled()
                assert node["Metallic"] == m.metallic and node["Base Color"][:3] == m.base_color
            if kind == "watch":
                assert set(materials.parts) == {"case", "strap", "dial", "glass"}
                assert materials.parts["glass"].transmission == 1.0
            if kind == "ring":
                assert materials.parts["band"].metallic == 1.0
        assert len(names) >= 5, (kind, names)
    with pytest.raises(ValueError, match="anklet"):
        accessories.accessory_materials("anklet", 0)
