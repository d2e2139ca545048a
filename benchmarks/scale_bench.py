"""Paper scale without rendering: the source stages on 1.4M frames, the post-render stages on
10K / 100K / 1M images. Wall time and peak RSS per stage and size, each stage in its own process.

Source stages (``--frames``, default 1.4M: InterHand2.6M's interacting frames):

- ``generate``: writes an InterHand2.6M-format ``MANO_NeuralAnnot.json`` (``{capture: {frame:
  {"right"|"left": {"pose": 48, "shape": 10, "trans": 3}}}}``) of video-like sequences: a few
  thousand base two-hand poses, each performed for 100-800 frames with a slow bounded drift,
  so dedup sees IH2.6M's redundancy. Not a pipeline stage (it makes the input).
- ``parse``: :func:`handsynth.sources.interhand.load_interhand_mano` (the ``raw_poses`` reader).
- ``dedup``: :func:`handsynth.dedup.remove_similar_poses` at the paper preset's 12 mm.
- ``anchors``: :func:`handsynth.anchors.select_anchors` on the *deduped* poses (one per cluster of
  near-identical frames), not on every raw frame: contact frequency is a statistic over
  distinct hand configurations, and 1.4M raw frames mostly repeat the deduped ones. (Over every
  raw frame it runs for hours on 2 cores: the issue saw it still running after 10 minutes on
  73K frames.)

Post-render stages, per size (``--sizes``): first ``build`` makes a store like the pipeline's:
annotation tables of 15,000 rows per shard (the paper preset's 50 distinct poses x 30
augmentations x 10 views), written with the IO manager's codec. Row contents are real: one
template shard is made with :func:`handsynth.annotate.annotation_row` from stand-in MANO
forward passes and look-at cameras; other shards repeat it with their own ids, poses and block
keys. Image bytes are shared placeholders: one render block (a 256x256 RGB, label and depth
PNG sample), hard-linked under every distinct pose's block key, so each row's ranged read is
real. Then, each in a fresh process:

- ``manifest``: every shard's :func:`handsynth.shard_summary.summarize` (what the
  ``annotations`` steps record; here over the stored tables' batches) and their
  :func:`~handsynth.shard_summary.combine` (what ``dataset_manifest`` does);
- ``interhand26m`` and ``intaghand``: ``ih-pipeline export`` (:func:`ih_assets.cli.export`),
  streaming from the store; ``--sink null`` (default) hashes every file and discards it, so the
  figure is the exporter's, not the disk's (``--sink local`` writes the folder); ``--workers N``
  writes IntagHand's files with N processes (the note adds the largest worker's peak RSS);
- ``training_index``: :class:`handsynth.training.RenderIHDataset` built, then its first item.

Printed per stage: seconds, seconds per 1,000 images (or frames), peak RSS (``ru_maxrss`` of the
stage's process: ``VmHWM``) and the RSS right after imports, so the growth with size is visible.

Usage: python benchmarks/scale_bench.py [--sizes 10000,100000] [--frames 1400000]
       [--stages source,post] [--work DIR] [--sink null|local] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

PREFIX = "renderih"
SHARD_ROWS = 15_000        # paper preset: 50 distinct poses x 30 augmentations x 10 views
VIEWS, AUGMENTATIONS = 10, 30
IMAGE_SIZE = 256
SOURCE_STAGES = ("generate", "parse", "dedup", "anchors")
POST_STAGES = ("manifest", "interhand26m", "intaghand", "training_index")


def _rss_mib() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` of /proc (the peak of this program's own memory;
    ``ru_maxrss`` survives fork + exec, so a child would report its parent's peak), else ru_maxrss."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the source file ------------------------------------------------------------------------------


def _frames(n: int, seed: int = 0, n_base: int = 3000, block: int = 20_000) -> Iterator[dict[str, np.ndarray]]:
    """MANO parameters of video-like two-hand sequences in blocks: per side pose (b, 48), shape
    (b, 10), trans (b, 3); a base pose per sequence, a slow drift, a per-sequence hand shape."""
    rng = np.random.default_rng(seed)
    base = {s: rng.normal(0.0, 0.35, (n_base, 48)) for s in ("right", "left")}
    lengths: list[int] = []
    while sum(lengths) < n:
        lengths.append(int(rng.integers(100, 800)))
    lengths[-1] -= sum(lengths) - n
    seq = np.repeat(np.arange(len(lengths)), lengths)
    t = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    pose_of_seq = rng.integers(0, n_base, len(lengths))
    shape_of_seq = rng.normal(0.0, 0.8, (len(lengths), 10))
    freq = rng.uniform(0.002, 0.02, len(lengths))
    phase = rng.uniform(0, 2 * np.pi, (len(lengths), 2, 48))
    for lo in range(0, n, block):
        sl = slice(lo, min(lo + block, n))
        s = seq[sl]
        wave = np.sin(2 * np.pi * freq[s][:, None, None] * t[sl][:, None, None] + phase[s]) * 0.06
        out = {}
        for h, side in enumerate(("right", "left")):
            out[f"{side}_pose"] = base[side][pose_of_seq[s]] + wave[:, h]
            out[f"{side}_shape"] = shape_of_seq[s]
            out[f"{side}_trans"] = np.array([0.05 if side == "right" else -0.05, 0.0, 0.5]) + wave[:, h, :3] * 0.05
        yield out


def generate(path: Path, n: int) -> None:
    """Write the IH2.6M-format MANO file, frame by frame (never the whole document in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = 0
    with open(path, "w") as out:
        out.write('{"0":{')
        for block in _frames(n):
            for i in range(len(block["right_pose"])):
                hands = {side: {k: np.round(block[f"{side}_{k}"][i], 6).tolist() for k in ("pose", "shape", "trans")}
                         for side in ("right", "left")}
                out.write(("," if frame else "") + f'"{frame}":' + json.dumps(hands, separators=(",", ":")))
                frame += 1
        out.write("}}")


# ---- the store of a size ----------------------------------------------------------------------------


def _placeholder_block() -> tuple[bytes, dict[str, Any]]:
    """One render block tar with one sample, and the location columns of its members."""
    from handsynth.render.blocks import BlockWriter
    from handsynth.render.raster import encode_png
    from handsynth.storage import MemoryStore

    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE
    rgb = (np.stack([x, y, 1 - x * y], -1) * 200).astype(np.uint8)
    labels = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    labels[60:140, 70:120], labels[110:190, 130:180] = 7, 23
    rgb[labels > 0] = (210, 160, 140)
    depth = np.where(labels > 0, 520, 0).astype(np.uint16)
    store = MemoryStore()
    writer = BlockWriter(store, "block.tar")
    location = writer.add("placeholder", {"rgb": encode_png(rgb), "label": encode_png(labels), "depth": encode_png(depth)},
                          b"{}")
    writer.commit()
    return store.get_bytes("block.tar"), location


def _template_shard(rows: int, location: dict[str, Any], seed: int = 0) -> Any:
    """A shard's annotation table made the pipeline's way (annotation_row of ImageRecords)."""
    import torch

    from handsynth.annotate import ImageRecord, annotation_row, annotation_table
    from handsynth.cameras import look_at
    from handsynth.hand_model.model import HandModel

    rng = np.random.default_rng(seed)
    model = HandModel.standin()
    n_poses = rows // VIEWS
    hands = {}
    keypoints = []
    for h, side in enumerate(("right", "left")):
        params = {"global_orient": rng.normal(0, 0.3, (n_poses, 3)), "hand_pose": rng.normal(0, 0.35, (n_poses, 45)),
                  "betas": rng.normal(0, 0.8, (n_poses, 10)),
                  "transl": np.array([0.05 - 0.1 * h, 0.0, 0.0]) + rng.normal(0, 0.01, (n_poses, 3))}
        with torch.no_grad():
            out = model.forward(side, *(torch.as_tensor(params[k], dtype=torch.float32)
                                        for k in ("global_orient", "hand_pose", "betas", "transl")))
        keypoints.append(out.keypoints.double().numpy())
        hands[side] = params
    keypoints = np.stack(keypoints, axis=1)  # (P, 2, 21, 3)
    f = IMAGE_SIZE * 1.4
    K = np.array([[f, 0, IMAGE_SIZE / 2 - 0.5], [0, f, IMAGE_SIZE / 2 - 0.5], [0, 0, 1]])
    table_rows = []
    for p in range(n_poses):
        distinct, aug = divmod(p, AUGMENTATIONS)
        pose_id = f"ih26m/train/{distinct:07d}/aug{aug:02d}"
        for v in range(VIEWS):
            R, t = look_at(keypoints[p].reshape(-1, 3).mean(0), rng.uniform(0, 360), rng.uniform(-60, 60), 0.5,
                           rng.uniform(-30, 30))
            record = ImageRecord(
                image_id=f"{pose_id}/v{v:02d}",
                pose={"pose_id": pose_id, "distinct_pose_id": f"ih26m/train/{distinct:07d}",
                      "source_ref": f"InterHand2.6M_train_MANO_NeuralAnnot.json#0/{distinct}", "shard": "shard=00000"},
                hands={s: {k: hands[s][k][p] for k in hands[s]} for s in ("right", "left")},
                keypoints_world=keypoints[p], K=K, R=R, t=t, width=IMAGE_SIZE, height=IMAGE_SIZE,
                visibility=rng.random((2, 21)) < 0.8, view=v, render_seed=int(rng.integers(2**31)), envmap="studio")
            table_rows.append({**annotation_row(record, model.name), **location})
    return annotation_table(table_rows)


def build(work: Path, size: int) -> None:
    """The store of ``size`` images: annotation tables (15,000 rows a shard) and block tars."""
    from handsynth.render.blocks import block_key
    from resources.codecs import encode

    root = work / f"n{size}" / "store"
    tar, location = _placeholder_block()
    template = _template_shard(min(size, SHARD_ROWS), location)
    master = work / "placeholder.tar"
    work.mkdir(parents=True, exist_ok=True)
    master.write_bytes(tar)
    shards = -(-size // SHARD_ROWS)
    distinct_per_shard = SHARD_ROWS // (VIEWS * AUGMENTATIONS)
    for s in range(shards):
        shard = f"shard={s:05d}"
        rows = min(SHARD_ROWS, size - s * SHARD_ROWS)
        table = template.iloc[:rows].copy()
        old = table["distinct_pose_id"].str.rsplit("/", n=1).str[1].astype(int)
        new = (old + s * distinct_per_shard).map(lambda d: f"ih26m/train/{d:07d}")
        aug = table["pose_id"].str.rsplit("/", n=1).str[1]
        table["distinct_pose_id"] = new.astype("string")
        table["pose_id"] = (new + "/" + aug).astype("string")
        table["image_id"] = (table["pose_id"] + "/" + table["image_id"].str.rsplit("/", n=1).str[1]).astype("string")
        table["source_ref"] = ("InterHand2.6M_train_MANO_NeuralAnnot.json#0/" + new.str.rsplit("/", n=1).str[1]).astype("string")
        table["shard"] = shard
        table["tar_key"] = [block_key(PREFIX, shard, d) for d in table["distinct_pose_id"]]
        table = table.astype({c: "string" for c in ("shard", "tar_key")})
        for key in table["tar_key"].unique():
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.link(master, path)
        ext, data = encode(table)
        path = root / PREFIX / "annotations" / f"{shard}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# ---- one stage, in this process -----------------------------------------------------------------


class _Discard:
    """A write stream that hashes and drops its bytes (the ``null`` sink)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)

    def __enter__(self) -> "_Discard":
        return self

    def __exit__(self, *_: Any) -> None:
        pass


def _discard_writer(root: Path):
    """The ``null`` sink's ``open_write`` for an export folder (a top-level function: export
    worker processes receive it by name)."""
    return lambda path: _Discard()


def run_stage(stage: str, work: Path, size: int, sink: str, workers: int = 1) -> dict[str, Any]:
    """Run one stage here; returns its figures (imports happen before the clock and the base RSS)."""
    from handsynth import shard_summary, training
    from handsynth.storage import LocalStore
    from ih_assets import cli

    base = _rss_mib()
    start = time.monotonic()
    mano = work / "source" / "InterHand2.6M_train_MANO_NeuralAnnot.json"
    store_root = str(work / f"n{size}" / "store")
    note = ""
    if stage == "generate":
        generate(mano, size)
    elif stage == "parse":
        from handsynth.sources.interhand import load_interhand_mano
        from resources.codecs import encode

        table = load_interhand_mano(str(mano))
        ext, data = encode(table)
        (work / "source" / f"raw{ext}").write_bytes(data)
        note = f"{len(table):,} two-hand frames"
    elif stage in ("dedup", "anchors"):
        from handsynth.dedup import remove_similar_poses
        from handsynth.hand_model.model import HandModel
        from resources.codecs import decode, encode

        model = HandModel.standin()
        if stage == "dedup":
            path = next((work / "source").glob("raw.*"))
            raw = decode(path.name, path.read_bytes())
            start = time.monotonic()  # decoding the stored raw table is not the stage
            kept = remove_similar_poses(model, raw, 12.0, 50)
            ext, data = encode(kept)
            (work / "source" / f"deduped{ext}").write_bytes(data)
            note = f"{len(raw):,} -> {len(kept):,} poses"
        else:
            from handsynth.anchors import select_anchors

            path = next((work / "source").glob("deduped.*"))
            kept = decode(path.name, path.read_bytes())
            start = time.monotonic()
            select_anchors(model, kept, 100)
            note = f"over {len(kept):,} deduped poses"
    elif stage == "build":
        build(work, size)
    elif stage == "manifest":
        store = LocalStore(store_root)
        summaries = {key: shard_summary.summarize(training.iter_annotation_batches(store, key, list(shard_summary.COLUMNS)))
                     for key in training.annotation_keys(store, PREFIX)}
        totals = shard_summary.combine(summaries)
        note = f"{totals['images']:,} images in {len(summaries)} shards"
    elif stage in ("interhand26m", "intaghand"):
        # the CLI's own export; with the null sink its folder writer is swapped for a discarding one
        sinks = {"writer": _discard_writer, "listing": lambda root: iter(())} if sink == "null" else {}
        summary = cli.export(store_root, str(work / f"n{size}" / "export"), [stage], {"train": 0.8, "val": 0.1,
                                                                                       "test": 0.1},
                             workers=workers, **sinks)
        note = f"{summary[stage]['files']:,} files" + (f", {workers} workers" if stage == "intaghand" and workers > 1 else "")
    elif stage == "training_index":
        from handsynth.training import RenderIHDataset

        dataset = RenderIHDataset(LocalStore(store_root), PREFIX, index_dir=work)
        item = dataset[0]
        note = f"{len(dataset):,} items, first image {tuple(item['image'].shape)}"
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    if stage == "intaghand" and workers > 1:      # the largest worker process's peak
        note += f" (largest worker: peak RSS {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB)"
    return {"stage": stage, "size": size, "seconds": time.monotonic() - start, "peak_rss_mib": _rss_mib(),
            "rss_after_imports_mib": base, "note": note}


# ---- driver -----------------------------------------------------------------------------------


def _in_subprocess(stage: str, work: Path, size: int, sink: str, workers: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--run-stage", stage, "--work", str(work), "--size", str(size), "--sink", sink,
           "--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} at {size}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000", help="post-render sizes in images, comma-separated")
    ap.add_argument("--frames", type=int, default=1_400_000, help="frames of the generated IH2.6M MANO file")
    ap.add_argument("--stages", default="source,post", help="source, post or both; or stage names")
    ap.add_argument("--work", default=str(ROOT / ".local" / "scale_bench"), help="scratch folder (GBs at 1M)")
    ap.add_argument("--sink", choices=("null", "local"), default="null", help="where exports write")
    ap.add_argument("--workers", type=int, default=1, help="processes of the IntagHand export (ih-pipeline export --workers)")
    ap.add_argument("--run-stage", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.run_stage:
        print(json.dumps(run_stage(args.run_stage, work, args.size, args.sink, args.workers)))
        return
    wanted = {s for part in args.stages.split(",") for s in
              (SOURCE_STAGES if part == "source" else POST_STAGES if part == "post" else (part,))}
    load = os.getloadavg()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
          f"sink {args.sink}")
    print(f"{'stage':<15} {'size':>10} {'seconds':>9} {'s/1k':>7} {'peak RSS MiB':>13} {'after imports':>14}  note")

    def show(r: dict[str, Any]) -> None:
        print(f"{r['stage']:<15} {r['size']:>10,} {r['seconds']:>9.1f} {1000 * r['seconds'] / max(r['size'], 1):>7.3f} "
              f"{r['peak_rss_mib']:>13.0f} {r['rss_after_imports_mib']:>14.0f}  {r['note']}", flush=True)

    for stage in SOURCE_STAGES:
        if stage in wanted:
            show(_in_subprocess(stage, work, args.frames, args.sink))
    for size in [int(s) for s in args.sizes.split(",") if s]:
        if not wanted & set(POST_STAGES):
            break
        if not (work / f"n{size}" / "store").is_dir():
            r = _in_subprocess("build", work, size, args.sink)
            print(f"# built the store of {size:,} images in {r['seconds']:.0f} s (peak RSS {r['peak_rss_mib']:.0f} MiB)",
                  flush=True)
        for stage in POST_STAGES:
            if stage in wanted:
                show(_in_subprocess(stage, work, size, args.sink, args.workers))
    load = os.getloadavg()
    print(f"# done, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
