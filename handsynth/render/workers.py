"""Render a shard's blocks in N worker processes, resumably (see :mod:`handsynth.render.blocks`).

:func:`render_shard` checks every block of the shard (a block stored complete and current is
skipped; a missing, stale, truncated or altered one is rendered again), deletes what the shard no
longer holds, and spreads the remaining blocks over ``workers`` processes. Each worker is a fresh
interpreter (``spawn``: no GL context, torch thread pool or open socket is inherited) running ONE
``render_pose_views`` generator over its blocks, so its renderer (and Cycles' Blender process) is
started once and kept for all of them; after a failing block it starts again with the next one.
A worker that finished its blocks waits for the next shard of the same process (:data:`_IDLE`):
a main job renders its shards one after the other, and a new interpreter with torch, GL and
Blender cost several seconds per shard (most of a small shard's render step).

Workers only render. They send each finished image to the parent over a pipe, and the parent
appends it to that block's tar as it arrives and writes the index when the block's last image is
in: every object is written by one process, through the one store the step was given (a memory
store in tests, S3 in production), and the pipe applies back-pressure, so memory stays bounded by
the blocks in flight. Workers die with the parent (``PR_SET_PDEATHSIG``): a killed step leaves
only whole blocks behind (an index is written after its tar), and the next run renders the rest.
A failing block fails only itself; the caller decides what that means for the step.
"""

from __future__ import annotations

import atexit
import ctypes
import heapq
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, Literal

import numpy as np
import pandas as pd
import torch

from handsynth import annotate, plots
from handsynth.arms import ArmOptions
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.render import RenderOptions
from handsynth.render.blocks import Block, BlockCheck, BlockIndex, BlockWriter, check_block, index_key, store_index
from handsynth.render.camera_effects import CameraEffects
from handsynth.render.depth_of_field import DepthOfField
from handsynth.views import CameraLook, RenderedImage, StageTimes, render_pose_views

#: Images on the asset's contact sheet; each worker sends the previews (keypoints drawn, and the
#: Cycles/raster pair) of its first this many images.
SHEET_IMAGES = 20
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RenderJob:
    """What every worker needs besides its blocks (sent once per worker)."""

    model: HandModel
    env_library: dict[str, np.ndarray]
    seed: int                  # the settings' seed: every random choice derives from it and stable ids
    n_views: int
    image_size: int
    options: RenderOptions
    look: CameraLook = CameraLook()   # lens and camera effects (default: the clean render)
    arms: ArmOptions = ArmOptions()   # forearms and sleeves


@dataclass
class BlockOutcome:
    """What happened to one block in this run, for the asset's metadata."""

    tar_key: str
    distinct_pose_id: str
    found: str                    # state before the run: current | missing | stale | corrupt
    reason: str                   # why it was not current ("" if it was)
    status: Literal["skipped", "pending", "rendered", "failed"] = "skipped"
    images: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class ShardRender:
    """A shard's render: the manifest rows of its stored blocks and what happened to each."""

    rows: list[dict[str, Any]]
    outcomes: list[BlockOutcome]
    removed: list[str]
    stage_seconds: dict[str, float]
    sheet: list[np.ndarray] = field(default_factory=list)       # RGB with keypoints drawn
    side_by_side: list[np.ndarray] = field(default_factory=list)  # Cycles, raster, Cycles, raster, ...

    def table(self) -> pd.DataFrame:
        """The rows as the rendered_views table: the same columns, order and dtypes whether the
        rows were rendered now or read back from block indexes (so its content hash is too)."""
        table = pd.DataFrame(self.rows)
        table = table[sorted(table.columns)]
        for column, dtype in (("K", np.float64), ("R", np.float64), ("t", np.float64), ("visibility", np.uint8)):
            if column in table:
                table[column] = [np.asarray(v, dtype=dtype) for v in table[column]]
        return table

    def with_status(self, status: str) -> list[BlockOutcome]:
        return [o for o in self.outcomes if o.status == status]


