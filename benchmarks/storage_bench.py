"""Writing one large object to a real SeaweedFS server: streamed vs whole, time and peak memory.

The streamed write (``Store.open(key, "wb")``: a multipart upload in parts of
``STREAM_BLOCK``) is what the per-block tars and exports use; the baseline, measured in the
same run, is ``put_bytes`` of the same bytes built in memory first (what writing a whole tar
costs). Each method runs in its own process so that each peak RSS is its own; the figure is the
peak minus the RSS before the write. Expect the streamed peak to stay near a few parts whatever
the size, and the baseline's to grow with it.

    python benchmarks/storage_bench.py [--mib 256]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from handsynth.storage import STREAM_BLOCK, S3Settings, S3Store


def _write(method: str, endpoint: str, mib: int) -> None:
    """One write of ``mib`` MiB by ``method``; prints seconds and peak RSS growth in MiB."""
    store = S3Store("storage-bench", S3Settings(endpoint_url=endpoint, anonymous=True))
    store.put_bytes("warm-up.bin", b"x")  # session and bucket set up before the baseline RSS
    chunk = os.urandom(2**20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    if method == "streamed":
        with store.open(f"{method}.bin", "wb") as out:
            for _ in range(mib):
                out.write(chunk)
    else:
        store.put_bytes(f"{method}.bin", chunk * mib)
    seconds = time.monotonic() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert store.size(f"{method}.bin") == mib * 2**20
    print(f"{seconds:.2f} {grown:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="object size in MiB")
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:
        _write(args.method, args.endpoint, args.mib)
        return
    from resources.seaweed import SeaweedServer

    print(f"load average {os.getloadavg()[0]:.1f}; {args.mib} MiB object, parts of {STREAM_BLOCK // 2**20} MiB")
    results = {}
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer(tmp) as server:
        for method in ("put_bytes", "streamed"):
            out = subprocess.run([sys.executable, __file__, "--method", method, "--endpoint", server.endpoint_url,
                                  "--mib", str(args.mib)], capture_output=True, text=True, check=True).stdout
            results[method] = tuple(float(x) for x in out.split())
            print(f"{method:>9}: {results[method][0]:6.2f} s, peak RSS +{results[method][1]:.0f} MiB")
    ratio = results["streamed"][1] / max(results["put_bytes"][1], 1.0)
    print(f"streamed / put_bytes peak memory: {ratio:.2f}")


if __name__ == "__main__":
    main()
