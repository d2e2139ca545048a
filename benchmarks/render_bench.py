"""Rendering throughput at 256 x 256: today's per-image method and the block renderer, in one run.

**New** (this tree): :func:`handsynth.views.render_pose_views` called once per render block, as
the block writer calls it: a block is one distinct pose's kept augmentations, at the ``demo``
preset 2 augmentations x 4 views = 8 images. Renderers are pooled per process (the GL context
and the Blender worker start once, inside the timed run); the skin bank's entries are painted
before timing (once per machine; their cost is printed).

**Baseline** (today's per-image method): the code of ``--baseline-rev`` (default: main before
the render-stage split) taken with ``git archive`` into a temporary folder and run in a
subprocess on the same poses, maps, size and samples: per image it re-sends the mesh, changes the
world (map and rotation), round-trips the image through an EXR file, and it paints one skin
texture per pose and starts its renderers per call.

Printed per method and backend: wall s/image and images/s, CPU s/image (this process with
llvmpipe's threads, plus the Blender worker), and seconds per stage. Neither side uploads (the
block writer's tar is not the renderer's). The 2 cores are shared: compare the ratio measured in
one run, and read ``uptime``'s load printed with it.

    python benchmarks/render_bench.py [--blocks 3] [--raster-blocks 6] [--samples 8] [--device auto]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from handsynth import envmaps
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.render import RenderOptions
from handsynth.render.cycles import blender_python, cycles_available
from handsynth.render.pool import POOL
from handsynth.render.skin_bank import SkinBank
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import TEXTURE_SIZE, StageTimes, render_pose_views
from resources.settings import PRESETS

REPO = Path(__file__).resolve().parents[1]
#: main before the render-stage split: today's per-image renderer.
BASELINE_REV = "b35227b"
SIZE = 256
DEMO = PRESETS["demo"]

#: Run by the baseline subprocess inside the extracted old tree (its API: shard before n_views).
_BASELINE_SCRIPT = """
import json, resource, sys, time
import numpy as np
from handsynth import envmaps
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.render import RenderOptions
from handsynth.views import StageTimes, render_pose_views

args = json.loads(sys.argv[1])
model = HandModel.standin()
poses = PoseTable.read_parquet(args["poses"])
with np.load(args["maps"], allow_pickle=False) as z:
    library = {name: z[name] for name in z.files}
options = RenderOptions(**args["options"])
times = StageTimes()
t0, c0 = time.perf_counter(), time.process_time()
n = 0
for start in range(0, len(poses), args["per_block"]):
    block = poses.take(range(start, min(start + args["per_block"], len(poses))))
    for _ in render_pose_views(model, block, "shard=bench", args["views"], args["size"], library, times=times,
                               options=options):
        n += 1
wall = time.perf_counter() - t0
cpu = time.process_time() - c0 + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime \\
    + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
print(json.dumps({"images": n, "wall": wall, "cpu": cpu, "stages": times.seconds}))
"""


def _load() -> str:
    """The load average (1, 5, 15 min), as ``uptime`` prints it."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_poses(model: HandModel, blocks: int, per_block: int) -> PoseTable:
    """``blocks`` x ``per_block`` procedural poses, each block sharing a distinct pose id."""
    poses = generate_interacting_poses(model, blocks * per_block, seed=0)
    poses.meta["distinct_pose_id"] = [f"bench/{i // per_block}" for i in range(len(poses))]
    return poses


def run_new(model: HandModel, poses: PoseTable, per_block: int, views: int, library: dict,
            options: RenderOptions) -> dict:
    """Block by block through the pool, renderer start-up included; the pool is closed at the end
    so that the Blender worker's CPU time is counted."""
    POOL.close_all()
    bank = SkinBank(model, 0, TEXTURE_SIZE)
    t = time.perf_counter()
    for pid in poses.pose_ids:
        bank.textures(bank.index_for(str(pid)))
    painting = time.perf_counter() - t
    times = StageTimes()
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    n, block_walls = 0, []
    for start in range(0, len(poses), per_block):
        block = poses.take(range(start, min(start + per_block, len(poses))))
        t = time.perf_counter()
        for _ in render_pose_views(model, block, views, SIZE, library, seed=0, options=options, times=times):
            n += 1
        block_walls.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    POOL.close_all()
    cpu = time.process_time() - c0 + _children_cpu() - k0
    return {"images": n, "wall": wall, "cpu": cpu, "stages": times.seconds, "bank_painting_s": painting,
            "block_walls": block_walls, "per_block_images": per_block * views}