def render_shard(store: Any, folder: str, blocks: list[Block], job: RenderJob, workers: int, threads: int,
                 gpus: list[str], log_fn: Callable[[str], None] = lambda message: None) -> ShardRender:
    """Make every block of a shard stored, complete and current; see the module docstring.

    ``folder`` holds the shard's blocks and nothing else: objects in it that no block owns
    (blocks of poses the shard no longer keeps, older layouts) are deleted. ``threads`` per
    worker (Cycles, llvmpipe, torch); ``gpus`` the device ids to hand out, one per worker in turn.
    """
    checks: dict[str, BlockCheck] = {b.tar_key: check_block(store, b) for b in blocks}
    owned = {k for b in blocks for k in (b.tar_key, index_key(b.tar_key))}
    removed = [key for key in store.list_keys(folder) if key not in owned]
    for key in removed:
        store.delete(key)
    outcomes = {b.tar_key: BlockOutcome(b.tar_key, b.distinct_pose_id, checks[b.tar_key].state, checks[b.tar_key].reason,
                                        "skipped" if checks[b.tar_key].state == "current" else "pending")
                for b in blocks}
    todo = [b for b in blocks if checks[b.tar_key].state != "current"]
    for block in todo:   # a block being replaced reads as missing until its new index is written
        store.delete(index_key(block.tar_key))
    log_fn(f"{len(blocks)} blocks: {len(blocks) - len(todo)} stored and current, {len(todo)} to render"
           + (f" on {min(workers, len(todo))} workers x {threads} threads" if todo else ""))
    result = ShardRender([], list(outcomes.values()), removed, {})
    indexes = {k: c.index for k, c in checks.items() if c.index is not None}
    if todo:
        indexes.update(_render_blocks(store, todo, job, workers, threads, gpus, outcomes, result, log_fn))
    result.rows = [row for b in blocks if b.tar_key in indexes for row in indexes[b.tar_key].rows]
    return result


# ---- parent side ---------------------------------------------------------------------------------------


def assign(blocks: list[Block], workers: int) -> list[list[Block]]:
    """Blocks per worker: largest first onto the least-loaded worker (images are the load), then
    each worker's list in key order. Empty lists are dropped."""
    loads: list[tuple[int, int]] = [(0, w) for w in range(workers)]
    lists: list[list[Block]] = [[] for _ in range(workers)]
    for block in sorted(blocks, key=lambda b: (-len(b.poses), b.tar_key)):
        load, w = heapq.heappop(loads)
        lists[w].append(block)
        heapq.heappush(loads, (load + len(block.poses), w))
    return [sorted(found, key=lambda b: b.tar_key) for found in lists if found]


