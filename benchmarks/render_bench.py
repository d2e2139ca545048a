"""Rendering throughput at 256 x 256 with every output encoded and stored, per backend and stage.

Stages: pose (hand model forward), raster (labels + depth + visibility + silhouette check, and
the preview RGB), cycles (Blender Cycles RGB through the long-lived worker, composite, tone
curve), encode (3 PNGs), upload (PUT to a real SeaweedFS server started here, or a local folder
if the weed binary is missing). The raster stage splits into raster (RGB, labels, depth), visibility
(per-joint skin test) and mask_check (numpy silhouette at pixel centres vs labels). Baselines
measured in the same run: the old mask check (skimage, one polygon per triangle in a Python loop),
a fresh OffscreenRenderer per image (raster) and a fresh Blender worker per image (Cycles; what a
process-per-image pipeline pays). CPU time per image is printed beside wall time: the 2 cores
are often shared, and CPU time depends much less on what else runs.

    python benchmarks/render_bench.py [--poses 2] [--views 3] [--samples 8] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from handsynth import envmaps, views as views_module
from handsynth.cameras import Camera, project
from handsynth.hand_model.model import HandModel
from handsynth.render import RenderOptions
from handsynth.render.cycles import cycles_available
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import StageTimes, render_pose_views
from resources.settings import PRESETS
from handsynth.assets import NPM_HDRI_PACKAGE, assets_dir


def _silhouette_per_triangle(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """The old mask check, kept here as the baseline: skimage fills one triangle per Python call."""
    from skimage.draw import polygon

    uv = project(vertices, camera.K, camera.R, camera.t)
    mask = np.zeros((camera.height, camera.width), dtype=bool)
    for tri in faces:
        rr, cc = polygon(uv[tri, 1], uv[tri, 0], shape=mask.shape)   # pixel centres at integer coordinates
        mask[rr, cc] = True
    return mask


def _run(model, poses, views, library, store, options: RenderOptions, fresh: bool) -> tuple[int, StageTimes, float, dict]:
    """Images, stage times, wall seconds and the backend record; ``times.cpu`` holds this
    process's CPU seconds (all threads, llvmpipe's too; not the Blender worker's)."""
    times = StageTimes()
    times.seconds["upload"] = 0.0
    count, backend = 0, {}
    t0, c0 = time.perf_counter(), time.process_time()
    if fresh:  # one renderer (GL context / Blender process) per image
        for i in range(len(poses)):
            for v in range(views):
                for img in render_pose_views(model, poses.take([i]), "shard=bench", 1, 256, library, times=times,
                                             options=options):
                    count, backend = count + 1, img.backend
    else:
        for img in render_pose_views(model, poses, "shard=bench", views, 256, library, times=times, options=options):
            t = time.perf_counter()
            for kind, data in img.pngs.items():
                store.put_bytes(img.record.keys[kind], data)
            times.add("upload", t)
            count, backend = count + 1, img.backend
    times.cpu = time.process_time() - c0
    return count, times, time.perf_counter() - t0, backend


def _report(label: str, n: int, times: StageTimes, total: float, where: str) -> None:
    print(f"{label}: {n} images at 256x256 (RGB, labels, depth PNGs) stored to {where}: "
          f"{total:.1f} s = {total / n:.2f} s/image = {n / total:.1f} images/s "
          f"({times.cpu / n * 1000:.0f} ms CPU/image in this process)")
    for stage, sec in times.seconds.items():
        print(f"  {stage:7s} {sec / n * 1000:8.1f} ms/image")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poses", type=int, default=2)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--samples", type=int, default=PRESETS["demo"]["render_samples"], help="Cycles samples (demo preset's by default)")
    ap.add_argument("--device", default="auto", help="Cycles device: auto, cpu, cuda, optix")
    ap.add_argument("--no-denoise", action="store_true")
    ap.add_argument("--skip-baselines", action="store_true")
    args = ap.parse_args()
    model = HandModel.standin()
    poses = generate_interacting_poses(model, args.poses, seed=0)
    npm = assets_dir() / NPM_HDRI_PACKAGE / "hdri"
    if npm.is_dir():
        library, maps = {k: env for k, (env, _) in envmaps.load_npm_hdris(npm).items()}, "npm Poly Haven HDRIs"
    else:
        library, maps = {f"map{i}": envmaps.procedural_envmap(i) for i in range(4)}, "procedural maps"
    raster = RenderOptions(backend="raster")
    cycles = RenderOptions(backend="cycles", samples=args.samples, denoise=not args.no_denoise, device=args.device,
                           subdivision=1)
    have_cycles, why = cycles_available()
    print(f"environment maps: {len(library)} {maps}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            from handsynth.storage import S3Settings, S3Store
            from resources.seaweed import SeaweedServer

            server = SeaweedServer(tmp).start()
            store, where = S3Store("bench", S3Settings(server.endpoint_url, anonymous=True)), f"SeaweedFS at {server.endpoint_url}"
        except Exception as exc:  # no weed binary: still measure, into a folder
            from handsynth.storage import LocalStore

            server, store, where = None, LocalStore(tmp), f"local folder ({exc})"
        try:
            n, times, total, _ = _run(model, poses, args.views, library, store, raster, fresh=False)
            _report("raster", n, times, total, where)
            if not args.skip_baselines:
                vectorised = views_module.silhouette_from_projection
                views_module.silhouette_from_projection = _silhouette_per_triangle
                try:
                    nb, tb, totb, _ = _run(model, poses.take([0]), 2, library, store, raster, fresh=False)
                finally:
                    views_module.silhouette_from_projection = vectorised
                print(f"  baseline, old per-triangle mask check: {nb / totb:.1f} images/s "
                      f"({tb.cpu / nb * 1000:.0f} ms CPU/image); mask check "
                      f"{tb.seconds['mask_check'] / nb * 1000:.1f} -> {times.seconds['mask_check'] / n * 1000:.1f} ms/image")
                nf, _, tf, _ = _run(model, poses.take([0]), 2, library, store, raster, fresh=True)
                print(f"  baseline, fresh GL renderer per image (no upload): {tf / nf:.2f} s/image; "
                      f"reused renderer speed-up {(tf / nf) / (total / n):.1f}x")
            if not have_cycles:
                print(f"cycles: skipped ({why})")
                return
            n, times, total, backend = _run(model, poses, args.views, library, store, cycles, fresh=False)
            _report(f"cycles ({backend['samples']} samples, denoise={backend['denoise']}, device {backend['device']}, "
                    f"Blender {backend['blender']})", n, times, total, where)
            if not args.skip_baselines:
                nf, _, tf, _ = _run(model, poses.take([0]), 2, library, store, cycles, fresh=True)
                print(f"  baseline, fresh Blender worker per image (no upload): {tf / nf:.2f} s/image; "
                      f"long-lived worker speed-up {(tf / nf) / (total / n):.1f}x")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