def run_baseline(rev: str, poses: PoseTable, per_block: int, views: int, library: dict,
                 options: RenderOptions, tmp: Path) -> dict:
    """Today's method: the tree of ``rev`` in a subprocess (see the module doc)."""
    tree = tmp / f"baseline-{rev}"
    if not tree.exists():
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "handsynth", "resources"],
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
    poses.write_parquet(str(tmp / "poses.parquet"))
    np.savez(tmp / "maps.npz", **library)
    old = {k: getattr(options, k) for k in ("backend", "samples", "denoise", "device", "subdivision")}
    args = {"poses": str(tmp / "poses.parquet"), "maps": str(tmp / "maps.npz"), "options": old,
            "per_block": per_block, "views": views, "size": SIZE}
    env = {**os.environ, "PYTHONPATH": str(tree), "IH_BLENDER_PYTHON": str(blender_python())}
    out = subprocess.run([sys.executable, "-c", _BASELINE_SCRIPT, json.dumps(args)], cwd=tree, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"baseline at {rev} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(label: str, r: dict) -> None:
    n = r["images"]
    print(f"  {label}: {n} images in {r['wall']:.1f} s = {r['wall'] / n:.3f} s/image = {n / r['wall']:.2f} images/s; "
          f"CPU {r['cpu'] / n:.3f} s/image (load {_load()})")
    print("    stages (s/image): " + ", ".join(f"{k} {v / n:.3f}" for k, v in r["stages"].items() if v > 0))


def compare(title: str, new: dict, old: dict | None) -> None:
    print(title)
    report("new (blocks, pooled renderers)", new)
    walls, k = new["block_walls"], new["per_block_images"]
    if len(walls) > 1:
        print(f"    first block (renderers start) {walls[0] / k:.3f} s/image, later blocks "
              f"{sum(walls[1:]) / (k * (len(walls) - 1)):.3f} s/image")
    print(f"    skin bank: {new['bank_painting_s']:.1f} s to paint its entries once (before timing)")
    if old is not None:
        report("today's per-image method", old)
        print(f"  ratio: {(old['wall'] / old['images']) / (new['wall'] / new['images']):.2f}x wall, "
              f"{(old['cpu'] / old['images']) / (new['cpu'] / new['images']):.2f}x CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=3, help="Cycles: render blocks of the new method")
    ap.add_argument("--baseline-blocks", type=int, default=1, help="Cycles: blocks for today's method")
    ap.add_argument("--raster-blocks", type=int, default=6, help="raster preview: blocks of either method")
    ap.add_argument("--samples", type=int, default=DEMO["render_samples"], help="Cycles samples (demo preset's)")
    ap.add_argument("--device", default="auto", help="Cycles device: auto, cpu, cuda, optix")
    ap.add_argument("--threads", type=int, default=0, help="Cycles threads per worker (0: every core)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision holding today's method")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-cycles", action="store_true")
    args = ap.parse_args()
    per_block, views = DEMO["n_augmentations"], DEMO["n_views"]
    model = HandModel.standin()
    npm = assets_dir() / NPM_HDRI_PACKAGE / "hdri"
    if npm.is_dir():
        library, maps = {k: env for k, (env, _) in envmaps.load_npm_hdris(npm).items()}, "npm Poly Haven HDRIs"
    else:
        library, maps = {f"map{i}": envmaps.procedural_envmap(i) for i in range(4)}, "procedural maps"
    print(f"{SIZE} x {SIZE}, blocks of {per_block} poses x {views} views (demo preset), {len(library)} {maps}, "
          f"{os.cpu_count()} CPUs, load {_load()}")
    raster = RenderOptions(backend="raster")
    cycles = RenderOptions(backend="cycles", samples=args.samples, denoise=DEMO["denoise"], device=args.device,
                           subdivision=1, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("raster preview", raster, args.raster_blocks, args.raster_blocks)]
        have_cycles, why = cycles_available()
        if args.skip_cycles or not have_cycles:
            print(f"cycles: skipped ({'--skip-cycles' if args.skip_cycles else why})")
        else:
            runs.append((f"cycles ({args.samples} samples, denoise, device {args.device})", cycles, args.blocks,
                         args.baseline_blocks))
        for title, options, blocks, baseline_blocks in runs:
            old = None
            if not args.skip_baseline:
                old = run_baseline(args.baseline_rev, bench_poses(model, baseline_blocks, per_block), per_block, views,
                                   library, options, Path(tmp))
            new = run_new(model, bench_poses(model, blocks, per_block), per_block, views, library, options)
            compare(title, new, old)


if __name__ == "__main__":
    main()