@dataclass
class _Worker:
    process: Any          # multiprocessing.Process
    conn: Connection      # the parent's end of a duplex pipe
    key: tuple            # what it was started with: threads, GPU, environment

    @property
    def gpu(self) -> str | None:
        return self.key[1]

    def stop(self, wait_s: float = 0.0) -> None:
        """Close its pipe (an idle worker then exits, closing its renderers) and kill it if it is
        still alive after ``wait_s`` (at once for one stopped part way through its blocks)."""
        self.conn.close()
        self.process.join(wait_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


#: Prefixes of the environment variables a render worker's output or start can depend on: the
#: pipeline's own (``IH_``, ``HANDSYNTH_``, ``AWS_``), GL, GPU and thread pools, the interpreter's
#: paths. A worker started under other values is not reused (others, e.g. the ``TQDM_DISABLE`` the
#: quality suite sets mid-run, do not matter).
WORKER_ENVIRONMENT = ("IH_", "HANDSYNTH_", "AWS_", "PYOPENGL_", "LP_", "GALLIUM_", "MESA_", "EGL_", "CUDA_", "NVIDIA_",
                      "OMP_", "MKL_", "KMP_", "PYTHON", "PATH", "LD_")


class _IdleWorkers:
    """Workers of this process waiting for their next blocks, by what they were started with."""

    def __init__(self) -> None:
        self._idle: dict[tuple, list[_Worker]] = {}
        self._lock = threading.Lock()    # steps of one process may render side by side (threads)

    def take(self, threads: int, gpu: str | None) -> _Worker:
        """An idle live worker started alike (threads, GPU and the environment variables a render
        reads, :data:`WORKER_ENVIRONMENT`: a test may point ``HANDSYNTH_CACHE`` elsewhere), else a
        new one."""
        key = (threads, gpu, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(WORKER_ENVIRONMENT))))
        while True:
            with self._lock:
                worker = self._idle[key].pop() if self._idle.get(key) else None
            if worker is None:
                break
            if worker.process.is_alive():
                return worker
            worker.stop()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_worker_main, args=(child, threads, gpu, os.getpid()), daemon=True,
                              name=f"render-worker-{threads}x{gpu or 'cpu'}")
        process.start()
        child.close()      # the parent keeps its end only: EOF once the worker is gone
        return _Worker(process, parent, key)

    def give(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.setdefault(worker.key, []).append(worker)

    def close(self) -> None:
        """Stop every idle worker (at exit, and where a caller wants fresh ones)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for workers in idle.values():
            for worker in workers:
                worker.stop(wait_s=10.0)


#: This process's idle render workers (stopped at exit; a killed process takes them along).
_IDLE = _IdleWorkers()
atexit.register(_IDLE.close)


def _render_blocks(store: Any, blocks: list[Block], job: RenderJob, workers: int, threads: int, gpus: list[str],
                   outcomes: dict[str, BlockOutcome], result: ShardRender,
                   log_fn: Callable[[str], None]) -> dict[str, BlockIndex]:
    """Render ``blocks`` in worker processes; store each as it completes -> the new indexes."""
    collector = _Collector(store, {b.tar_key: b for b in blocks}, outcomes, result, log_fn)
    busy: dict[Connection, tuple[_Worker, list[Block]]] = {}
    try:
        # every worker started before any is sent its blocks: a send waits until the worker has
        # imported what it needs and reads, and new workers should do that side by side
        for i, assigned in enumerate(assign(blocks, workers)):
            worker = _IDLE.take(threads, gpus[i % len(gpus)] if gpus else None)
            busy[worker.conn] = (worker, assigned)
        for conn, (worker, assigned) in list(busy.items()):
            try:
                conn.send((job, assigned))
            except OSError:          # an idle worker that died since: a new one
                del busy[conn]
                worker.stop()
                worker = _IDLE.take(threads, worker.gpu)
                busy[worker.conn] = (worker, assigned)
                worker.conn.send((job, assigned))
        while busy:
            for conn in wait(list(busy)):
                worker, assigned = busy[conn]
                try:
                    message = conn.recv()
                except EOFError:     # it died (a crash, an OOM kill): what it had pending fails
                    del busy[conn]
                    worker.stop()
                    collector.worker_gone(worker.process, assigned)
                    continue
                collector.handle(message)
                if message[0] == "exit":     # its blocks are done: it waits for the next shard
                    del busy[conn]
                    _IDLE.give(worker)
    finally:
        for worker, _ in busy.values():      # stopped part way (an error here, an interrupt)
            worker.stop()
        collector.abort_open(RuntimeError("render stopped"))
    return collector.indexes


class _Collector:
    """The parent's side of the pipe: builds each block's tar as its images arrive and stores it."""

    def __init__(self, store: Any, blocks: dict[str, Block], outcomes: dict[str, BlockOutcome], result: ShardRender,
                 log_fn: Callable[[str], None]) -> None:
        self.store, self.blocks, self.outcomes, self.result, self.log = store, blocks, outcomes, result, log_fn
        self.writers: dict[str, BlockWriter] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.indexes: dict[str, BlockIndex] = {}

    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "exit":
            for stage, seconds in message[1].items():
                self.result.stage_seconds[stage] = self.result.stage_seconds.get(stage, 0.0) + seconds
            return
        key = message[1]
        try:
            if kind == "image":
                self._image(key, *message[2:])
            elif kind == "done":
                self._done(key, *message[2:])
            else:  # "failed": the worker's error
                raise RuntimeError(message[2])
        except Exception as exc:  # this block fails; the others go on
            self._fail(key, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc)

    def _image(self, key: str, image_id: str, pngs: dict[str, bytes], targets: bytes, row: dict[str, Any],
               preview: dict[str, Any] | None) -> None:
        if key not in self.writers:
            self.writers[key], self.rows[key] = BlockWriter(self.store, key), []
        row.update(self.writers[key].add(image_id, pngs, targets))
        self.rows[key].append(row)
        if preview is not None:
            if len(self.result.sheet) < SHEET_IMAGES:
                self.result.sheet.append(preview["sheet"])
            if "pair" in preview and len(self.result.side_by_side) < 16:
                self.result.side_by_side += list(preview["pair"])

    def _done(self, key: str, started: float, finished: float, worker: str) -> None:
        size, sha = self.writers.pop(key).commit()
        index = BlockIndex(key, size, sha, self.blocks[key].inputs_digest, started, finished, worker, self.rows.pop(key))
        store_index(self.store, index)
        self.indexes[key] = index
        outcome = self.outcomes[key]
        outcome.status, outcome.images, outcome.seconds = "rendered", len(index.rows), finished - started
        self.log(f"block {outcome.distinct_pose_id}: {outcome.images} images in {outcome.seconds:.1f} s ({worker})"
                 + ("" if outcome.found == "missing" else f", was {outcome.found}: {outcome.reason}"))

    def _fail(self, key: str, error: str, exc: BaseException) -> None:
        if key in self.writers:
            self.writers.pop(key).abort(exc)
        self.rows.pop(key, None)
        outcome = self.outcomes[key]
        outcome.status, outcome.error = "failed", error
        self.log(f"block {outcome.distinct_pose_id} FAILED: {error}")

    def worker_gone(self, proc: Any, assigned: list[Block]) -> None:
        """A worker's pipe closed: each of its blocks still pending failed with it (a crash or
        an OOM kill; after a normal exit none is pending)."""
        error = f"render worker {proc.name} (pid {proc.pid}) died with exit code {proc.exitcode}"
        for block in assigned:
            if self.outcomes[block.tar_key].status == "pending":
                self._fail(block.tar_key, error, RuntimeError(error))

    def abort_open(self, exc: BaseException) -> None:
        for writer in self.writers.values():
            writer.abort(exc)
        self.writers.clear()


# ---- worker side -----------------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a SIGKILLed step leaves no orphan
    rendering on), and stop at once if the parent is already gone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _images(job: RenderJob, poses: PoseTable, options: RenderOptions, times: StageTimes) -> Iterator[RenderedImage]:
    """The renderer's images of ``poses``, in pose order, ``n_views`` per pose (contract C2)."""
    return render_pose_views(job.model, poses, job.n_views, job.image_size, job.env_library, seed=job.seed,
                             times=times, options=options, look=job.look, arms=job.arms)


