"""Optimizer throughput, side by side in one run: the previous method (penetration candidates
rebuilt every iteration) and the current one (candidate lists kept while the hands move less than
the slack), batched and one pose at a time; and the penetration term's cost per iteration
(box-culled part grids) against the exact whole-surface evaluation (winding numbers and distances
to every triangle of the other hand's closed surface, for the vertices within its part boxes).

    python benchmarks/optimize_bench.py [--poses 64] [--augmentations 1] [--batch N] [--single 1]
                                        [--iterations 215] [--device cuda] [--skip-previous]

Every figure is end to end (schedule, untangle, rigid separation and the exact whole-surface check
of the keep filter), after an untimed warm-up run; the time per stage is printed too.
On a GPU, ``--device cuda --poses 256 --augmentations 8 --skip-previous`` gives the batch-2,048
figure (``benchmarks/gpu_check.sh``): the procedural generator draws poses one at a time on the CPU
(~0.1 s each), so 2,048 poses are 256 drawn and 8 augmentations of each, as the pipeline makes them.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

import torch

from handsynth import anchors as an
from handsynth import augment, optimize as op, penetration as pen
from handsynth.hand_model.model import HandModel
from handsynth.sources.procedural import generate_interacting_poses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poses", type=int, default=64, help="procedural poses drawn")
    ap.add_argument("--augmentations", type=int, default=1, help="augmentations of each (poses optimized: the product)")
    ap.add_argument("--skip-previous", action="store_true", help="skip the previous method's run")
    ap.add_argument("--batch", type=int, default=0, help="batch size (default: all poses in one batch)")
    ap.add_argument("--single", type=int, default=1, help="poses optimized one at a time (baseline)")
    ap.add_argument("--iterations", type=int, default=215)
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = HandModel.standin(device=args.device)
    raw = generate_interacting_poses(model, args.poses, seed=0)
    raw.meta["distinct_pose_id"] = raw.meta["pose_id"]
    poses, _ = augment.augment_pose_table(model, raw, args.augmentations, 0)
    n = len(poses)
    anchors = an.select_anchors(model, raw)
    field = pen.PenetrationField(model)
    config = op.OptimizeConfig(iterations=args.iterations, batch_size=args.batch or n)
    op.optimize_poses(model, poses.take(range(4)), anchors, None, field, replace(config, iterations=2))  # warm-up

    def timed(cfg: op.OptimizeConfig) -> tuple[op.OptimizeResult, float]:
        torch.manual_seed(0)
        t = time.perf_counter()
        out = op.optimize_poses(model, poses, anchors, None, field, cfg)
        return out, time.perf_counter() - t

    before, before_s = (None, 0.0) if args.skip_previous else timed(replace(config, candidate_slack_mm=0.0))
    result, batched = timed(config)
    t = time.perf_counter()
    op.optimize_poses(model, poses.take(range(args.single)), anchors, None, field, replace(config, batch_size=1))
    single = (time.perf_counter() - t) / args.single
    keep, _ = op.filter_valid(result.stats)
    print(f"full schedule ({args.iterations} iterations), {n} poses in batches of {config.batch_size}, "
          f"{torch.get_num_threads()} threads, device {model.device}:")
    if before is not None:
        same = all(np.allclose(before.poses.hand(s)[k], result.poses.hand(s)[k], atol=1e-5)
                   for s in ("right", "left") for k in ("hand_pose", "transl"))
        print(f"  previous (candidates every iteration): {before_s:.1f} s = {n / before_s:.2f} poses/s")
    print(f"  current (kept candidate lists, slack {config.candidate_slack_mm} mm): {batched:.1f} s = {n / batched:.2f} poses/s"
          + ("" if before is None else f"; speed-up {before_s / batched:.2f}x; same poses: {same}"))
    print(f"one pose at a time (mean of {args.single}): {single:.1f} s/pose = {1 / single:.3f} poses/s; "
          f"batched speed-up {single * n / batched:.1f}x")
    print(f"  seconds per stage (current): {result.seconds}")
    print(f"retention with default thresholds: {keep.mean():.1%}")

    # penetration term per iteration for 256 poses
    big = generate_interacting_poses(model, 256, seed=1)
    hands = {s: {k: torch.as_tensor(v, dtype=torch.float32, device=model.device) for k, v in big.hand(s).items()}
             for s in ("right", "left")}
    with torch.no_grad():
        verts = {s: model.forward(s, **hands[s]).vertices for s in hands}
        field.depths(hands, verts)
        t = time.perf_counter()
        reps = 5
        for _ in range(reps):
            field.depths(hands, verts)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        grid = (time.perf_counter() - t) / reps
        n_dense = 2
        t = time.perf_counter()
        for b in range(n_dense):
            pen.exact_depths(model, {s: verts[s][b].double().cpu() for s in verts})
        dense = (time.perf_counter() - t) / n_dense * 256
    print(f"penetration term, 256 poses: grid {grid * 1000:.0f} ms/iteration; exact whole surface "
          f"({n_dense} poses extrapolated) {dense:.1f} s/iteration; ratio {dense / grid:.0f}x")


if __name__ == "__main__":
    main()
