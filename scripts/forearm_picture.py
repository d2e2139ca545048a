"""The docs picture of forearms: one pose from a few cameras through the pipeline's own render path
(``render_pose_views``, Cycles), a row each with forearms, with forearms and sleeves, and without
(RenderIH's own look, hands ending at the wrist).

Run from the repository root (the npm Poly Haven maps under ``IH_ASSETS_DIR``, else procedural):
``python scripts/forearm_picture.py docs/forearms.png [--size 256] [--samples 16] [--views 4] [--pose-seed 1]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from handsynth import envmaps
from handsynth.arms import ArmOptions
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir
from handsynth.hand_model.model import HandModel
from handsynth.render import RenderOptions
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import render_pose_views

ROWS = {"forearms": ArmOptions(True, 0.0), "forearms + sleeves": ArmOptions(True, 1.0), "off": ArmOptions(False)}


def maps() -> dict[str, np.ndarray]:
    """The npm Poly Haven maps when fetched, else one procedural map."""
    hdri = assets_dir() / NPM_HDRI_PACKAGE / "hdri"
    return ({name: env for name, (env, _) in envmaps.load_npm_hdris(hdri).items()} if hdri.is_dir()
            else {"procedural": envmaps.procedural_envmap(0, 128, 256)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--pose-seed", type=int, default=1)
    args = parser.parse_args()
    model = HandModel.standin()
    poses = generate_interacting_poses(model, 1, seed=args.pose_seed)
    library = maps()
    options = RenderOptions(backend="cycles", samples=args.samples, denoise=True, device="cpu", subdivision=1)
    rows = []
    for name, arms in ROWS.items():
        start = time.perf_counter()
        images = list(render_pose_views(model, poses, args.views, args.size, library, seed=0, options=options, arms=arms))
        rows.append(np.concatenate([image.rgb for image in images], axis=1))
        print(f"{name}: {len(images)} images in {time.perf_counter() - start:.1f} s; alpha IoU "
              f"{min(i.alpha_iou for i in images):.3f}; sleeve {images[0].scene.get('sleeve_cloth') or 'none'}",
              file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)


if __name__ == "__main__":
    main()
