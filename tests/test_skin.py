"""UV layouts and procedural skin textures: contract, determinism, anatomy, user maps."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from handsynth.keypoints import TIP_VERTEX_IDS
from handsynth.render import skin

SIZE = 128


@pytest.fixture(scope="module")
def textures(hand_model):
    return {seed: skin.skin_textures(hand_model, "right", seed, size=SIZE) for seed in (0, 1)}


def test_uv_layout_covers_every_face_and_mirrors_onto_the_left(hand_model):
    right, left = hand_model.uv_layout("right"), hand_model.uv_layout("left")
    faces = hand_model.faces("right")
    assert right.uv.dtype == np.float32 and right.faces_uv.dtype == np.int32
    assert right.faces_uv.shape == faces.shape
    assert right.uv.min() >= 0.0 and right.uv.max() <= 1.0
    # each face corner's coordinate belongs to that corner's vertex
    assert np.array_equal(right.vertex_ids[right.faces_uv], faces)
    assert np.array_equal(left.vertex_ids[left.faces_uv], hand_model.faces("left"))
    # no face collapses to a point or a line in UV space
    c = right.corner_uv().astype(np.float64)
    e1, e2 = c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    assert area.min() > 0
    # the same vertex gets the same coordinate in the left hand's (re-wound) faces
    assert np.allclose(np.sort(left.uv[left.faces_uv], axis=1), np.sort(right.uv[right.faces_uv], axis=1))


def test_textures_are_deterministic_per_seed(hand_model, textures):
    again = skin.skin_textures(hand_model, "right", 0, size=SIZE)
    a = textures[0]
    for field in ("albedo", "roughness", "bump", "nail_mask", "subsurface_radius", "specular"):
        assert np.array_equal(getattr(a, field), getattr(again, field)), field
    assert a.tone == again.tone
    b = textures[1]
    assert not np.allclose(a.albedo, b.albedo)


def test_texture_contract(textures):
    t = textures[0]
    assert t.albedo.shape == (SIZE, SIZE, 3) and t.albedo.dtype == np.float32
    for m in (t.roughness, t.bump, t.nail_mask, t.specular):
        assert m.shape == (SIZE, SIZE) and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 1.0
    assert t.albedo.min() >= 0.0 and t.albedo.max() <= 1.0
    r = t.subsurface_radius
    assert r.shape == (3,) and r[0] > r[1] > r[2] > 0 and 1.0 < r[0] < 10.0  # millimetres, red largest
    assert 0.0 <= t.tone <= 1.0 and t.seed == 0


def test_tones_span_the_human_range(hand_model):
    tones = [skin.skin_textures(hand_model, "right", s, size=32).tone for s in range(24)]
    assert min(tones) < 0.2 and max(tones) > 0.8
    light, dark = skin.srgb_to_linear(skin.tone_srgb(0.0)), skin.srgb_to_linear(skin.tone_srgb(1.0))
    assert light.mean() > 6 * dark.mean()  # very light to very dark albedo, not one pale tone


def _vertex_maps(hand_model, t):
    """Per-vertex albedo, nail and bump values, and which vertices face the palm."""
    layout = hand_model.uv_layout("right")
    v = hand_model.layers["right"].v_template.numpy()
    albedo = skin.vertex_albedo(t, layout, len(v))
    nail = np.zeros(len(v))
    np.maximum.at(nail, layout.vertex_ids, skin.sample_texture(t.nail_mask[..., None], layout.uv)[:, 0])
    return v, albedo, nail


def test_anatomy_nails_on_fingertips_and_palms_lighter(hand_model, textures):
    t = textures[0]
    v, albedo, nail = _vertex_maps(hand_model, t)
    joints = hand_model.layers["right"].J_regressor.numpy() @ v
    # nails: on every finger, near its tip, on the back of the hand
    tips = v[list(TIP_VERTEX_IDS.values())]
    nail_v = np.flatnonzero(nail > 0.5)
    assert len(nail_v) > 10
    nearest_tip = np.linalg.norm(v[nail_v][:, None] - tips[None], axis=2)
    assert nearest_tip.min(axis=1).max() < 0.025
    assert set(nearest_tip.argmin(axis=1)) == set(range(5))
    # palm vs back: luminance on the palm side of the metacarpus is higher
    frame = skin.hand_frame(v.astype(np.float64), joints)
    centre = joints[[0, 1, 4, 7, 10]].mean(axis=0)
    near = np.linalg.norm(v - centre, axis=1) < 0.035
    side = (v - centre) @ frame.palm_normal
    lum = albedo @ np.array([0.2126, 0.7152, 0.0722])
    assert lum[near & (side > 0.005)].mean() > 1.05 * lum[near & (side < -0.005)].mean()


def test_user_albedo_replaces_the_procedural_one(hand_model):
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 150, 120
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    user = skin.load_user_skin(buf.getvalue(), where="s3://lib/library/skin/a/albedo.png")
    t = skin.skin_textures(hand_model, "right", 5, size=SIZE, user=user)
    assert np.allclose(t.albedo, skin.srgb_to_linear(np.array([200, 150, 120]) / 255.0), atol=1e-5)
    assert t.nail_mask.max() > 0.9  # nails still come from the geometry
    with pytest.raises(ValueError, match="lib/library/skin/b.png.*PNG"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG")
        skin.load_user_skin(buf.getvalue(), where="lib/library/skin/b.png")
    with pytest.raises(ValueError, match="square"):
        buf = io.BytesIO()
        Image.fromarray(rgb[:32]).save(buf, format="PNG")
        skin.load_user_skin(buf.getvalue())


def test_real_mano_folder_gets_a_cached_layout_and_textures(tmp_path, monkeypatch, hand_model):
    """MANO's files carry no UVs: a layout is computed once per model digest and reused."""
    from handsynth.hand_model import mano_files
    from handsynth.hand_model.model import HandModel

    source = hand_model.identity["source"]
    right = mano_files.read_mano_file(f"{source}/MANO_RIGHT.npz")
    left = mano_files.read_mano_file(f"{source}/MANO_LEFT.npz")
    right["v_template"] = right["v_template"] * 1.03  # another model: another digest
    left["v_template"] = left["v_template"] * 1.03
    left["f"] = left["f"][:, [1, 2, 0]]  # same faces, each starting at another corner
    folder = tmp_path / "mano"
    mano_files.write_npz(folder / "MANO_RIGHT.npz", right)
    mano_files.write_npz(folder / "MANO_LEFT.npz", left)
    monkeypatch.setenv("HANDSYNTH_CACHE", str(tmp_path / "cache"))
    mano = HandModel.from_mano_folder(folder)
    layout = mano.uv_layout("left")
    assert np.array_equal(layout.vertex_ids[layout.faces_uv], mano.faces("left"))
    cached = list((tmp_path / "cache" / "uv").glob(f"*{mano.identity['digest']}.npz"))
    assert len(cached) == 1
    # a second model object reads the cached layout instead of charting again
    again = HandModel.from_mano_folder(folder).uv_layout("right")
    assert np.array_equal(again.uv, mano.uv_layout("right").uv)
    t = skin.skin_textures(mano, "left", 3, size=64)
    assert t.nail_mask.max() > 0.5 and t.albedo.shape == (64, 64, 3)


