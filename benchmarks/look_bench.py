"""What the camera look costs: the same blocks rendered clean and with lens and camera effects.

Renders ``--blocks`` render blocks (2 poses x 4 views each, the ``demo`` preset's block, 256 px)
through :func:`handsynth.views.render_pose_views` twice, clean (a pinhole, the tone curve
alone) and with the look the settings ``depth_of_field`` and ``camera_effects`` turn on, block
after block in alternating order (renderers started before timing), ``--rounds`` times, so that
both see the same load on the shared cores. Printed
per variant: wall s/image, the stages the look touches (``camera``: lens draw and the defocused
background; ``effects``: the post-process; ``photo``: Cycles with its depth of field), and for
Cycles the alpha-vs-labels IoU (the blocking check's figure, min and mean). Read the load
average printed with it.

    python benchmarks/look_bench.py [--backend raster|cycles] [--blocks 2] [--rounds 2] [--samples 8]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from handsynth import envmaps
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir
from handsynth.hand_model.model import HandModel
from handsynth.render import RenderOptions
from handsynth.render.pool import POOL
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import CameraLook, StageTimes, render_pose_views

SIZE, VIEWS, PER_BLOCK = 256, 4, 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("raster", "cycles"), default="raster")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = HandModel.standin()
    folder = assets_dir() / NPM_HDRI_PACKAGE / "hdri"
    library = ({name: env for name, (env, _) in envmaps.load_npm_hdris(folder).items()} if folder.is_dir()
               else {f"procedural_{i}": envmaps.procedural_envmap(i) for i in range(4)})
    poses = generate_interacting_poses(model, args.blocks * PER_BLOCK, seed=0)
    poses.meta["distinct_pose_id"] = [f"bench/{i // PER_BLOCK}" for i in range(len(poses))]
    options = RenderOptions(backend=args.backend, samples=args.samples, denoise=True, device=args.device,
                            subdivision=1 if args.backend == "cycles" else 0)
    variants = {"clean": CameraLook(), "look": CameraLook.from_switches(True, True)}
    totals = {name: {"wall": 0.0, "images": 0, "times": StageTimes(), "alpha": []} for name in variants}
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    list(render_pose_views(model, poses.take([0]), 1, SIZE, library, seed=0, options=options))   # start the renderers
    for r in range(args.rounds):
        for b, start in enumerate(range(0, len(poses), PER_BLOCK)):
            block = poses.take(range(start, start + PER_BLOCK))
            order = list(variants) if (r + b) % 2 == 0 else list(variants)[::-1]   # neither always runs first
            for name in order:
                total = totals[name]
                t0 = time.perf_counter()
                for img in render_pose_views(model, block, VIEWS, SIZE, library, seed=0, options=options,
                                             times=total["times"], look=variants[name]):
                    total["images"] += 1
                    if img.alpha_iou is not None:
                        total["alpha"].append(img.alpha_iou)
                total["wall"] += time.perf_counter() - t0
    POOL.close_all()
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, total in totals.items():
        n, s = total["images"], total["times"].seconds
        line = (f"{args.backend} {name}: {total['wall'] / n:.3f} s/image over {n} images; per image camera "
                f"{s['camera'] / n * 1e3:.1f} ms, photo {s['photo'] / n * 1e3:.0f} ms, effects {s['effects'] / n * 1e3:.1f} ms")
        if total["alpha"]:
            line += f"; alpha IoU min {min(total['alpha']):.4f} mean {np.mean(total['alpha']):.4f}"
        print(line)


if __name__ == "__main__":
    main()
