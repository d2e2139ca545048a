"""``ih-pipeline``: run the pipeline, export the data for training, preview it, score predictions.

    ih-pipeline run [--refresh] [--shard KEY] [--wait]   the main job (ih_assets.main_job)
    ih-pipeline export --source SRC --to DIR [--formats interhand26m,intaghand] [--splits ...] [--workers N]
    ih-pipeline preview --source SRC --out sheet.png [-n 20]
    ih-pipeline verify --source SRC                    (exit 1 on any damaged or missing object)
    ih-pipeline metrics --pred P.npz --gt G.npz        (handsynth.metrics_cli)

``SRC`` is ``s3://bucket/prefix`` (the pipeline's defaults: endpoint ``IH_S3_ENDPOINT``, else the
local server, credentials ``AWS_*`` if set, else anonymous) or a local folder holding the
pipeline's keys (a local store's root or a copy of the bucket). ``export`` builds complete
folders the real loaders read, streaming: annotation rows a batch at a time, each image one
ranged read of its render block, written as JPEG, with ``SHA256SUMS`` at each folder's root;
files a previous export left and this one did not write are removed. For WebDataset training,
the render blocks under ``<prefix>/render/`` already are the shards (no export needed).
``verify`` checks a bucket (prefix) against Dagster's records of its tables (``DAGSTER_HOME``)
and its annotation tables against the render blocks, or an export against its ``SHA256SUMS``
(:mod:`handsynth.verify`): one line per problem, then a summary.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

from handsynth import cli_errors, exports, plots, training, verify as verifying
from handsynth.export_files import SUMS_FILE, ExportFiles, OpenWrite, local_files, local_writer, remove_orphans
from handsynth.render.blocks import read_member
from handsynth.storage import Store, open_store

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")
FORMATS = ("interhand26m", "intaghand")


def _progress(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    """A progress bar with rate and ETA on stderr (tqdm's default format)."""
    return iter(tqdm(items, total=total, desc=desc, unit="img", file=sys.stderr, mininterval=0.5))


def _pca_inverses(mano_dir: str) -> dict:
    """IntagHand's PCA basis: real MANO files in ``mano_dir`` or the cached stand-in."""
    if mano_dir:
        return exports.pca_inverses(mano_dir)
    from handsynth.hand_model.model import HandModel

    return exports.pca_inverses(HandModel.standin().identity["source"])


#: Part of an annotation table: its key and some of its Parquet row groups (None: all of them).
Piece = tuple[str, "list[int] | None"]


def _batches(store: Store, pieces: Iterable[Piece], columns: list[str]) -> Iterator["pd.DataFrame"]:
    return (batch for key, groups in pieces for batch in training.iter_annotation_batches(store, key, columns,
                                                                                          row_groups=groups))


def _export_images(store: Store, pieces: Iterable[Piece]) -> Iterator[exports.ExportImage]:
    """The export records of the annotation table ``pieces``, a batch of rows at a time."""
    return exports.iter_export_images(_batches(store, pieces, exports.export_columns()))


def export(source: str, out: str, formats: list[str], splits: dict[str, float], mano_dir: str = "", workers: int = 1,
           writer: OpenWrite = local_writer, listing: Callable[[Path], Iterable[str]] = local_files) -> dict[str, dict]:
    """Write the chosen layouts below ``out/<format>/``; return counts per format. ``workers`` > 1
    writes IntagHand's files with that many processes (:func:`_intaghand_in_parts`); ``writer``
    and ``listing`` open and list an export folder's files (benchmarks swap them)."""
    store, prefix = open_store(source)
    keys = training.annotation_keys(store, prefix)
    groups = [training.annotation_row_groups(store, key) for key in keys]    # one footer read per table
    whole, total = [(key, None) for key in keys], sum(map(sum, groups))
    read_image = lambda image, kind: read_member(store, image.location, kind)  # noqa: E731
    summary: dict[str, dict] = {}
    for fmt in formats:
        root = Path(out, fmt)
        with ExportFiles(writer(root)) as files:
            if fmt == "interhand26m":
                images = _progress(_export_images(store, whole), total, fmt)
                result = exports.write_interhand_dataset(images, files, read_image, splits=splits)
                summary[fmt] = {"images": result.images, "frames": result.frames}
            elif workers > 1:
                result = _intaghand_in_parts(source, store, keys, groups, root, files, splits, mano_dir, workers, writer)
                summary[fmt] = {"images": result.images}
            else:
                images = _progress(_export_images(store, whole), total, fmt)
                result = exports.write_intaghand_dataset(images, files, read_image, _pca_inverses(mano_dir),
                                                         splits=splits)
                summary[fmt] = {"images": result.images}
        summary[fmt]["files"] = files.files
        summary[fmt]["orphans_removed"] = remove_orphans(listing(root), result.expects,
                                                         lambda p, r=root: (r / p).unlink())
    return summary


def _runs(rows: list[int], parts: int) -> list[range]:
    """At most ``parts`` runs of consecutive items with about equal rows each (none empty)."""
    total, runs, start, done = sum(rows), [], 0, 0
    for i, n in enumerate(rows):
        done += n
        if done * parts >= total * (len(runs) + 1) or i == len(rows) - 1:
            runs.append(range(start, i + 1))
            start = i + 1
    return runs


def _intaghand_in_parts(source: str, store: Store, keys: list[str], row_groups: list[list[int]], root: Path,
                        files: ExportFiles, splits: dict[str, float], mano_dir: str, workers: int,
                        writer: OpenWrite) -> exports.IntagHandExport:
    """IntagHand's files written by ``workers`` processes. IntagHand numbers images 0.. per split
    in table order, so the tables' Parquet row groups (2,048 rows) are cut into runs (a few per
    worker, for an even finish), and a first pass over two columns counts each run's images per
    split: each run's ``idx`` start where the runs before it end, and the files are the very ones
    one process writes. Each run keeps its checksums beside the export; ``files`` adopts them in
    run order."""
    groups = [(key, g, n) for key, sizes in zip(keys, row_groups) for g, n in enumerate(sizes)]
    runs = [[(key, [g for k, g, _ in groups[r.start:r.stop] if k == key])
             for key in dict.fromkeys(k for k, _, _ in groups[r.start:r.stop])]
            for r in _runs([n for _, _, n in groups], 4 * workers)]
    counts = [exports.intaghand_split_counts(_batches(store, run, ["distinct_pose_id", "pose_id"]), splits) for run in runs]
    firsts = [{s: sum(c[s] for c in counts[:i]) for s in exports.SPLITS} for i in range(len(runs))]
    root.mkdir(parents=True, exist_ok=True)     # the runs' checksums wait inside (an orphan if killed)
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=root) as parts, \
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = {pool.submit(_intaghand_part, source, run, first, root, Path(parts, str(i)), splits, mano_dir, writer): i
                for i, (run, first) in enumerate(zip(runs, firsts))}
        for future in _progress(as_completed(done), len(done), f"intaghand ({workers} workers, runs of row groups)"):
            if future.result() != counts[done[future]]:    # a failed run raises: SHA256SUMS is not written
                raise exports.ExportError(f"{source}: the annotation tables of run {done[future]} changed during the "
                                          f"export ({future.result()} images per split, {counts[done[future]]} counted)")
        for i in range(len(runs)):
            with open(Path(parts, str(i), SUMS_FILE), "rb") as sums:
                files.adopt(sums)
    return exports.IntagHandExport(images={s: sum(c[s] for c in counts) for s in exports.SPLITS})


