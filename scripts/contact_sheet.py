"""The look, seen: the same poses and views as RenderIH renders them and as this pipeline does.

Renders ``--poses`` poses of the procedural generator (the demo run's source, settings seed 0)
from ``--views`` cameras each with the ``demo`` preset's renderer (Cycles, 8 samples and
OpenImageDenoise, 256 px, the npm Poly Haven maps when fetched), twice through the pipeline's
own ``render_pose_views``: once plain (hands ending at the wrist, a pinhole, the tone curve alone:
RenderIH's own look) and once with everything the ``demo`` settings turn on: forearms (sleeves at
``sleeve_share``, accessories at ``accessory_share``), the lens (depth of field) and the camera effects. Both passes draw the same
cameras (except a view that would show an arm's cut end, which the second pass draws again),
maps, exposures and skins, so each pair differs only in those. The sheet puts each view's
plain image left of its twin, and the script prints what each view drew. Run from the repository
root:

    python scripts/contact_sheet.py docs/contact_sheet.png [--poses 4] [--views 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from handsynth import envmaps
from handsynth.arms import ArmOptions
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir
from handsynth.hand_model.model import HandModel
from handsynth.plots import image_grid
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import CameraLook, RenderedImage, render_pose_views
from resources.renderer import render_options
from resources.settings import PipelineSettings


def library() -> dict[str, np.ndarray]:
    """The demo's maps: the npm Poly Haven set when fetched, else procedural ones (as the pipeline)."""
    folder = assets_dir() / NPM_HDRI_PACKAGE / "hdri"
    if folder.is_dir():
        return {name: env for name, (env, _) in envmaps.load_npm_hdris(folder).items()}
    return {f"procedural_{i:03d}": envmaps.procedural_envmap(seed=i) for i in range(4)}


def caption(tile: np.ndarray, text: str) -> np.ndarray:
    image = Image.fromarray(tile)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 8 + 6 * len(text), 14), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(image)


def describe(img: RenderedImage) -> str:
    lens, fx = img.lens, img.effects
    return (f"{img.record.image_id}: {lens.focal_length_mm:.0f} mm f/{lens.f_number:.1f} focus {lens.focus_distance_m:.2f} m "
            f"background blur {lens.background_blur_px:.1f} px; exposure {fx.exposure_ev:+.2f} EV, vignetting "
            f"{fx.vignetting_ev:.2f} EV, motion blur {fx.motion_blur_px:.1f} px, noise {fx.electrons_per_unit:.0f} e-/unit, "
            f"white balance {fx.white_balance_mired:+.1f} mired, JPEG q{fx.jpeg_quality}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--poses", type=int, default=4)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the settings' seed (poses and every draw)")
    parser.add_argument("--cols", type=int, default=4, help="tiles per row (pairs: an even number)")
    args = parser.parse_args()
    settings = PipelineSettings.from_preset("demo", seed=args.seed)
    options = render_options(settings, print)
    model = HandModel.standin()
    poses = generate_interacting_poses(model, args.poses, seed=args.seed)
    maps = library()

    def render(arms: ArmOptions, look: CameraLook) -> list[RenderedImage]:
        return list(render_pose_views(model, poses, args.views, settings.image_size, maps, seed=args.seed,
                                      options=options, arms=arms, look=look, log_fn=print))

    plain = render(ArmOptions(forearms=False), CameraLook())
    full = render(ArmOptions(forearms=settings.forearms, sleeve_share=settings.sleeve_share,
                             accessory_share=settings.accessory_share),
                  CameraLook.from_switches(settings.depth_of_field, settings.camera_effects))
    tiles = []
    for a, b in zip(plain, full):
        print(describe(b))
        tiles += [caption(a.rgb, "RenderIH look"), caption(b.rgb, "forearms + camera")]
    args.out.write_bytes(image_grid(tiles, cols=args.cols, max_side=settings.image_size))
    print(f"wrote {args.out} ({len(tiles)} tiles, renderer {options.backend}, {options.samples} samples)")


if __name__ == "__main__":
    main()
