"""Camera and sensor effects: determinism, each effect does what it should, geometry stays put,
records round-trip, shares switch effects independently."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from handsynth.envmaps import tone_map
from handsynth.render import camera_effects as ce

SIZE = 128
BG, FG = 0.05, 0.8          # scene-linear levels of the test picture
BOX = (40, 96, 30, 80)      # rows r0:r1, columns c0:c1 of the bright square (off-centre)


def _picture() -> np.ndarray:
    """Scene-linear (H, W, 3): a bright square on a dark background."""
    img = np.full((SIZE, SIZE, 3), BG)
    r0, r1, c0, c1 = BOX
    img[r0:r1, c0:c1] = FG
    return img


def _luminance(rgb_uint8: np.ndarray) -> np.ndarray:
    return ce.linear_from_tone_mapped(rgb_uint8) @ np.array([0.2126, 0.7152, 0.0722])


def _edges(lum: np.ndarray) -> np.ndarray:
    """Sub-pixel positions of the square's four edges (left, right, top, bottom): where a profile
    across the edge (averaged over the middle of the edge) crosses halfway between the levels
    6 px on either side."""
    r0, r1, c0, c1 = BOX
    rows = lum[(r0 + r1) // 2 - 12:(r0 + r1) // 2 + 12].mean(axis=0)
    cols = lum[:, (c0 + c1) // 2 - 12:(c0 + c1) // 2 + 12].mean(axis=1)

    def crossing(profile: np.ndarray, edge: int, rising: bool) -> float:
        inside, outside = (edge + 6, edge - 7) if rising else (edge - 7, edge + 6)
        half = 0.5 * (profile[inside] + profile[outside])
        xs = np.arange(edge - 6, edge + 6)
        p = profile[edge - 6:edge + 6]
        k = int(np.flatnonzero((p[:-1] - half) * (p[1:] - half) <= 0)[0])
        return xs[k] + (half - p[k]) / (p[k + 1] - p[k])

    return np.array([crossing(rows, c0, True), crossing(rows, c1, False),
                     crossing(cols, r0, True), crossing(cols, r1, False)])


def _centroid(lum: np.ndarray) -> np.ndarray:
    mask = lum > 0.5 * (BG + FG) * np.median(lum[BOX[0] + 8:BOX[1] - 8, BOX[2] + 8:BOX[3] - 8]) / FG
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


ALL_ON = ce.CameraEffects(exposure_ev=0.4, vignetting_ev=0.6, vignetting_centre=(0.3, -0.2), motion_blur_px=4.0,
                          motion_blur_angle_deg=30.0, electrons_per_unit=400.0, read_noise_e=3.0, noise_seed=7,
                          white_balance_mired=20.0, white_balance_tint=0.02, jpeg_quality=75)
ONE_AT_A_TIME = {
    "exposure": ce.CameraEffects(exposure_ev=-0.5),
    "vignetting": ce.CameraEffects(vignetting_ev=0.6, vignetting_centre=(0.4, 0.3)),
    "motion_blur": ce.CameraEffects(motion_blur_px=5.0, motion_blur_angle_deg=35.0),
    "noise": ce.CameraEffects(electrons_per_unit=300.0, read_noise_e=3.0, noise_seed=1),
    "white_balance": ce.CameraEffects(white_balance_mired=25.0, white_balance_tint=0.03),
    "jpeg": ce.CameraEffects(jpeg_quality=70),
}


def test_same_effects_give_identical_bytes_and_another_noise_seed_does_not():
    img = _picture()
    first, again = ce.apply_effects(img, ALL_ON), ce.apply_effects(img.copy(), ALL_ON)
    assert first.dtype == np.uint8 and first.shape == img.shape
    assert first.tobytes() == again.tobytes()
    assert ce.apply_effects(img, replace(ALL_ON, noise_seed=8)).tobytes() != first.tobytes()


def test_no_effects_is_the_tone_curve_alone_and_exact_on_8_bit_input():
    img = _picture()
    assert np.array_equal(ce.apply_effects(img, ce.CameraEffects()), tone_map(img))
    codes = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(ce.apply_effects(codes, ce.CameraEffects()), codes)
    every_code = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)    # the round trip the shortcut skips
    assert np.array_equal(tone_map(ce.linear_from_tone_mapped(every_code)), every_code)


@pytest.mark.parametrize("name", [*ONE_AT_A_TIME, "all"])
def test_effects_move_no_edge_and_no_centroid(name):
    effects = ALL_ON if name == "all" else ONE_AT_A_TIME[name]
    clean = _luminance(ce.apply_effects(_picture(), ce.CameraEffects()))
    out = _luminance(ce.apply_effects(_picture(), effects))
    assert not np.array_equal(out, clean)
    assert np.abs(_edges(out) - _edges(clean)).max() < 0.5, (_edges(out), _edges(clean))
    assert np.abs(_centroid(out) - _centroid(clean)).max() < 0.5


def test_exposure_scales_linear_radiance_by_its_stops():
    img = _picture()
    out = ce.linear_from_tone_mapped(ce.apply_effects(img, ce.CameraEffects(exposure_ev=-0.5)))
    assert np.median(out / img) == pytest.approx(2 ** -0.5, rel=0.02)


def test_vignetting_darkens_away_from_its_centre_by_the_drawn_stops():
    flat = np.full((SIZE, SIZE, 3), 0.5)
    effects = ce.CameraEffects(vignetting_ev=0.6, vignetting_centre=(0.0, 0.0))
    out = ce.linear_from_tone_mapped(ce.apply_effects(flat, effects))[..., 1]
    assert out[SIZE // 2, SIZE // 2] == pytest.approx(0.5, rel=0.02)
    assert np.log2(out[0, 0] / 0.5) == pytest.approx(-0.6, abs=0.03)
    shifted = ce.linear_from_tone_mapped(ce.apply_effects(flat, replace(effects, vignetting_centre=(0.25, 0.0))))[..., 1]
    assert shifted[SIZE // 2, 3 * SIZE // 4] == pytest.approx(0.5, rel=0.02) and shifted[SIZE // 2, 0] < out[SIZE // 2, 0]


def test_motion_blur_widens_edges_across_its_direction_only():
    def width(profile: np.ndarray) -> int:   # pixels between 10% and 90% of the step
        p = (profile - profile.min()) / (profile.max() - profile.min())
        return int(((p > 0.1) & (p < 0.9)).sum())

    out = _luminance(ce.apply_effects(_picture(), ce.CameraEffects(motion_blur_px=6.0, motion_blur_angle_deg=0.0)))
    across = out[(BOX[0] + BOX[1]) // 2, BOX[2] - 10:BOX[2] + 10]      # a vertical edge, blurred horizontally
    along = out[BOX[0] - 10:BOX[0] + 10, (BOX[2] + BOX[3]) // 2]       # a horizontal edge
    assert width(across) >= 4 and width(along) == 0   # a 6 px box: 80% of it between 10% and 90%
    kernel = ce.motion_blur_kernel(6.0, 30.0)
    assert np.allclose(kernel, kernel[::-1, ::-1]) and kernel.sum() == pytest.approx(1.0)


def test_noise_has_the_shot_and_read_noise_of_its_electron_counts():
    flat = np.full((SIZE, SIZE, 3), 0.8)
    effects = ce.CameraEffects(electrons_per_unit=300.0, read_noise_e=3.0, noise_seed=3)
    out = ce.linear_from_tone_mapped(ce.apply_effects(flat, effects))
    expected = np.sqrt(0.8 * 300 + 3.0**2) / 300
    assert out.std() == pytest.approx(expected, rel=0.1)
    assert out.mean() == pytest.approx(0.8, rel=0.01)
    dark = ce.linear_from_tone_mapped(ce.apply_effects(np.full((SIZE, SIZE, 3), 0.8), replace(effects, electrons_per_unit=3000.0)))
    assert dark.std() < 0.5 * out.std()      # more light per pixel: relatively less noise


def test_white_balance_error_tints_grey_and_keeps_its_luminance():
    grey = np.full((8, 8, 3), 0.3)
    warm_assumed = ce.linear_from_tone_mapped(ce.apply_effects(grey, ce.CameraEffects(white_balance_mired=25.0)))[0, 0]
    assert warm_assumed[2] > 1.05 * warm_assumed[0]                    # the camera assumed warmer light: bluer
    cool_assumed = ce.linear_from_tone_mapped(ce.apply_effects(grey, ce.CameraEffects(white_balance_mired=-25.0)))[0, 0]
    assert cool_assumed[0] > 1.05 * cool_assumed[2]
    green = ce.white_balance_gains(0.0, 0.03)
    assert green[1] > green[0] and green[1] > green[2]
    for gains in (ce.white_balance_gains(25.0, 0.0), green):
        assert gains @ np.array([0.2126, 0.7152, 0.0722]) == pytest.approx(1.0)
    assert np.allclose(ce.white_point_rgb(ce.REFERENCE_KELVIN) / ce.white_point_rgb(ce.REFERENCE_KELVIN), 1.0)
    assert ce.white_point_rgb(3000)[0] > ce.white_point_rgb(3000)[2]  # tungsten is red


def test_jpeg_loses_more_at_lower_quality():
    rng = np.random.default_rng(0)
    img = _picture() * rng.uniform(0.8, 1.2, (SIZE, SIZE, 1))
    clean = ce.apply_effects(img, ce.CameraEffects()).astype(float)
    error = {q: np.abs(ce.apply_effects(img, ce.CameraEffects(jpeg_quality=q)).astype(float) - clean).mean()
             for q in (70, 95)}
    assert error[70] > error[95] > 0


def test_records_round_trip_through_json_and_bad_records_are_named():
    effects = ce.sample_effects(np.random.default_rng(4))
    back = ce.CameraEffects.from_record(json.loads(json.dumps(effects.to_record())))
    assert back == effects
    assert ce.apply_effects(_picture(), back).tobytes() == ce.apply_effects(_picture(), effects).tobytes()
    record = effects.to_record()
    with pytest.raises(ValueError, match=r"row 3: .*jpeg_quality"):
        ce.CameraEffects.from_record({**record, "jpeg_quality": 80.5}, where="row 3")
    with pytest.raises(ValueError, match=r"unknown fields \['iso'\]"):
        ce.CameraEffects.from_record({**record, "iso": 100})
    with pytest.raises(ValueError, match="exposure_ev"):
        ce.CameraEffects.from_record({**record, "exposure_ev": float("nan")})


def test_shares_switch_effects_independently_and_values_stay_in_range():
    ranges = ce.CameraEffectRanges()
    drawn = [ce.sample_effects(np.random.default_rng(s), ranges) for s in range(200)]
    no_blur = [ce.sample_effects(np.random.default_rng(s), replace(ranges, motion_blur_share=0.0)) for s in range(200)]
    for a, b in zip(drawn, no_blur):
        assert b.motion_blur_px == 0.0
        assert replace(a, motion_blur_px=0.0, motion_blur_angle_deg=0.0) == b   # nothing else changed
    assert 0.3 < np.mean([d.motion_blur_px > 0 for d in drawn]) < 0.7
    assert all(-0.5 <= d.exposure_ev <= 0.5 and (d.jpeg_quality == 0 or 70 <= d.jpeg_quality <= 95) for d in drawn)
    assert all(d.motion_blur_px <= 0.3 / 60 * 740.0 + 1e-9 for d in drawn)
    off = ce.sample_effects(np.random.default_rng(0), ce.CameraEffectRanges.off())
    assert off == ce.CameraEffects()
    with pytest.raises(ValueError, match="noise_share"):
        ce.CameraEffectRanges(noise_share=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        ce.CameraEffectRanges(jpeg_quality=(90, 120))
