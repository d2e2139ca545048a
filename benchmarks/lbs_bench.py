"""Benchmark the MANO forward: smplx (``HandModel.forward``) vs the fixed-shape fast path
(``HandModel.shaped`` once, then ``HandModel.posed``), and the skeleton-only
``joint_transforms`` (level-parallel chain) vs smplx's sequential ``batch_rigid_transform``.

For each batch size: forward only, and forward + backward of a linear function of the vertices
w.r.t. global_orient, hand_pose and transl (what the pose optimizer differentiates). Median of
``--reps`` timed runs (and the minimum, less sensitive to other load) after warm-up, on the generated stand-in hand (same array sizes as MANO).

Usage: python benchmarks/lbs_bench.py [--batches 64 256] [--threads 2] [--reps 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smplx.lbs import batch_rigid_transform  # noqa: E402

from handsynth.hand_model.model import HandModel  # noqa: E402


def timed_pair(ref, fast, reps: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Seconds per call of ``ref`` and ``fast``, run alternately (so that load from other
    processes hits both alike), after 5 warm-up calls each."""
    for _ in range(5):
        ref(), fast()
    out: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for fn, times in ((ref, out[0]), (fast, out[1])):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = HandModel.standin(device=args.device)
    side = "right"
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.reps} runs each; "
          "ms as median / min")
    print(f"{'B':>5} {'what':<28} {'smplx ms':>17} {'fast ms':>17} {'ratio (median, min)':>20}")
    for bsz in args.batches:
        g = torch.Generator().manual_seed(bsz)
        p = {"global_orient": torch.randn(bsz, 3, generator=g), "hand_pose": 0.5 * torch.randn(bsz, 45, generator=g),
             "betas": torch.randn(bsz, 10, generator=g), "transl": 0.1 * torch.randn(bsz, 3, generator=g)}
        p = {k: v.to(device) for k, v in p.items()}
        w = torch.randn(bsz, 778, 3, generator=g).to(device)
        shaped = model.shaped(side, p["betas"])
        t_shaped, _ = timed_pair(lambda: model.shaped(side, p["betas"]), lambda: None, args.reps, device)

        def leaves():
            return {k: p[k].clone().requires_grad_(True) for k in ("global_orient", "hand_pose", "transl")}

        def ref_fwd():
            with torch.no_grad():
                model.forward(side, p["global_orient"], p["hand_pose"], p["betas"], p["transl"])

        def fast_fwd():
            with torch.no_grad():
                model.posed(side, shaped, p["global_orient"], p["hand_pose"], p["transl"])

        def ref_bwd():
            x = leaves()
            v = model.forward(side, x["global_orient"], x["hand_pose"], p["betas"], x["transl"]).vertices
            (v * w).sum().backward()

        def fast_bwd():
            x = leaves()
            v, _ = model.posed(side, shaped, x["global_orient"], x["hand_pose"], x["transl"])
            (v * w).sum().backward()

        # skeleton only: smplx's sequential chain (the previous joint_transforms) vs the level chain
        layer = model.layers[side]

        def ref_skel():
            x = leaves()
            rest = torch.einsum("jv,bvc->bjc", layer.J_regressor, model._shaped_vertices(side, p["betas"]))
            rot = model._rotations(side, x["global_orient"], x["hand_pose"])
            _, rel = batch_rigid_transform(rot, rest, layer.parents)
            rel.sum().backward()

        def fast_skel():
            x = leaves()
            _, rel, _ = model.joint_transforms(side, x["global_orient"], x["hand_pose"], p["betas"])
            rel.sum().backward()

        rows = [("vertices, forward", ref_fwd, fast_fwd), ("vertices, forward+backward", ref_bwd, fast_bwd),
                ("joint_transforms, fwd+bwd", ref_skel, fast_skel)]
        for name, ref, fast in rows:
            a, b = timed_pair(ref, fast, args.reps, device)
            am, bm, a0, b0 = statistics.median(a), statistics.median(b), min(a), min(b)
            print(f"{bsz:>5} {name:<28} {am * 1e3:>8.3f} /{a0 * 1e3:>7.3f} {bm * 1e3:>8.3f} /{b0 * 1e3:>7.3f}"
                  f" {am / bm:>9.2f}x {a0 / b0:>8.2f}x")
        ts = statistics.median(t_shaped)
        print(f"{bsz:>5} {'shaped (once per batch)':<28} {'':>17} {ts * 1e3:>8.3f} /{min(t_shaped) * 1e3:>7.3f}")


if __name__ == "__main__":
    main()