def _intaghand_part(source: str, run: list[Piece], first: dict[str, int], root: Path, sums_dir: Path,
                    splits: dict[str, float], mano_dir: str, writer: OpenWrite) -> dict[str, int]:
    """One run of row groups of a parallel IntagHand export (in a worker process)."""
    store, _ = open_store(source)
    read_image = lambda image, kind: read_member(store, image.location, kind)  # noqa: E731
    with ExportFiles(writer(root), sums_to=local_writer(sums_dir)) as files:
        return exports.write_intaghand_dataset(_export_images(store, run), files, read_image, _pca_inverses(mano_dir),
                                               splits=splits, first=first).images


def preview(source: str, out: str, n: int = 20) -> int:
    """A contact sheet of the first ``n`` images with their 2D keypoints (right red, left blue)."""
    store, prefix = open_store(source)
    dataset = training.RenderIHDataset(store, prefix)
    tiles = []
    for i in _progress(range(min(n, len(dataset))), min(n, len(dataset)), "preview"):
        item = dataset[i]
        rgb = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        tiles.append(plots.draw_keypoints(rgb, item["keypoints2d"].numpy(), item["visibility"].numpy()))
    if not tiles:
        raise SystemExit(f"{source}: no images to preview")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(plots.image_grid(tiles, cols=5, max_side=192))
    return len(tiles)


