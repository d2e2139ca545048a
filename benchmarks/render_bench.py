"""Rendering throughput at 256 x 256 on 2 CPU cores with every output encoded and stored.

Stages: pose (hand model forward), render (camera, skin, background, RGB pass + label/depth pass),
visibility (per-joint skin test), mask_check (numpy silhouette at pixel centres vs labels), encode
(3 PNGs), upload (PUT to a real SeaweedFS server started here, or a local folder if the weed binary
is missing). Baselines in the same run: the old mask check (skimage, one polygon per triangle, a
Python loop) swapped in for the vectorised one, and a fresh OffscreenRenderer per image.

    python benchmarks/render_bench.py [--poses 6] [--views 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time


import numpy as np

from handsynth import envmaps, views as views_module
from handsynth.cameras import Camera, project
from handsynth.hand_model.model import HandModel
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import StageTimes, render_pose_views


def _silhouette_per_triangle(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """The old mask check, kept here as the baseline: skimage fills one triangle per Python call."""
    from skimage.draw import polygon

    uv = project(vertices, camera.K, camera.R, camera.t)
    mask = np.zeros((camera.height, camera.width), dtype=bool)
    for tri in faces:
        rr, cc = polygon(uv[tri, 1], uv[tri, 0], shape=mask.shape)   # pixel centres at integer coordinates
        mask[rr, cc] = True
    return mask


def _print_stages(times: StageTimes, n: int) -> None:
    for stage, sec in times.seconds.items():
        print(f"  {stage:10s} {sec / n * 1000:7.1f} ms/image")


def _run(model, poses, views, library, store, fresh: bool) -> tuple[int, StageTimes, float, float]:
    """Images, stage times, wall seconds and this process's CPU seconds (all threads: llvmpipe's
    too). The 2 cores are shared, so wall time depends on what else runs; CPU time much less."""
    times = StageTimes()
    count = 0
    t0, c0 = time.perf_counter(), time.process_time()
    if fresh:  # one renderer (GL context) per image
        for i in range(len(poses)):
            for v in range(views):
                for img in render_pose_views(model, poses.take([i]), "shard=bench", 1, 256, library, times=times):
                    count += 1
    else:
        for img in render_pose_views(model, poses, "shard=bench", views, 256, library, times=times):
            t = time.perf_counter()
            for kind, data in img.pngs.items():
                store.put_bytes(img.record.keys[kind], data)
            times.add("upload", t)
            count += 1
    return count, times, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poses", type=int, default=6)
    ap.add_argument("--views", type=int, default=10)
    args = ap.parse_args()
    model = HandModel.standin()
    poses = generate_interacting_poses(model, args.poses, seed=0)
    library = {f"map{i}": envmaps.procedural_envmap(i) for i in range(4)}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            from resources.object_store import S3ObjectStore
            from resources.seaweed import SeaweedServer

            server = SeaweedServer(tmp).start()
            store, where = S3ObjectStore(server.client(), "bench"), f"SeaweedFS at {server.endpoint_url}"
        except Exception as exc:  # no weed binary: still measure, into a folder
            from resources.object_store import LocalObjectStore

            server, store, where = None, LocalObjectStore(tmp), f"local folder ({exc})"
        try:
            n, times, total, cpu = _run(model, poses, args.views, library, store, fresh=False)
            print(f"{n} images at 256x256 (RGB, labels, depth PNGs) stored to {where}: {total:.1f} s = {n / total:.1f} images/s"
                  f" ({cpu / n * 1000:.0f} ms CPU/image)")
            _print_stages(times, n)
            m = min(3, len(poses))
            vectorised = views_module.silhouette_from_projection
            views_module.silhouette_from_projection = _silhouette_per_triangle
            try:
                nb, tb, totb, cpub = _run(model, poses.take(range(m)), 2, library, store, fresh=False)
            finally:
                views_module.silhouette_from_projection = vectorised
            print(f"baseline, old per-triangle mask check: {nb / totb:.1f} images/s ({cpub / nb * 1000:.0f} ms CPU/image); "
                  f"mask check {tb.seconds['mask_check'] / nb * 1000:.1f} -> {times.seconds['mask_check'] / n * 1000:.1f} "
                  f"ms/image; whole path speed-up {(n / total) / (nb / totb):.1f}x")
            nf, _, tf, _ = _run(model, poses.take(range(m)), 2, library, store, fresh=True)
            print(f"baseline, fresh renderer per image (no upload): {nf / tf:.1f} images/s; "
                  f"reused renderer speed-up {(n / total) / (nf / tf):.1f}x")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
