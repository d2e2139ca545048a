"""Rendering throughput at 256 x 256: today's per-image method and the block renderer, in one run.

**New** (this tree): :func:`handsynth.views.render_pose_views` called once per render block, as
the block writer calls it: a block is one distinct pose's kept augmentations, at the ``demo``
preset 2 augmentations x 4 views = 8 images, with the settings' default forearms (on, sleeves on
a quarter of the poses), and again without forearms (RenderIH's look). Renderers are pooled per
process (the GL context and the Blender worker start once, inside the timed run); the skin
bank's entries are painted before timing (once per machine; their cost is printed).

**Before** (Cycles only): the block renderer of ``--before-rev`` (default: main before the
forearms' cheaper skin) with the same forearms, in a subprocess like the baseline, so that the
gain of the newest change is measured in the same run too.

**Baseline** (today's per-image method): the code of ``--baseline-rev`` (default: main before
the render-stage split) taken with ``git archive`` into a temporary folder and run in a
subprocess on the same poses, maps, size and samples: per image it re-sends the mesh, changes the
world (map and rotation), round-trips the image through an EXR file, and it paints one skin
texture per pose and starts its renderers per call. It predates forearms: it renders hands
ending at the wrist.

Printed per method and backend: wall s/image and images/s, CPU s/image (this process with
llvmpipe's threads, plus the Blender worker), and seconds per stage. Neither side uploads (the
block writer's tar is not the renderer's). The 2 cores are shared: compare the ratio measured in
one run, and read ``uptime``'s load printed with it.

    python benchmarks/render_bench.py [--blocks 3] [--raster-blocks 6] [--samples 8] [--device auto]
                                      [--before-blocks 3] [--skip-before]
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
from handsynth.arms import ArmOptions
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.render import RenderOptions
from handsynth.render.cycles import blender_python, cycles_available
from handsynth.render.pool import POOL
from handsynth.render.skin_bank import SkinBank
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import TEXTURE_SIZE, StageTimes, render_pose_views
from resources.settings import PRESETS, PipelineSettings

REPO = Path(__file__).resolve().parents[1]
#: main before the render-stage split: today's per-image renderer.
BASELINE_REV = "b35227b"
#: main before the forearms' skin scattered only where seen (camera rays, near the wrist).
BEFORE_REV = "9503b27"
SIZE = 256
DEMO = PRESETS["demo"]
#: The settings' default forearms and sleeve share (the demo preset keeps them).
DEMO_ARMS = ArmOptions(bool(PipelineSettings.model_fields["forearms"].default),
                       float(PipelineSettings.model_fields["sleeve_share"].default))
NO_ARMS = ArmOptions(False)

#: Run in a subprocess inside an extracted old tree: today's per-image method (its API: shard
#: before n_views) or, where render_pose_views takes forearms, the block renderer of --before-rev.
_BASELINE_SCRIPT = """
import inspect, json, resource, sys, time
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
blocks = "arms" in inspect.signature(render_pose_views).parameters    # a block renderer (--before-rev)
if blocks:                          # its skin bank painted before timing, as for the new method
    from handsynth.arms import ArmOptions
    from handsynth.render.skin_bank import SkinBank
    from handsynth.views import TEXTURE_SIZE
    bank = SkinBank(model, 0, TEXTURE_SIZE)
    for pid in poses.pose_ids:
        bank.textures(bank.index_for(str(pid)))
times = StageTimes()
t0, c0 = time.perf_counter(), time.process_time()
n = 0
for start in range(0, len(poses), args["per_block"]):
    block = poses.take(range(start, min(start + args["per_block"], len(poses))))
    if blocks:
        images = render_pose_views(model, block, args["views"], args["size"], library, seed=0, times=times,
                                   options=options, arms=ArmOptions(**args["arms"]))
    else:                                                               # today's per-image method
        images = render_pose_views(model, block, "shard=bench", args["views"], args["size"], library, times=times,
                                   options=options)
    for _ in images:
        n += 1
wall = time.perf_counter() - t0
if blocks:                          # the pooled Blender worker's CPU counts once it has exited
    from handsynth.render.pool import POOL
    POOL.close_all()
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
            options: RenderOptions, arms: ArmOptions) -> dict:
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
        for _ in render_pose_views(model, block, views, SIZE, library, seed=0, options=options, arms=arms, times=times):
            n += 1
        block_walls.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    POOL.close_all()
    cpu = time.process_time() - c0 + _children_cpu() - k0
    return {"images": n, "wall": wall, "cpu": cpu, "stages": times.seconds, "bank_painting_s": painting,
            "block_walls": block_walls, "per_block_images": per_block * views}


