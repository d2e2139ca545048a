"""``ih-pipeline verify`` of a bucket: time against one plain read of the same bytes, and peak memory.

A local store gets ``--blocks`` render blocks (``--images`` images each, random bytes as members,
so nothing compresses) in shards of 25 blocks, with the annotation tables that locate them. The
baseline, measured in the same run, streams every object under the prefix through SHA-256 once:
what any check of every byte must cost. The verification (:func:`handsynth.verify.verify_source`)
also parses the indexes and tables and compares every row with its block. Each runs in its own
process, so its peak RSS is its own. Two sizes (``--blocks`` and four times that) show whether
memory grows with the bucket; it should not.

    python benchmarks/verify_bench.py [--blocks 40] [--images 12]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time

import pandas as pd

from handsynth import verify
from handsynth.render.blocks import BlockIndex, BlockWriter, block_key, store_index
from handsynth.storage import STREAM_BLOCK, LocalStore

#: Member sizes of one image (bytes): RGB, part labels, depth; about the size of 256x256 PNGs.
MEMBERS = {"rgb": 120_000, "label": 6_000, "depth": 40_000}
SHARD_BLOCKS = 25


def build(root: str, blocks: int, images: int) -> int:
    """Write the bucket; returns its bytes."""
    store, rows, total = LocalStore(root), {}, 0
    for b in range(blocks):
        shard = f"shard={b // SHARD_BLOCKS:05d}"
        key = block_key("renderih", shard, f"d{b:05d}")
        writer = BlockWriter(store, key)
        block_rows = [{"image_id": f"d{b:05d}/v{v:02d}",
                       **writer.add(f"d{b:05d}/v{v:02d}", {k: os.urandom(n) for k, n in MEMBERS.items()}, b"{}")}
                      for v in range(images)]
        size, sha = writer.commit()
        store_index(store, BlockIndex(key, size, sha, "digest", 0.0, 0.0, "bench:1", block_rows))
        rows.setdefault(shard, []).extend(block_rows)
        total += size
    for shard, shard_rows in rows.items():
        buf = io.BytesIO()
        pd.DataFrame(shard_rows).to_parquet(buf)
        store.put_bytes(f"renderih/annotations/{shard}.parquet", buf.getvalue())
    return total


def measure(method: str, root: str) -> None:
    """Run ``method`` over the bucket at ``root``; prints seconds and peak RSS in MiB."""
    start = time.monotonic()
    if method == "read":
        store = LocalStore(root)
        for key in store.list_keys("renderih/"):
            digest = hashlib.sha256()
            with store.open(key, "rb") as stream:
                while chunk := stream.read(STREAM_BLOCK):
                    digest.update(chunk)
    else:
        problems = list(verify.verify_source(root, None, verify.Tally()))
        assert problems == [], problems[:3]
    print(f"{time.monotonic() - start:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=40)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:
        measure(args.method, args.root)
        return
    print(f"load average {os.getloadavg()[0]:.1f}; {args.images} images per block, "
          f"{sum(MEMBERS.values()) // 1000} kB per image")
    for blocks in (args.blocks, 4 * args.blocks):
        with tempfile.TemporaryDirectory() as root:
            mib = build(root, blocks, args.images) / 2**20
            figures = {}
            for method in ("read", "verify"):
                out = subprocess.run([sys.executable, __file__, "--method", method, "--root", root],
                                     capture_output=True, text=True, check=True).stdout.split()
                figures[method] = (float(out[0]), float(out[1]))
            (rs, rm), (vs, vm) = figures["read"], figures["verify"]
            print(f"{blocks} blocks, {mib:.0f} MiB: plain read {rs:.2f} s ({mib / rs:.0f} MiB/s, peak {rm:.0f} MiB); "
                  f"verify {vs:.2f} s ({mib / vs:.0f} MiB/s, peak {vm:.0f} MiB); verify/read {vs / rs:.2f}x")


if __name__ == "__main__":
    main()
