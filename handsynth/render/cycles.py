"""Pipeline side of the Cycles backend: a long-lived Blender worker process per renderer.

The worker (:mod:`handsynth.render.cycles_worker`) runs under ``IH_BLENDER_PYTHON`` (default
``<repo>/.venv-blender/bin/python``) and keeps one scene; this client sends it the hands' faces
once, each environment map once, then per image only vertices, albedo, camera, world rotation,
exposure and seed. Cycles returns linear premultiplied RGBA; the client composites the same
environment seen through the camera behind the hands and applies the colour transform, so the
alpha stays available for the alignment check against the raster labels.
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from handsynth import envmaps
from handsynth.render import RenderedRGB, SceneSpec
from handsynth.render.cycles_worker import read_message, write_message

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("cycles_worker.py")


def blender_python() -> Path:
    """The interpreter with bpy: ``IH_BLENDER_PYTHON`` or the repository's ``.venv-blender``."""
    return Path(os.environ.get("IH_BLENDER_PYTHON", REPO / ".venv-blender" / "bin" / "python"))


def cycles_available() -> tuple[bool, str]:
    """Whether a Blender interpreter exists (and why not), without starting it."""
    path = blender_python()
    if not path.exists():
        return False, f"no Blender Python at {path} (run scripts/setup.sh or set IH_BLENDER_PYTHON)"
    return True, str(path)


class WorkerError(RuntimeError):
    """The worker crashed, timed out or answered an error."""


class CyclesRenderer:
    """Photoreal RGB through Cycles. ``device``: 'auto', 'cpu', 'cuda' or 'optix'."""

    name = "cycles"

    def __init__(self, width: int, height: int, faces: np.ndarray, hand_of_face: np.ndarray, samples: int = 16,
                 denoise: bool = True, device: str = "auto", threads: int = 0,
                 uv: np.ndarray | None = None, timeout_s: float = 300.0, log_fn=None) -> None:
        """``faces`` (F, 3) of both hands, ``hand_of_face`` (F,) 0/1 (one material each), ``uv``
        optional (F, 3, 2) per-corner texture coordinates for :meth:`set_skin`."""
        ok, where = cycles_available()
        if not ok:
            raise WorkerError(where)
        self.width, self.height, self.samples, self.denoise = width, height, samples, denoise
        self.timeout_s = timeout_s
        self._log = log_fn or (lambda msg: None)
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([str(blender_python()), str(WORKER)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, cwd=tempfile.gettempdir())
        self._sent_envmaps: set[str] = set()
        arrays = {"faces": faces.astype(np.int32), "hand_of_face": np.asarray(hand_of_face, np.uint8)}
        if uv is not None:
            arrays["uv"] = np.asarray(uv, np.float32)
        reply, _ = self._call({"op": "init", "width": width, "height": height, "samples": samples, "denoise": denoise,
                               "device": device, "threads": threads}, arrays)
        self.device, self.blender_version = reply["device"], reply["blender"]
        self._log(f"Cycles worker ready: Blender {self.blender_version}, device {self.device} "
                  f"({reply['device_note']}), {samples} samples, denoise={denoise}, {reply['seconds']:.1f} s")

    def _stderr_tail(self, n: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-n:]

    def _call(self, header: dict, arrays: dict | None = None) -> tuple[dict, dict]:
        if self._proc.poll() is not None:
            raise WorkerError(f"Cycles worker exited with code {self._proc.returncode}:\n{self._stderr_tail()}")
        try:
            write_message(self._proc.stdin, header, arrays)
        except BrokenPipeError as exc:
            raise WorkerError(f"Cycles worker died before request {header['op']!r}:\n{self._stderr_tail()}") from exc
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
        if not ready:
            self.close(kill=True)
            raise WorkerError(f"Cycles worker gave no answer to {header['op']!r} within {self.timeout_s:.0f} s:\n"
                              f"{self._stderr_tail()}")
        try:
            reply, out = read_message(self._proc.stdout)
        except (EOFError, ValueError) as exc:
            raise WorkerError(f"Cycles worker broke off during {header['op']!r} ({exc}):\n{self._stderr_tail()}") from exc
        if not reply.get("ok"):
            raise WorkerError(f"Cycles worker refused {header['op']!r}: {reply.get('error')}")
        return reply, out

    def set_skin(self, hand: int, albedo: np.ndarray, roughness: np.ndarray, bump: np.ndarray) -> None:
        """Texture hand 0 (right) or 1 (left): linear albedo (S, S, 3), roughness and bump (S, S)."""
        self._call({"op": "skin", "hand": int(hand)}, {"albedo": np.asarray(albedo, np.float32),
                                                       "roughness": np.asarray(roughness, np.float32),
                                                       "bump": np.asarray(bump, np.float32)})

    def render(self, scene: SceneSpec, seed: int) -> RenderedRGB:
        """One image: hands over the environment, tone-mapped like the raster background."""
        if scene.env_name not in self._sent_envmaps:
            self._call({"op": "envmap", "name": scene.env_name}, {"pixels": scene.env.astype(np.float32)})
            self._sent_envmaps.add(scene.env_name)
        cam = scene.camera
        vertices = np.concatenate([h.vertices for h in scene.hands]).astype(np.float32)
        colors = np.concatenate([h.colors for h in scene.hands]).astype(np.float32)
        _, out = self._call({"op": "render", "seed": int(seed), "envmap": scene.env_name,
                             "env_rotation": scene.env_rotation, "exposure": 1.0, "material": scene.material,
                             "camera": {"K": cam.K.tolist(), "R": cam.R.tolist(), "t": cam.t.tolist()}},
                            {"vertices": vertices, "colors": colors})
        rgba = out["rgba"]
        background = envmaps.envmap_view(scene.env, cam, scene.env_rotation)
        linear = rgba[..., :3] + (1.0 - rgba[..., 3:4]) * background
        return RenderedRGB(rgb=envmaps.tone_map(linear, scene.exposure), alpha=rgba[..., 3].copy())

    def close(self, kill: bool = False) -> None:
        if self._proc.poll() is None:
            if not kill:
                try:
                    self._call({"op": "quit"})
                except WorkerError:
                    pass
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=30)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream and not stream.closed:
                stream.close()
        self._stderr.close()