DETAIL_SIZE = 256


@pytest.fixture(scope="module")
def detailed(hand_model):
    """Regions, textures and detail of a few people at a texture size that resolves 1 mm creases."""
    regions = skin._regions_of(hand_model, DETAIL_SIZE)
    people = {seed: (skin.skin_textures(hand_model, "right", seed, size=DETAIL_SIZE),
                     skin.skin_detail(regions, seed, DETAIL_SIZE)) for seed in range(6)}
    return regions, people


def test_palm_creases_cross_the_palm_and_differ_per_person(detailed):
    r, people = detailed
    length = float(r.landmarks["length"][0])
    palm_u = r.palm_xy[r.palm > 0.5, 0]
    fields = []
    for seed, (tex, d) in people.items():
        assert np.all(d.lines[r.palm == 0] == 0)                           # only on the palm
        deep = d.lines > 0.5
        u, v = r.palm_xy[deep, 0], r.palm_xy[deep, 1] - r.landmarks["wrist"][1]
        assert u.max() - u.min() > 0.6 * (palm_u.max() - palm_u.min())  # lines run across the palm
        assert v.min() < 0.15 * length and v.max() > 0.7 * length       # from near the wrist to the finger bases
        plain = (r.palm > 0.9) & (d.lines < 0.05) & (r.crease < 0.05)
        bump, albedo = tex.bump.ravel(), tex.albedo.reshape(-1, 3).sum(axis=1)
        assert bump[deep].mean() < np.median(bump[plain]) - 0.1          # a crease is a groove
        assert albedo[deep].mean() < 0.95 * np.median(albedo[plain])     # and a little darker
        spec = tex.specular.ravel()
        assert spec[deep].mean() < 0.8 * np.median(spec[plain])          # its highlight is shadowed
        fields.append(d.lines)
    assert np.corrcoef(fields[0], fields[1])[0, 1] < 0.9                 # each person has their own


