"""What accessories cost and how often each is worn: the same poses rendered with forearms alone and
with every hand drawn to wear a wrist piece and a ring (``accessory_share`` 1), in one run, at the
demo preset's 256 x 256 and 4 views; then the pieces kept per kind and finger over more poses.

Printed per backend and configuration: wall s/image and seconds per stage (the ``pose`` stage holds
the fitting and crossing tests). At the default share (0.2) the added cost is about a fifth of the
share-1 figure. The 2 cores are shared: compare ratios measured in one run, and read the load.

    python benchmarks/accessory_bench.py [--raster-poses 8] [--cycles-poses 2] [--samples 8] [--count-poses 40]
"""

from __future__ import annotations

import argparse
from collections import Counter

from forearm_bench import compare, setup

from handsynth.arms import ArmOptions
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import hand_surface, pose_geometry

CONFIGS = {"forearms": ArmOptions(True, 0.0, 0.0), "forearms+accessories": ArmOptions(True, 0.0, 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raster-poses", type=int, default=8)
    parser.add_argument("--cycles-poses", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--count-poses", type=int, default=40)
    args = parser.parse_args()
    model, library, backends = setup(args)
    compare(model, library, backends, CONFIGS)
    surface = hand_surface(model, 1, True)
    poses = generate_interacting_poses(model, args.count_poses, seed=0)
    kept, left_off = Counter(), Counter()
    for i in range(len(poses)):
        dressing = pose_geometry(model, surface, poses.take([i]), seed=0, accessory_share=1.0).dressing
        kept.update(f"{p.wish.kind} on {p.where}" if p.wish.kind == "ring" else p.wish.kind for p in dressing.pieces)
        left_off.update(f"{kind}: {why}" for kind, _, why in dressing.left_off)
    print(f"{len(poses)} poses x 2 hands, every piece drawn: kept {dict(kept)}; left off {dict(left_off)}")


if __name__ == "__main__":
    main()
