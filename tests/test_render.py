"""Cameras, environment maps and the renderer."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from handsynth import cameras, envmaps
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.render.camera_effects import CameraEffectRanges, CameraEffects, apply_effects
from handsynth.render.depth_of_field import DepthOfFieldRanges
from handsynth.render.raster import decode_png
from handsynth.render.workers import look_from_row, manifest_row
from handsynth.views import STAGES, CameraLook, StageTimes, render_pose_views


def test_projection_and_unprojection_round_trip():
    rng = np.random.default_rng(0)
    points = rng.normal(0, 0.05, (200, 3))
    cam = cameras.sample_camera(points.mean(0), points, cameras.CameraRanges(), rng, 256, 256)
    uv = cameras.project(points, cam.K, cam.R, cam.t)
    depth = points @ cam.R[2] + cam.t[2]
    assert np.abs(cameras.unproject(uv, depth, cam.K, cam.R, cam.t) - points).max() < 1e-9
    assert ((uv >= 0) & (uv <= 256)).all() and (depth > 0).all()
    assert np.allclose(cam.R @ cam.R.T, np.eye(3))


def test_median_cut_puts_the_strongest_light_at_a_bright_spot():
    env = np.full((64, 128, 3), 0.1, np.float32)
    env[20:23, 90:93] = 500.0
    lights, ambient = envmaps.median_cut_lights(env, 4)
    strongest = max(lights, key=lambda l: l.rgb.sum())
    spot = envmaps.pixel_directions(64, 128)[21, 91]
    assert strongest.direction @ spot > 0.98 and ambient.min() > 0


def test_hdr_round_trip_keeps_radiance_to_rgbe_precision():
    env = envmaps.procedural_envmap(3)
    back = envmaps.read_hdr(envmaps.write_hdr(env))
    assert back.shape == env.shape
    assert np.all(np.abs(back - env) <= env.max(axis=-1, keepdims=True) / 128 + 1e-6)


def test_rerendering_gives_byte_identical_pngs_and_a_mask_on_the_projected_mesh(hand_model):
    poses = generate_interacting_poses(hand_model, 1, seed=0)
    library = {"a": envmaps.procedural_envmap(0), "b": envmaps.procedural_envmap(1)}
    times = StageTimes()
    first = list(render_pose_views(hand_model, poses, 2, 96, library, seed=0, times=times))
    second = list(render_pose_views(hand_model, poses, 2, 96, library, seed=0))
    for a, b in zip(first, second):
        assert a.pngs == b.pngs and a.record.render_seed == b.record.render_seed and a.scene == b.scene
        assert a.mask_iou >= 0.99
        # depth and labels are one sampling: the same silhouette, pixel for pixel (was IoU ~0.98)
        np.testing.assert_array_equal(decode_png(a.pngs["depth"]) > 0, decode_png(a.pngs["label"]) > 0)
    assert first[0].pngs["rgb"] != first[1].pngs["rgb"]          # views differ
    # every stage of the split ran (the photo stage is Cycles'; this is the raster preview)
    assert all(times.seconds[stage] > 0 for stage in STAGES if stage != "photo") and times.seconds["photo"] == 0


def test_an_image_depends_on_the_settings_seed_and_its_ids_not_on_its_shard_or_batch(hand_model):
    """Seeds come from the settings' seed and stable ids: a pose rendered with other batch-mates,
    in another position and under another shard name gives the same bytes; another seed does not."""
    poses = generate_interacting_poses(hand_model, 3, seed=0)
    library = {"a": envmaps.procedural_envmap(0), "b": envmaps.procedural_envmap(1)}
    batch = list(render_pose_views(hand_model, poses, 2, 64, library, seed=7, shard="shard=00000"))
    alone = list(render_pose_views(hand_model, poses.take([2]), 2, 64, library, seed=7, shard="shard=00009"))
    assert [a.pngs for a in alone] == [b.pngs for b in batch[4:]]
    assert [a.record.render_seed for a in alone] == [b.record.render_seed for b in batch[4:]]
    assert alone[0].record.pose["shard"] == "shard=00009"
    other = list(render_pose_views(hand_model, poses.take([2]), 2, 64, library, seed=8))
    assert other[0].record.render_seed != alone[0].record.render_seed and other[0].pngs["rgb"] != alone[0].pngs["rgb"]


def test_views_of_a_pose_share_its_light_and_augmentations_share_the_map(hand_model):
    """The capture rig of the module doc: one map and rotation per pose, the map per distinct
    pose, exposure per view; all recorded."""
    poses = generate_interacting_poses(hand_model, 4, seed=1)
    poses.meta["distinct_pose_id"] = ["d0", "d0", "d1", "d1"]
    library = {f"m{i}": envmaps.procedural_envmap(i, 16, 32) for i in range(6)}
    images = list(render_pose_views(hand_model, poses, 3, 48, library, seed=0))
    by_pose = [images[3 * i: 3 * i + 3] for i in range(4)]
    for views in by_pose:
        assert len({(v.record.envmap, v.scene["env_rotation"], v.scene["skin"]) for v in views}) == 1
        assert len({v.scene["exposure"] for v in views}) == 3
    assert by_pose[0][0].record.envmap == by_pose[1][0].record.envmap
    assert by_pose[2][0].record.envmap == by_pose[3][0].record.envmap
    assert len({views[0].scene["env_rotation"] for views in by_pose}) > 1     # drawn per pose, not per map


def test_repair_replaces_negative_radiance_from_neighbours_and_keeps_the_sun():
    env = np.full((16, 32, 3), 0.5, np.float32)
    env[3:9, 8:14] = 1000.0                        # a sun (wider than the 5x5 window)
    env[5, 10, 2] = -900.0                         # DWAB ringing in one channel of a sun pixel
    env[12, 31] = [-3.0, 0.2, 0.2]                 # at the seam: neighbours wrap around
    env[13, 3] = [0.0, -1.0, 900.0]                # a pure-blue spike: the whole pixel is damage
    repaired, n = envmaps.repair_negative_radiance(env)
    assert n == 3 and (repaired >= 0).all()
    assert np.allclose(repaired[13, 3], 0.5)
    assert repaired[5, 10, 2] == 1000.0 and repaired[5, 10, 0] == 1000.0     # still a sun, no black hole
    assert repaired[12, 31, 0] == 0.5
    with pytest.raises(ValueError, match="negative radiance"):
        envmaps.validate_envmap(env, "x.exr")


NPM_HDRI = Path(os.environ.get("IH_ASSETS_DIR", Path(__file__).resolve().parents[1] / ".local" / "assets")) / "pmndrs-assets-1.7.0" / "hdri"


@pytest.mark.skipif(not NPM_HDRI.is_dir(), reason=f"npm HDRIs not fetched ({NPM_HDRI}); run scripts/fetch_assets.sh")
def test_npm_hdris_decode_to_finite_non_negative_maps_with_a_bright_sun():
    maps = envmaps.load_npm_hdris(NPM_HDRI)
    assert len(maps) == 18
    for name, (env, repaired) in maps.items():
        assert env.shape == (256, 512, 3) and np.isfinite(env).all() and (env >= 0).all(), name
    sky, _ = maps["sky"]
    lum = sky @ np.array([0.2126, 0.7152, 0.0722])
    r, c = np.unravel_index(np.argmax(lum), lum.shape)
    assert lum.max() > 1000 * np.median(lum) and r < 128     # the sun: far brighter than the sky, above the horizon
    assert maps["esplanade"][1] > 1000                        # the lossy map that needed the most repair
    for name in ("park", "sunrise"):                          # their suns came out pure blue (0, 0, 11800)
        env = maps[name][0]
        bright = env.max(-1) > 1.0
        assert ((env[bright] <= 1e-3 * env[bright].max(-1, keepdims=True)).sum(-1) < 2).all(), name


def test_exr_reader_names_the_file_on_bad_data():
    with pytest.raises(ValueError, match="bad.exr: not an OpenEXR"):
        envmaps.read_envmap(b"#?RADIANCE\n", "bad.exr")
    with pytest.raises(ValueError, match="must end in"):
        envmaps.read_envmap(b"", "map.png")


def test_a_users_folder_of_hdr_and_exr_maps_fills_the_library(tmp_path):
    """Poly Haven downloads come as .hdr or .exr: both are read back to the same radiance."""
    import OpenEXR

    from ih_assets.rendering import _library_sources
    from resources.settings import PipelineSettings

    env = envmaps.procedural_envmap(5, 16, 32)
    (tmp_path / "studio.hdr").write_bytes(envmaps.write_hdr(env))
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"RGB": env.astype(np.float32)}).write(str(tmp_path / "sky.exr"))
    (tmp_path / "notes.txt").write_text("not a map")
    source, files, _ = _library_sources(PipelineSettings.from_preset("test", environment_dir=str(tmp_path)))
    assert sorted(files) == ["sky.exr", "studio.hdr"] and str(tmp_path) in source
    assert np.allclose(envmaps.read_envmap(files["sky.exr"], "sky.exr"), env)
    hdr = envmaps.read_envmap(files["studio.hdr"], "studio.hdr")
    assert np.all(np.abs(hdr - env) <= env.max(axis=-1, keepdims=True) / 128 + 1e-6)


def test_the_renderer_pool_lends_a_renderer_to_one_caller_and_closes_one_whose_use_raised():
    from handsynth.render.pool import RendererPool

    class Worker:
        made = 0

        def __init__(self) -> None:
            Worker.made += 1
            self.closed = False

        def close(self) -> None:
            self.closed = True

    pool = RendererPool()
    with pool.borrow("k", Worker) as first:
        with pool.borrow("k", Worker) as second:      # busy: a second caller gets its own
            assert second is not first
    with pool.borrow("k", Worker) as again:
        assert again in (first, second) and Worker.made == 2
    with pytest.raises(RuntimeError, match="render failed"):
        with pool.borrow("k", Worker) as broken:
            raise RuntimeError("render failed")
    assert broken.closed
    with pool.borrow("k", Worker) as next_one:
        assert next_one is not broken
    pool.close_all()
    assert all(w.closed for w in (first, second))


#: Every lens and camera effect on in every view (the defaults turn each on in a share of views).
ALL_ON = CameraLook(DepthOfFieldRanges(share=1.0),
                    CameraEffectRanges(exposure_share=1.0, vignetting_share=1.0, motion_blur_share=1.0, noise_share=1.0,
                                       white_balance_share=1.0, jpeg_share=1.0))


def test_every_camera_effect_on_repeats_byte_for_byte_and_each_manifest_row_records_it(hand_model, tmp_path):
    """Same seed, every effect on: identical PNGs. Each manifest row holds the lens and all effect
    parameters (also after a parquet round trip), enough to apply them again to the clean render
    and get the stored RGB."""
    poses = generate_interacting_poses(hand_model, 1, seed=3)
    library = {"a": envmaps.procedural_envmap(0), "b": envmaps.procedural_envmap(1)}
    first = list(render_pose_views(hand_model, poses, 3, 96, library, seed=5, look=ALL_ON))
    second = list(render_pose_views(hand_model, poses, 3, 96, library, seed=5, look=ALL_ON))
    assert [a.pngs for a in first] == [b.pngs for b in second]
    rows = [manifest_row(img) for img in first]
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    stored = pd.read_parquet(tmp_path / "rows.parquet").to_dict("records")
    for img, row, back in zip(first, rows, stored):
        lens, effects = look_from_row(back)
        assert (lens, effects) == look_from_row(row) == (img.lens, img.effects)
        assert effects.jpeg_quality > 0 and effects.electrons_per_unit > 0 and effects.motion_blur_px > 0
        assert effects.vignetting_ev > 0 and effects.exposure_ev != 0 and effects.white_balance_mired != 0
        assert lens.f_number > 0 and row["lens_aperture_m"] == pytest.approx(lens.aperture_mm / 1000)
        assert row["lens_background_blur_px"] == pytest.approx(lens.blur_px(float(img.record.K[0, 0]), np.inf))
        np.testing.assert_array_equal(apply_effects(img.raster_rgb, effects), decode_png(img.pngs["rgb"]))
    assert len({row["effect_noise_seed"] for row in rows}) == 3          # drawn per view


def test_lens_and_camera_effects_change_the_rgb_only(hand_model):
    """Labels, depth, keypoint visibility, camera and seeds are those of the clean render; the RGB
    is not; the clean render records a pinhole and neutral effects."""
    poses = generate_interacting_poses(hand_model, 1, seed=3)
    library = {"a": envmaps.procedural_envmap(0)}
    clean = list(render_pose_views(hand_model, poses, 2, 96, library, seed=5))
    looked = list(render_pose_views(hand_model, poses, 2, 96, library, seed=5, look=ALL_ON))
    for a, b in zip(clean, looked):
        assert a.pngs["label"] == b.pngs["label"] and a.pngs["depth"] == b.pngs["depth"]
        np.testing.assert_array_equal(a.record.visibility, b.record.visibility)
        np.testing.assert_array_equal(a.record.K, b.record.K)
        assert a.record.render_seed == b.record.render_seed and a.scene == b.scene
        assert a.pngs["rgb"] != b.pngs["rgb"]
        assert a.lens.f_number == 0 and a.effects == CameraEffects()
