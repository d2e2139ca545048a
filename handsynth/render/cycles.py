"""Pipeline side of the Cycles backend: a long-lived Blender worker process per renderer.

The worker (:mod:`handsynth.render.cycles_worker`) runs under ``IH_BLENDER_PYTHON`` (default
``<repo>/.venv-blender/bin/python``) and keeps one scene; this client sends it the hands' faces
once, each environment map once, the posed vertices and albedo once per pose, then per image only
camera, map, map rotation and seed. A view is sent with :meth:`CyclesRenderer.begin` and collected
with :meth:`CyclesRenderer.finish`, so the caller can rasterise labels while Blender path-traces.
Cycles returns linear premultiplied RGBA; :func:`over_background` puts the same environment seen
through the camera (defocused by the same lens) behind the hands, and :func:`composite` also
applies the colour transform, so the alpha stays available for the alignment check against the
raster labels. A view's lens (:class:`~handsynth.render.depth_of_field.DepthOfField`) becomes
the Blender camera's thin-lens depth of field (:func:`~handsynth.render.depth_of_field.cycles_dof`).
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from handsynth import envmaps
from handsynth.cameras import project
from handsynth.render import RenderedRGB, SceneSpec
from handsynth.render.cycles_worker import read_message, write_message
from handsynth.render.depth_of_field import DepthOfField, cycles_dof

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
                 denoise: bool = True, device: str = "auto", threads: int = 0, adaptive_threshold: float = 0.0,
                 uv: np.ndarray | None = None, timeout_s: float = 300.0, log_fn=None, material_slots: int = 0,
                 subsurface_fade: tuple[tuple[int, ...], tuple[float, float]] | None = None) -> None:
        """``faces`` (F, 3) of both hands, ``hand_of_face`` (F,) each face's material slot (a skin material per slot: the hands 0/1,
        forearms 2/3 in :mod:`handsynth.views`), ``uv``
        optional (F, 3, 2) per-corner texture coordinates for :meth:`set_skin`; ``threads`` 0 uses
        every core; ``adaptive_threshold`` > 0 turns on Cycles' adaptive sampling at that noise level;
        ``material_slots``: at least this many materials (slots that only later poses use, e.g. sleeves);
        ``subsurface_fade`` (slots, (v0, v1)): those slots' subsurface scattering fades out between
        UV v = v0 and v1 (needs ``uv``; the forearms' in :mod:`handsynth.views`)."""
        ok, where = cycles_available()
        if not ok:
            raise WorkerError(where)
        self.width, self.height, self.samples, self.denoise = width, height, samples, denoise
        self.timeout_s = timeout_s
        self._log = log_fn or (lambda msg: None)
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([str(blender_python()), str(WORKER)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, cwd=tempfile.gettempdir())
        self._sent_envmaps: dict[str, np.ndarray] = {}   # name -> the map the worker holds under it
        self._vertices: np.ndarray | None = None   # the geometry the worker holds (for each view's region)
        self._accessories = np.zeros((0, 3), np.float32)   # the accessories it holds (empty: none)
        self.worn: object = None                  # the caller's name for the skin textures last sent
        self._pending: str | None = None          # the op sent by begin() whose answer is not read yet
        arrays = {"faces": faces.astype(np.int32), "hand_of_face": np.asarray(hand_of_face, np.uint8)}
        if uv is not None:
            arrays["uv"] = np.asarray(uv, np.float32)
        reply, _ = self._call({"op": "init", "width": width, "height": height, "samples": samples, "denoise": denoise,
                               "device": device, "threads": threads, "adaptive_threshold": adaptive_threshold,
                               "material_slots": material_slots,
                               "subsurface_fade": None if subsurface_fade is None else
                               {"slots": [int(k) for k in subsurface_fade[0]], "v": [float(v) for v in subsurface_fade[1]]}},
                              arrays)
        self.device, self.blender_version = reply["device"], reply["blender"]
        self._log(f"Cycles worker ready: Blender {self.blender_version}, device {self.device} "
                  f"({reply['device_note']}), {samples} samples, denoise={denoise}, {reply['seconds']:.1f} s")

    def _stderr_tail(self, n: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-n:]

    def _send(self, header: dict, arrays: dict | None = None) -> None:
        if self._proc.poll() is not None:
            raise WorkerError(f"Cycles worker exited with code {self._proc.returncode}:\n{self._stderr_tail()}")
        try:
            write_message(self._proc.stdin, header, arrays)
        except BrokenPipeError as exc:
            raise WorkerError(f"Cycles worker died before request {header['op']!r}:\n{self._stderr_tail()}") from exc

    def _receive(self, op: str) -> tuple[dict, dict]:
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
        if not ready:
            self.close(kill=True)
            raise WorkerError(f"Cycles worker gave no answer to {op!r} within {self.timeout_s:.0f} s:\n"
                              f"{self._stderr_tail()}")
        try:
            reply, out = read_message(self._proc.stdout)
        except (EOFError, ValueError) as exc:
            raise WorkerError(f"Cycles worker broke off during {op!r} ({exc}):\n{self._stderr_tail()}") from exc
        if not reply.get("ok"):
            raise WorkerError(f"Cycles worker refused {op!r}: {reply.get('error')}")
        return reply, out

    def _call(self, header: dict, arrays: dict | None = None) -> tuple[dict, dict]:
        if self._pending is not None:
            raise RuntimeError(f"request {header['op']!r} while {self._pending!r} awaits finish()")
        self._send(header, arrays)
        return self._receive(header["op"])

    def set_skin(self, hand: int, albedo: np.ndarray, roughness: np.ndarray, bump: np.ndarray,
                 specular: np.ndarray) -> None:
        """Texture hand 0 (right) or 1 (left): linear albedo (S, S, 3), roughness, bump and
        specular level (S, S) (see :class:`handsynth.render.skin.SkinTextures`)."""
        self._call({"op": "skin", "hand": int(hand)}, {"albedo": np.asarray(albedo, np.float32),
                                                       "roughness": np.asarray(roughness, np.float32),
                                                       "bump": np.asarray(bump, np.float32),
                                                       "specular": np.asarray(specular, np.float32)})

    def set_cloth(self, slot: int, albedo: np.ndarray, roughness: np.ndarray, bump: np.ndarray, sheen: float) -> None:
        """Make material ``slot`` a fabric (:class:`handsynth.render.cloth.ClothTextures` maps, sheen weight)."""
        self._call({"op": "cloth", "slot": int(slot), "sheen": float(sheen)},
                   {"albedo": np.asarray(albedo, np.float32), "roughness": np.asarray(roughness, np.float32),
                    "bump": np.asarray(bump, np.float32)})

    def set_geometry(self, hands: list, material: dict, material_index: np.ndarray | None = None) -> None:
        """The posed hands (raster :class:`HandMesh` es, linear albedo) and material of the next views;
        ``material_index`` (F,) each face's material slot, when it changes per pose."""
        vertices = np.concatenate([h.vertices for h in hands]).astype(np.float32)
        colors = np.concatenate([h.colors for h in hands]).astype(np.float32)
        arrays = {"vertices": vertices, "colors": colors}
        if material_index is not None:
            arrays["material_index"] = np.asarray(material_index, np.uint8)
        self._call({"op": "geometry", "material": material}, arrays)
        self._vertices = vertices

    def set_accessories(self, vertices: np.ndarray, faces: np.ndarray, material_index: np.ndarray,
                        materials: list[dict]) -> None:
        """The accessories of the next views (world metres; each face's slot in ``materials``, one
        dict of Principled BSDF inputs per slot); nothing is sent while there are none and were none."""
        if not len(faces) and not len(self._accessories):
            return
        self._call({"op": "accessories", "materials": materials},
                   {"vertices": np.asarray(vertices, np.float32), "faces": np.asarray(faces, np.int32).reshape(-1, 3),
                    "material_index": np.asarray(material_index, np.uint8)})
        self._accessories = np.asarray(vertices, np.float32).reshape(-1, 3)

    def begin(self, scene: SceneSpec, seed: int) -> None:
        """Start one view of the current geometry (``scene.hands`` are not sent: see :meth:`set_geometry`)
        through ``scene.lens`` (a pinhole when None)."""
        sent = self._sent_envmaps.get(scene.env_name)
        if sent is None or (sent is not scene.env and not np.array_equal(sent, scene.env)):
            self._call({"op": "envmap", "name": scene.env_name}, {"pixels": scene.env.astype(np.float32)})
            self._sent_envmaps[scene.env_name] = scene.env
        cam = scene.camera
        self._send({"op": "render", "seed": int(seed), "envmap": scene.env_name, "env_rotation": scene.env_rotation,
                    "camera": {"K": cam.K.tolist(), "R": cam.R.tolist(), "t": cam.t.tolist()},
                    "lens": cycles_dof(cam, scene.lens or DepthOfField()),
                    "region": hands_region(None if self._vertices is None else
                                           np.concatenate([self._vertices, self._accessories]), cam, scene.lens)})
        self._pending = "render"

    def finish(self) -> np.ndarray:
        """The view started by :meth:`begin`: (H, W, 4) linear premultiplied RGBA."""
        if self._pending is None:
            raise RuntimeError("finish() without begin()")
        op, self._pending = self._pending, None
        _, out = self._receive(op)
        return out["rgba"]

    def render(self, scene: SceneSpec, seed: int) -> RenderedRGB:
        """One image of ``scene`` (geometry included): hands over the environment, tone-mapped."""
        self.set_geometry(scene.hands, scene.material)
        self.begin(scene, seed)
        blur = scene.lens.background_blur_px if scene.lens is not None else 0.0
        return composite(self.finish(), envmaps.envmap_view(scene.env, scene.camera, scene.env_rotation, blur),
                         scene.exposure)

    def close(self, kill: bool = False) -> None:
        """Ask the worker to quit (kill it when ``kill`` or a view is still in flight)."""
        if self._proc.poll() is None:
            if not kill and self._pending is None:
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


#: Pixels around the hands' projected box that are rendered too: Cycles' pixel filter
#: (Blackman-Harris, 1.5 px wide) spreads a surface into neighbouring pixels.
REGION_MARGIN_PX = 3


def hands_region(vertices: np.ndarray | None, camera, lens: DepthOfField | None = None) -> list[int] | None:
    """[x0, y0, x1, y1]: the pixels the hands can touch, the only ones worth path-tracing and
    denoising (about half of a 256 x 256 view; the rest is film-transparent background, composited
    from the map afterwards), widened by the radius of the lens's largest blur disc on the hands.
    None (the whole frame) without geometry or with a vertex behind the camera."""
    if vertices is None or len(vertices) == 0:
        return None
    cam = vertices.astype(np.float64) @ camera.R.T + camera.t
    if (cam[:, 2] <= 0).any():
        return None
    margin = REGION_MARGIN_PX
    if lens is not None:
        focal = float(camera.K[0, 0])
        margin += int(np.ceil(max(lens.blur_px(focal, cam[:, 2].min()), lens.blur_px(focal, cam[:, 2].max())) / 2))
    uv = project(vertices.astype(np.float64), camera.K, camera.R, camera.t)
    lo = np.floor(uv.min(axis=0)).astype(int) - margin
    hi = np.ceil(uv.max(axis=0)).astype(int) + margin
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), camera.width - 1), min(int(hi[1]), camera.height - 1)
    return None if x0 > x1 or y0 > y1 else [x0, y0, x1, y1]


def over_background(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Premultiplied linear RGBA over a linear background (H, W, 3): linear radiance (H, W, 3)."""
    return rgba[..., :3] + (1.0 - rgba[..., 3:4]) * background


def composite(rgba: np.ndarray, background: np.ndarray, exposure: float) -> RenderedRGB:
    """:func:`over_background`, then the colour transform shared with the raster background
    (:func:`envmaps.tone_map`)."""
    return RenderedRGB(rgb=envmaps.tone_map(over_background(rgba, background), exposure), alpha=rgba[..., 3].copy())