#: Prefixes of the manifest columns of an image's lens and camera effects (one column per field).
LENS_PREFIX, EFFECT_PREFIX = "lens_", "effect_"


def look_columns(lens: DepthOfField, effects: CameraEffects) -> dict[str, Any]:
    """The manifest columns of a view's lens (its record plus the aperture diameter in metres) and
    camera effects (their record): everything needed to apply them again."""
    return {**{LENS_PREFIX + k: v for k, v in lens.to_record().items()}, f"{LENS_PREFIX}aperture_m": lens.aperture_mm * 1e-3,
            **{EFFECT_PREFIX + k: v for k, v in effects.to_record().items()}}


def look_from_row(row: dict[str, Any]) -> tuple[DepthOfField, CameraEffects]:
    """The lens and camera effects a manifest row records; a missing or malformed column is an
    error naming the image."""
    where = f"rendered_views row {row.get('image_id', '?')}"
    plain = {k: v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v for k, v in row.items()}   # as parquet gives them
    lens = {k[len(LENS_PREFIX):]: v for k, v in plain.items() if k.startswith(LENS_PREFIX) and k != f"{LENS_PREFIX}aperture_m"}
    effects = {k[len(EFFECT_PREFIX):]: v for k, v in plain.items() if k.startswith(EFFECT_PREFIX)}
    return (DepthOfField.from_record(lens, where=f"{where} (lens)"),
            CameraEffects.from_record(effects, where=f"{where} (camera effects)"))


