"""What forearms cost and how they sit in the frame: the same poses rendered without and with them
(and with sleeves on every pose), in one run, at the demo preset's 256 x 256 and 4 views.

Printed per backend and configuration: wall s/image, seconds per stage (the ``pose`` stage holds
the elbow draws and crossing tests), and, with forearms, the draws per pose, the poses whose
forearm touches the other hand at the wrist, and the share of images whose forearm's far end
(55 cm from the wrist) may show in the frame (cameras are drawn to keep it out: 0 expected).
The 2 cores are shared: compare ratios measured in one run, and read the load printed with them.

    python benchmarks/forearm_bench.py [--raster-poses 8] [--cycles-poses 2] [--samples 8]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import numpy as np

from handsynth import cameras, envmaps
from handsynth.arms import ArmOptions
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir
from handsynth.hand_model.model import HandModel
from handsynth.render import RenderOptions
from handsynth.render.cycles import cycles_available
from handsynth.render.pool import POOL
from handsynth.render.skin_bank import SkinBank
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import TEXTURE_SIZE, StageTimes, hand_surface, pose_geometry, render_pose_views

SIZE, VIEWS = 256, 4
CONFIGS = {"off": ArmOptions(False), "forearms": ArmOptions(True, 0.0), "forearms+sleeves": ArmOptions(True, 1.0)}


def far_ends_in_frame(model: HandModel, poses, images) -> float:
    """Share of (image, side) whose arm's cut end (last ring and cap) may show in the image
    (:func:`handsynth.cameras.shows`, the condition the cameras are drawn under: 0 unless no view
    of the tries hid it)."""
    surface = hand_surface(model, 0, True)
    ends = {pid: pose_geometry(model, surface, poses.take([i]), seed=0).arm_ends for i, pid in enumerate(poses.pose_ids)}
    inside = [cameras.shows(end, r.K, r.R, r.t, r.width, r.height)
              for r in (image.record for image in images) for end in ends[r.pose["pose_id"]]]
    return float(np.mean(inside))


def run(model: HandModel, poses, library: dict, options: RenderOptions, arms: ArmOptions) -> tuple[dict, list]:
    """Renderers started and the poses' skins painted before timing (both are once per process/machine)."""
    POOL.close_all()
    bank = SkinBank(model, 0, TEXTURE_SIZE)
    for pid in poses.pose_ids:
        bank.textures(bank.index_for(str(pid)))
    list(render_pose_views(model, poses.take([0]), 1, SIZE, library, seed=0, options=options, arms=arms))
    times = StageTimes()
    t = time.perf_counter()
    images = list(render_pose_views(model, poses, VIEWS, SIZE, library, seed=0, options=options, arms=arms, times=times))
    wall = time.perf_counter() - t
    POOL.close_all()
    return {"s_per_image": wall / len(images), "stages": {k: round(v / len(images), 4) for k, v in times.seconds.items()}}, images


def setup(args: argparse.Namespace) -> tuple[HandModel, dict, list[tuple[str, RenderOptions, int]]]:
    """The stand-in, the maps (npm Poly Haven, else procedural) and (backend, options, poses) to run:
    raster, and Cycles (``args.samples`` + denoise, subdivision 1) when installed."""
    model = HandModel.standin()
    hdri = assets_dir() / NPM_HDRI_PACKAGE / "hdri"
    library = ({name: env for name, (env, _) in envmaps.load_npm_hdris(hdri).items()} if hdri.is_dir()
               else {"procedural": envmaps.procedural_envmap(0, 128, 256)})
    print(f"load before: {os.getloadavg()}")
    backends = [("raster", RenderOptions(backend="raster"), args.raster_poses)]
    if cycles_available()[0] and args.cycles_poses:
        backends.append(("cycles", RenderOptions(backend="cycles", samples=args.samples, denoise=True, subdivision=1),
                         args.cycles_poses))
    return model, library, backends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raster-poses", type=int, default=8)
    parser.add_argument("--cycles-poses", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    model, library, backends = setup(args)
    compare(model, library, backends, CONFIGS, arm_figures)


def arm_figures(model: HandModel, poses, arms: ArmOptions, images: list) -> str:
    """The forearms' draws, wrist contacts and far ends in frame of one configuration's images."""
    if not arms.forearms:
        return ""
    n = len(poses)
    attempts = [images[i * VIEWS].scene["arm_attempts"] for i in range(n)]
    wrist = sum(images[i * VIEWS].scene["wrist_crossings"] > 0 for i in range(n))
    return (f"; draws/pose mean {np.mean(attempts):.2f} max {max(attempts)}; poses touching a wrist {wrist}/{n}"
            f"; far end in frame {far_ends_in_frame(model, poses, images):.0%}")


def compare(model: HandModel, library: dict, backends: list[tuple[str, RenderOptions, int]],
            configs: dict[str, ArmOptions], figures_of: Callable[..., str] = lambda *_: "") -> None:
    """Each backend's poses rendered in each configuration: s/image, stages and ``figures_of``'s line."""
    for backend, options, n in backends:
        poses = generate_interacting_poses(model, n, seed=0)
        for name, arms in configs.items():
            figures, images = run(model, poses, library, options, arms)
            print(f"{backend} {name}: {figures['s_per_image']:.3f} s/image over {len(images)} images "
                  f"({SIZE} px, {VIEWS} views){figures_of(model, poses, arms, images)}\n"
                  f"  stages s/image {figures['stages']}  (load {os.getloadavg()[0]:.1f})")

if __name__ == "__main__":
    main()