def test_tendons_ridge_the_back_of_the_hand_toward_every_knuckle(detailed, hand_model):
    r, people = detailed
    assert np.all(r.tendons[r.dorsum == 0] == 0) and r.tendons.max() > 0.9
    ridge = r.palm_xy[r.tendons > 0.5]
    for name in ("index", "middle", "ring", "pinky", "thumb"):
        knuckle = r.landmarks[f"{name}_knuckle"]
        assert np.linalg.norm(ridge - knuckle, axis=1).min() < 0.015, name   # a ridge reaches each knuckle
    tex, d = people[0]
    on, off = d.tendons > 0.5 * d.tendons.max(), (r.dorsum > 0.9) & (r.tendons < 0.02) & (d.veins < 0.05)
    assert tex.bump.ravel()[on].mean() > np.median(tex.bump.ravel()[off]) + 0.05


def test_veins_are_raised_and_bluish_on_the_back_of_light_hands(detailed):
    r, people = detailed
    shown = 0
    for seed, (tex, d) in people.items():
        assert np.all(d.veins[r.dorsum == 0] == 0)
        vein, plain = d.veins > 0.3, (r.dorsum > 0.9) & (d.veins < 0.02) & (r.tendons < 0.05)
        if tex.tone > 0.5 or vein.sum() < 20:
            continue
        shown += 1
        albedo = tex.albedo.reshape(-1, 3)
        red_over_blue = albedo[:, 0] / albedo[:, 2]
        assert red_over_blue[vein].mean() < np.median(red_over_blue[plain])
        assert tex.bump.ravel()[vein].mean() > np.median(tex.bump.ravel()[plain])
    assert shown >= 1                                                     # seeds 0-5 include a light hand with veins


def test_micro_relief_roughness_and_specular_vary_like_skin(detailed):
    r, people = detailed
    medians = []
    for tex, d in people.values():
        skin_texels = (tex.nail_mask.ravel() < 0.01) & (r.dorsum > 0.9) & (d.veins < 0.05) & (r.tendons < 0.05)
        bump = tex.bump.ravel()[skin_texels]
        assert np.corrcoef(bump, d.micro[skin_texels])[0, 1] > 0.2     # texel-scale relief reaches the bump
        spec = tex.specular.ravel()
        assert 0.3 < np.median(spec[skin_texels]) < 0.4                  # F0 ~0.028: skin's IOR ~1.4
        assert spec[tex.nail_mask.ravel() > 0.9].mean() == pytest.approx(0.5, abs=0.02)
        medians.append(np.median(tex.roughness.ravel()[skin_texels]))
    assert np.ptp(medians) > 0.03                                         # dry and oily skins
