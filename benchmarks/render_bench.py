"""Rendering throughput at 256 x 256 on 2 CPU cores with every output encoded and stored.

Stages: pose (hand model forward), render (RGB + labels + depth + visibility + silhouette check),
encode (3 PNGs), upload (PUT to a real SeaweedFS server started here, or a local folder if the
weed binary is missing). Baseline in the same run: a fresh OffscreenRenderer per image.

    python benchmarks/render_bench.py [--poses 6] [--views 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time


from handsynth import envmaps
from handsynth.hand_model.model import HandModel
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import StageTimes, render_pose_views


def _run(model, poses, views, library, store, fresh: bool) -> tuple[int, StageTimes, float]:
    times = StageTimes()
    times.seconds["upload"] = 0.0
    count = 0
    t0 = time.perf_counter()
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
    return count, times, time.perf_counter() - t0


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
            n, times, total = _run(model, poses, args.views, library, store, fresh=False)
            print(f"{n} images at 256x256 (RGB, labels, depth PNGs) stored to {where}: {total:.1f} s = {n / total:.1f} images/s")
            for stage, sec in times.seconds.items():
                print(f"  {stage:7s} {sec / n * 1000:7.1f} ms/image")
            m = min(3, len(poses))
            nf, _, tf = _run(model, poses.take(range(m)), 2, library, store, fresh=True)
            print(f"baseline, fresh renderer per image (no upload): {nf / tf:.1f} images/s; "
                  f"reused renderer speed-up {(n / total) / (nf / tf):.1f}x")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