def run_baseline(rev: str, poses: PoseTable, per_block: int, views: int, library: dict,
                 options: RenderOptions, tmp: Path, arms: ArmOptions = NO_ARMS) -> dict:
    """The renderer of the tree of ``rev`` in a subprocess (see the module doc): today's per-image
    method, or the block renderer of ``--before-rev`` with ``arms``."""
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
            "per_block": per_block, "views": views, "size": SIZE,
            "arms": {"forearms": arms.forearms, "sleeve_share": arms.sleeve_share}}
    env = {**os.environ, "PYTHONPATH": str(tree), "IH_BLENDER_PYTHON": str(blender_python()),
           "IH_ASSETS_DIR": str(assets_dir())}     # the tree has no .local of its own
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


def compare(title: str, new: dict, references: dict[str, dict]) -> None:
    """``new`` and its ratio to each reference (label -> result) measured in the same run."""
    print(title)
    report("new (blocks, pooled renderers)", new)
    walls, k = new["block_walls"], new["per_block_images"]
    if len(walls) > 1:
        print(f"    first block (renderers start) {walls[0] / k:.3f} s/image, later blocks "
              f"{sum(walls[1:]) / (k * (len(walls) - 1)):.3f} s/image")
    print(f"    skin bank: {new['bank_painting_s']:.1f} s to paint its entries once (before timing)")
    for label, old in references.items():
        report(label, old)
        print(f"  ratio to {label}: {(old['wall'] / old['images']) / (new['wall'] / new['images']):.2f}x wall, "
              f"{(old['cpu'] / old['images']) / (new['cpu'] / new['images']):.2f}x CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=3, help="Cycles: render blocks of the new method (per forearm setting)")
    ap.add_argument("--baseline-blocks", type=int, default=1, help="Cycles: blocks for today's method")
    ap.add_argument("--before-blocks", type=int, default=None,
                    help="Cycles: blocks for --before-rev's block renderer (default: --blocks, the start shared alike)")
    ap.add_argument("--raster-blocks", type=int, default=6, help="raster preview: blocks of either method")
    ap.add_argument("--samples", type=int, default=DEMO["render_samples"], help="Cycles samples (demo preset's)")
    ap.add_argument("--device", default="auto", help="Cycles device: auto, cpu, cuda, optix")
    ap.add_argument("--threads", type=int, default=0, help="Cycles threads per worker (0: every core)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision holding today's method")
    ap.add_argument("--before-rev", default=BEFORE_REV, help="git revision of the block renderer before the newest change")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-before", action="store_true")
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
          f"{os.cpu_count()} CPUs, load {_load()}; forearms {DEMO_ARMS}")
    raster = RenderOptions(backend="raster")
    cycles = RenderOptions(backend="cycles", samples=args.samples, denoise=DEMO["denoise"], device=args.device,
                           subdivision=1, threads=args.threads)
    today = "today's per-image method (no forearms)"
    with tempfile.TemporaryDirectory() as tmp:
        old = None
        if not args.skip_baseline:
            old = run_baseline(args.baseline_rev, bench_poses(model, args.raster_blocks, per_block), per_block, views,
                               library, raster, Path(tmp))
        new = run_new(model, bench_poses(model, args.raster_blocks, per_block), per_block, views, library, raster, DEMO_ARMS)
        compare("raster preview, forearms on", new, {today: old} if old else {})
        have_cycles, why = cycles_available()
        if args.skip_cycles or not have_cycles:
            print(f"cycles: skipped ({'--skip-cycles' if args.skip_cycles else why})")
            return
        title = f"cycles ({args.samples} samples, denoise, device {args.device})"
        poses = bench_poses(model, args.blocks, per_block)
        references = {}
        if not args.skip_baseline:
            references[today] = run_baseline(args.baseline_rev, bench_poses(model, args.baseline_blocks, per_block),
                                             per_block, views, library, cycles, Path(tmp))
        if not args.skip_before:
            references[f"{args.before_rev}'s blocks, forearms on"] = run_baseline(
                args.before_rev, bench_poses(model, args.before_blocks or args.blocks, per_block), per_block, views, library, cycles,
                Path(tmp), DEMO_ARMS)
        compare(f"{title}, forearms on (the default)", run_new(model, poses, per_block, views, library, cycles, DEMO_ARMS),
                references)
        compare(f"{title}, forearms off", run_new(model, poses, per_block, views, library, cycles, NO_ARMS),
                {today: references[today]} if today in references else {})


if __name__ == "__main__":
    main()