def _dagster_records(store: Store, prefix: str) -> Iterator[verifying.Record]:
    """The objects the instance in ``DAGSTER_HOME`` records under ``prefix`` of ``store``."""
    from dagster import DagsterInstance

    from resources.io_managers import recorded_objects

    with DagsterInstance.get() as instance:
        for record in recorded_objects(instance, store):
            if not prefix or record.key.startswith(prefix + "/"):
                yield record


def verify(source: str) -> int:
    """Print each problem of ``source`` as it is found, then a summary; 1 when there was any."""
    started, tally = time.monotonic(), verifying.Tally()
    records = _dagster_records if os.environ.get("DAGSTER_HOME") else None
    note = lambda: print("ih-pipeline verify: DAGSTER_HOME is not set, so the tables are not checked against "  # noqa: E731
                         "their recorded hashes (the render blocks are)", file=sys.stderr)
    for problem in verifying.verify_source(source, records, tally, note):
        tally.problems += 1
        print(problem, flush=True)
    print(tally.summary(time.monotonic() - started))
    return 1 if tally.problems else 0


def main(argv: list[str] | None = None) -> int:
    """Refused arguments and inputs are one line on stderr and a non-zero exit; ``--debug``
    anywhere (or ``IH_DEBUG=1``) shows tracebacks instead (:mod:`handsynth.cli_errors`)."""
    debug, argv = cli_errors.debug_requested(sys.argv[1:] if argv is None else list(argv))
    return cli_errors.run_reporting(lambda: _main(argv, debug), "ih-pipeline", debug)


def _main(argv: list[str], debug: bool) -> int:
    parser = cli_errors.OneLineParser(prog="ih-pipeline", description=__doc__.splitlines()[0],
                                      epilog=f"{cli_errors.DEBUG_FLAG} (anywhere) or {cli_errors.DEBUG_ENV}=1: "
                                             "tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="materialize the pipeline (all arguments go to ih_assets.main_job)", add_help=False)
    ex = sub.add_parser("export", help="bucket or local folder -> local IH2.6M / IntagHand folders")
    ex.add_argument("--source", required=True, help="s3://bucket/prefix or a local folder")
    ex.add_argument("--to", required=True, help="output folder (one sub-folder per format)")
    ex.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    ex.add_argument("--splits", default="train=0.8,val=0.1,test=0.1", help="fractions of distinct poses per split")
    ex.add_argument("--mano-dir", default=os.environ.get("IH_MANO_DIR", ""), help="MANO files (default: stand-in)")
    ex.add_argument("--workers", type=int, default=1,
                    help="processes writing IntagHand's files (the same files as one; ~10 ms of CPU per image)")
    pv = sub.add_parser("preview", help="contact sheet of images with keypoints")
    pv.add_argument("--source", required=True)
    pv.add_argument("--out", required=True, help="PNG to write")
    pv.add_argument("-n", type=int, default=20)
    vf = sub.add_parser("verify", help="check a bucket or an export against its records; exit 1 on any problem")
    vf.add_argument("--source", required=True, help="s3://bucket/prefix, a local store or an export folder")
    sub.add_parser("metrics", help="MPJPE etc. of predictions (arguments go to handsynth.metrics_cli)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "run":
        from ih_assets.main_job import main as run_main

        return run_main(rest + [cli_errors.DEBUG_FLAG] if debug else rest)
    if args.command == "metrics":
        from handsynth.metrics_cli import main as metrics_main

        return metrics_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "export":
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            parser.error(f"--formats {args.formats!r}: unknown format(s) {unknown}; choose from {list(FORMATS)}")
        try:
            splits = exports.parse_splits(args.splits)
        except exports.ExportError as exc:
            parser.error(f"--splits {args.splits!r}: {exc}")
        if args.workers < 1:
            parser.error(f"--workers {args.workers}: at least 1")
        for fmt, counts in export(args.source, args.to, formats, splits, args.mano_dir, args.workers).items():
            print(f"{fmt}: {counts} -> {Path(args.to, fmt)}")
        return 0
    if args.command == "verify":
        return verify(args.source)
    shown = preview(args.source, args.out, args.n)
    print(f"{shown} images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