def manifest_row(img: RenderedImage) -> dict[str, Any]:
    """The rendered_views row of one image (JSON values; the caller adds its block location)."""
    r = img.record
    return {"image_id": r.image_id, "pose_id": r.pose["pose_id"], "distinct_pose_id": r.pose["distinct_pose_id"],
            "view": int(r.view), "render_seed": int(r.render_seed), "envmap": r.envmap, **img.scene,
            **look_columns(img.lens, img.effects),
            "mask_iou": float(img.mask_iou), "alpha_iou": None if img.alpha_iou is None else float(img.alpha_iou),
            "width": int(r.width), "height": int(r.height), "renderer": img.backend["renderer"],
            "samples": int(img.backend["samples"]), "device": str(img.backend["device"]),
            "colour_management": str(img.backend["colour_management"]),
            "K": np.asarray(r.K, np.float64).reshape(9).tolist(), "R": np.asarray(r.R, np.float64).reshape(9).tolist(),
            "t": np.asarray(r.t, np.float64).reshape(3).tolist(),
            "visibility": np.asarray(r.visibility).reshape(42).astype(int).tolist()}


def _preview(img: RenderedImage) -> dict[str, Any]:
    r = img.record
    preview: dict[str, Any] = {"sheet": plots.draw_keypoints(img.rgb, annotate.project_record(r), r.visibility.reshape(42))}
    if img.backend["renderer"] == "cycles":
        preview["pair"] = (img.rgb, img.raster_rgb)
    return preview


def _worker_main(conn: Connection, threads: int, gpu: str | None, parent_pid: int) -> None:
    """One worker: for each (job, blocks) the parent sends, render the blocks in order with its
    long-lived renderers (pooled across sends), sending each image; until the pipe closes."""
    _die_with_parent(parent_pid)
    os.environ["LP_NUM_THREADS"] = str(threads)        # Mesa llvmpipe: the raster pass
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu       # inherited by this worker's Blender
    torch.set_num_threads(threads)
    while True:
        try:
            job, blocks = conn.recv()
        except EOFError:
            return
        _render_assigned(conn, job, blocks, threads)


def _render_assigned(conn: Connection, job: RenderJob, blocks: list[Block], threads: int) -> None:
    """Render ``blocks`` of ``job``, sending every image, each block's end, and at last the stage times."""
    options = replace(job.options, threads=threads)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    times, sent = StageTimes(), 0
    remaining = list(blocks)
    while remaining:
        started, done = time.time(), 0
        try:
            for img in _images(job, PoseTable.concat(b.poses for b in remaining), options, times):
                block = remaining[0]
                if img.record.pose["pose_id"] not in set(block.poses.pose_ids):
                    raise RuntimeError(f"image {img.record.image_id} arrived while block {block.distinct_pose_id} "
                                       f"still lacks {len(block.poses) * job.n_views - done} images")
                targets = json.dumps(annotate.sample_targets(annotate.annotation_row(img.record, job.model.name)),
                                     separators=(",", ":")).encode()
                conn.send(("image", block.tar_key, img.record.image_id, img.pngs, targets, manifest_row(img),
                           _preview(img) if sent < SHEET_IMAGES else None))
                sent, done = sent + 1, done + 1
                if done == len(block.poses) * job.n_views:
                    conn.send(("done", block.tar_key, started, time.time(), worker))
                    remaining.pop(0)
                    started, done = time.time(), 0
            if remaining:
                raise RuntimeError(f"the renderer stopped after {done} images of block {remaining[0].distinct_pose_id}")
        except Exception as exc:  # this block fails; a fresh renderer goes on with the next
            conn.send(("failed", remaining[0].tar_key, f"{type(exc).__name__}: {exc}", started, time.time()))
            remaining.pop(0)
    conn.send(("exit", dict(times.seconds)))
