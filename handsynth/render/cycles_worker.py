"""Blender Cycles worker process: one scene built once, then one render per request.

Runs under Blender's own Python (``.venv-blender``: bpy 5.0.1 pins numpy<2, the pipeline needs
numpy>=2), so it imports only numpy, bpy and the standard library. The pipeline talks to it over
stdin/stdout with :func:`read_message` / :func:`write_message` frames: a 4-byte little-endian
header length, a UTF-8 JSON header, then the raw little-endian bytes of the arrays the header
lists. No pickle: nothing read from the pipe can execute code. Blender prints its own progress on
stdout, so the protocol moves to a duplicate of file descriptor 1 and fd 1 goes to stderr.

Requests (``header["op"]``):
- ``init``: width, height, samples, denoise, device ('auto' | 'cpu' | 'cuda' | 'optix'), threads
  (0: all cores), adaptive_threshold (Cycles' noise threshold; 0 keeps every pixel at ``samples``);
  material_slots (optional: at least this many materials, for slots only later poses use);
  subsurface_fade (optional {"slots": [...], "v": [v0, v1]}: in these slots the subsurface
  weight fades linearly from the material's to 0 between UV v = v0 and v = v1, e.g. along a forearm);
  arrays ``faces`` (F, 3) int32 of both hands, ``hand_of_face`` (F,) uint8 (each face's material
  slot: a skin per slot, e.g. hands 0/1, forearms 2/3), optional ``uv`` (F, 3, 2) float32 per face corner -> the device used.
- ``skin``: hand (0 right, 1 left); arrays ``albedo`` (S, S, 3) float32 linear, ``roughness``,
  ``bump`` and ``specular`` (S, S) float32 in [0, 1], rows top-down: the hand's material then
  reads these textures through the UVs instead of the per-vertex albedo (specular drives
  "Specular IOR Level", the bump a Bump node of :data:`BUMP_DISTANCE_M` per unit).
- ``cloth``: slot, sheen; arrays as for ``skin``: the slot's material becomes that fabric
  (textured like a skin, no subsurface scattering, the fibre's sheen), e.g. a sleeve's.
- ``envmap``: name; array ``pixels`` (H, W, 3) float32 linear, equirectangular, row 0 = up.
- ``geometry``: material; arrays ``vertices`` (V, 3) float32 (project world, y up, m), ``colors``
  (V, 3) float32 linear albedo, optional ``material_index`` (F,) uint8 (each face's material slot,
  when it changes per pose). Sent once per pose: its views reuse the mesh (and its BVH).
- ``accessories``: materials (one dict of Principled BSDF input name -> value per slot, names from
  :data:`PRINCIPLED_INPUTS`); arrays ``vertices`` (V, 3) float32, ``faces`` (F, 3) int32 and
  ``material_index`` (F,) uint8: the pose's watches, bracelets and rings, a second object whose
  mesh is rebuilt per pose (none: empty arrays).
- ``render``: seed, envmap, env_rotation (radians about world up), camera (K, R, t as nested
  lists, OpenCV), optional lens (camera-data attribute paths -> values, e.g. ``dof.use_dof``,
  from :func:`handsynth.render.depth_of_field.cycles_dof`; absent: a pinhole), optional region [x0, y0, x1, y1] (inclusive pixel bounds, row 0 at the top: only
  these pixels are path-traced and denoised, the others come back empty) -> array ``rgba``
  (H, W, 4) float32 linear premultiplied (``transparent``: false renders the world behind the
  hands, for checking the world mapping).
- ``quit``.

Cost model (measured on 2 cores, 256 x 256, 8 samples): any change to the world (another map, a
rotation in its Mapping node, even re-setting its strength) makes Cycles re-sync it, and most of
that is the importance map for sampling the sky, which a map with a sun needs at 8 samples. Left
to Cycles' automatic resolution, a 512 x 256 map's importance map added 1.5-1.9 s of wall time to
the render that switched maps, more than path-tracing two images; built at
:func:`importance_map_resolution` (twice the map's width: 1024 for those maps) that render costs
about what any other does, with the same noise (README, *Rendering*). The world node tree never changes after init except for the map image
(and its importance-map size), and a map rotation turns the hands and the camera instead (the
same image: only directions relative to the map matter). Cycles hands its result over only as an image
file (the compositor's Viewer node is not evaluated without a UI), so the EXR goes through
``/dev/shm`` (memory: 2.4 ms per view for writing and reading, 3.7 ms on disk) and is deleted once read.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import time

import numpy as np

ALLOWED_DTYPES = {"<f4", "<i4", "|u1", "<u2"}

#: The project's world is y-up (OpenCV cameras); Blender's is z-up: (x, y, z) -> (x, -z, y).
WORLD_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

SENSOR_WIDTH_MM = 36.0
#: Height of the skin's bump map per unit, metres: the maps put creases ~0.35 below plain skin and
#: veins ~0.25 above it (:class:`handsynth.render.skin.SkinTextures`), i.e. a few tenths of a mm.
BUMP_DISTANCE_M = 0.001
#: Largest importance map for the sky (columns; Cycles makes it half as many rows).
MAX_IMPORTANCE_MAP = 2048


def importance_map_resolution(map_width: int) -> int:
    """Columns of the world's importance map for an equirectangular map ``map_width`` texels wide:
    two cells per texel, so that the map's linearly interpolated peaks (a sun spans a texel or
    two) are followed, up to :data:`MAX_IMPORTANCE_MAP`. Cycles' automatic choice added 1.5-1.9 s
    per map switch for a 512-wide map, with no less noise than 1024 (README, *Rendering*)."""
    return int(min(2 * map_width, MAX_IMPORTANCE_MAP))


#: Principled BSDF inputs an ``accessories`` request may set (nothing else is reachable).
PRINCIPLED_INPUTS = ("Base Color", "Metallic", "Roughness", "Specular IOR Level", "Sheen Weight", "Coat Weight",
                     "Transmission Weight", "IOR")
#: Camera-data attributes a render request's ``lens`` may set (nothing else is reachable).
LENS_ATTRIBUTES = ("dof.use_dof", "dof.focus_distance", "dof.aperture_fstop", "dof.aperture_blades", "sensor_width", "lens")


# ---- framing (also imported by the pipeline-side client) -----------------------------------------


def write_message(stream, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    """One frame: header length, JSON header (with the arrays' dtype/shape), raw array bytes."""
    arrays = arrays or {}
    listed = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        listed.append({"name": name, "dtype": dtype.str, "shape": list(arr.shape), "nbytes": int(arr.nbytes)})
    body = json.dumps({**header, "arrays": listed}).encode("utf-8")
    stream.write(struct.pack("<I", len(body)) + body)
    for arr in arrays.values():
        stream.write(np.ascontiguousarray(arr, dtype=np.dtype(arr.dtype).newbyteorder("<")).tobytes())
    stream.flush()


def _read_exactly(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError(f"pipe closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_message(stream) -> tuple[dict, dict[str, np.ndarray]]:
    """Inverse of :func:`write_message`; refuses dtypes outside a small numeric whitelist."""
    (length,) = struct.unpack("<I", _read_exactly(stream, 4))
    if length > 1 << 24:
        raise ValueError(f"message header of {length} bytes: not a worker frame")
    header = json.loads(_read_exactly(stream, length).decode("utf-8"))
    arrays = {}
    for spec in header.pop("arrays", []):
        if spec["dtype"] not in ALLOWED_DTYPES:
            raise ValueError(f"array {spec['name']!r}: dtype {spec['dtype']!r} not allowed")
        dtype = np.dtype(spec["dtype"])
        shape = tuple(int(s) for s in spec["shape"])
        if int(np.prod(shape)) * dtype.itemsize != spec["nbytes"]:
            raise ValueError(f"array {spec['name']!r}: shape {shape} does not match {spec['nbytes']} bytes")
        arrays[spec["name"]] = np.frombuffer(_read_exactly(stream, spec["nbytes"]), dtype=dtype).reshape(shape)
    return header, arrays


# ---- the Blender scene ---------------------------------------------------------------------------


def camera_matrix_world(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """OpenCV world->camera (R, t) -> Blender camera-to-world 4x4 (camera looks down its -z, y up)."""
    pose = np.eye(4)
    pose[:3, :3] = WORLD_TO_BLENDER @ R.T @ np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = WORLD_TO_BLENDER @ (-R.T @ t)
    return pose


def camera_lens(K: np.ndarray, width: int, height: int) -> dict[str, float]:
    """Blender lens/shift for an OpenCV K. The project's convention (docs/ARCHITECTURE.md) is
    OpenCV's: integer pixel coordinates are pixel centres. Blender samples pixel c around c + 0.5
    of its own frame, so its principal point is K's plus half a pixel, as in the raster path."""
    if abs(K[0, 0] - K[1, 1]) > 1e-6 * K[0, 0] or abs(K[0, 1]) > 1e-9:
        raise ValueError(f"camera K with fx={K[0, 0]}, fy={K[1, 1]}, skew={K[0, 1]}: Blender needs square pixels")
    return {"lens": float(K[0, 0] / width * SENSOR_WIDTH_MM),
            "shift_x": float((width / 2.0 - (K[0, 2] + 0.5)) / width),
            "shift_y": float((K[1, 2] + 0.5 - height / 2.0) / max(width, height))}


class CyclesScene:
    """Both hands as one smooth-shaded mesh (subdivided by the pipeline, so that the raster labels
    see the same surface) with a skin material, a world with an
    environment texture (light and background) and a camera: built once, updated per image."""

    def __init__(self, header: dict, faces: np.ndarray, hand_of_face: np.ndarray, uv: np.ndarray | None) -> None:
        import bpy

        self.bpy = bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        self.scene = scene
        self.width, self.height = int(header["width"]), int(header["height"])
        scene.render.engine = "CYCLES"
        scene.render.resolution_x, scene.render.resolution_y = self.width, self.height
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = True          # alpha for the label check; background composited outside
        scene.render.use_persistent_data = True       # keep BVH/shaders between renders of the same scene
        if header.get("threads"):
            scene.render.threads_mode, scene.render.threads = "FIXED", int(header["threads"])
        cyc = scene.cycles
        cyc.samples = int(header["samples"])
        threshold = float(header.get("adaptive_threshold", 0.0))
        cyc.use_adaptive_sampling = threshold > 0       # stop pixels whose noise is below the threshold
        if threshold > 0:
            cyc.adaptive_threshold, cyc.adaptive_min_samples = threshold, 0   # 0: Cycles picks the minimum
        cyc.use_animated_seed = False
        cyc.max_bounces, cyc.diffuse_bounces, cyc.glossy_bounces = 4, 2, 2
        cyc.transmission_bounces, cyc.transparent_max_bounces, cyc.volume_bounces = 2, 4, 0
        cyc.sample_clamp_indirect = 10.0              # fireflies at low sample counts
        cyc.use_denoising = bool(header["denoise"])
        if cyc.use_denoising:
            cyc.denoiser = "OPENIMAGEDENOISE"
            cyc.denoising_prefilter = "FAST"          # ~0.7 s instead of ~2 s per image on 2 cores
            cyc.denoising_quality = "BALANCED"
            cyc.denoising_input_passes = "RGB_ALBEDO_NORMAL"
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
        self.device, self.device_note = self._select_device(str(header.get("device", "auto")))

        mesh = bpy.data.meshes.new("hands")
        mesh.from_pydata(np.zeros((int(faces.max()) + 1, 3)).tolist(), [], faces.tolist())
        mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
        mesh.polygons.foreach_set("material_index", hand_of_face.astype(np.int32))
        mesh.color_attributes.new("albedo", "FLOAT_COLOR", "POINT")
        if uv is not None:
            mesh.uv_layers.new(name="uv").data.foreach_set("uv", np.ascontiguousarray(uv, np.float32).ravel())
        mesh.update()
        self.mesh = mesh
        obj = bpy.data.objects.new("hands", mesh)
        scene.collection.objects.link(obj)
        self.hands = obj
        slots = max(int(hand_of_face.max()) + 1, int(header.get("material_slots", 0)))
        fade = header.get("subsurface_fade")
        if fade is not None and uv is None:
            raise ValueError("subsurface_fade reads the UV layer: send 'uv' with init")
        fading = set() if fade is None else {int(k) for k in fade["slots"]}
        self.skins = [self._skin_material(k, fade["v"] if k in fading else None) for k in range(slots)]
        self.cloth_sheen: dict[int, float] = {}   # slots that hold a fabric (set_cloth) -> sheen weight
        for skin in self.skins:
            obj.data.materials.append(skin["material"])

        cam_data = bpy.data.cameras.new("camera")
        cam_data.sensor_fit, cam_data.sensor_width = "HORIZONTAL", SENSOR_WIDTH_MM
        cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
        self.camera = bpy.data.objects.new("camera", cam_data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera
        self._build_world()
        self.accessories = None           # the current pose's accessories' object (None: it wears none)
        self.rebuild = False              # the next render rebuilds Cycles' scene (accessories changed)
        self.envmaps: dict[str, object] = {}
        self._retired: list = []          # replaced images, freed after the next render
        shm = "/dev/shm"
        self.tmp = tempfile.mkdtemp(prefix="ih-cycles-", dir=shm if os.access(shm, os.W_OK) else None)
        settings = scene.render.image_settings
        settings.file_format, settings.color_mode, settings.color_depth = "OPEN_EXR", "RGBA", "32"
        settings.exr_codec = "NONE"

    def _select_device(self, wanted: str) -> tuple[str, str]:
        """GPU (OptiX, then CUDA) when asked or 'auto' and present; else CPU, saying why."""
        scene = self.scene
        scene.cycles.device = "CPU"
        if wanted == "cpu":
            return "CPU", "CPU requested"
        kinds = {"auto": ["OPTIX", "CUDA"], "cuda": ["CUDA", "OPTIX"], "optix": ["OPTIX", "CUDA"]}.get(wanted)
        if kinds is None:
            raise ValueError(f"device {wanted!r}: choose auto, cpu, cuda or optix")
        prefs = self.bpy.context.preferences.addons["cycles"].preferences
        for kind in kinds:
            try:
                prefs.compute_device_type = kind
                prefs.get_devices()
            except (TypeError, ValueError):
                continue
            gpus = [d for d in prefs.devices if d.type == kind]
            if gpus:
                for d in prefs.devices:
                    d.use = d.type == kind
                scene.cycles.device = "GPU"
                return f"{kind}:{gpus[0].name}", f"{len(gpus)} {kind} device(s)"
        note = f"device {wanted!r} requested but no CUDA/OptiX GPU found: falling back to CPU"
        print(f"[cycles-worker] {note}", file=sys.stderr, flush=True)
        return "CPU", note

    def _skin_material(self, hand: int, fade_v: list[float] | None = None) -> dict:
        """Principled BSDF skin with subsurface scattering (red scatters furthest): per-vertex
        albedo until :meth:`set_skin` gives the hand albedo/roughness/bump textures.

        The random walk is most of a skin pixel's cost, and at the pipeline's scales (about 1.6 mm
        per pixel at 256 px) its millimetre radius blurs less than a pixel, so it is spent only
        where it is seen (README, *Rendering*: the same look within noise, 8 samples or 64):
        - on camera rays: skin seen after a bounce (a finger lit by the other hand) is diffuse;
        - ``fade_v`` [v0, v1]: the weight fades to 0 between these UV v (a forearm's distance from
          the wrist), so the far arm is diffuse and the wrist, next to the hands, has no step.
        The material's weight goes to the last multiplier's input (``subsurface``)."""
        bpy = self.bpy
        mat = bpy.data.materials.new(f"skin_{hand}")
        mat.use_nodes = True
        nodes, links = mat.node_tree.nodes, mat.node_tree.links
        bsdf = nodes["Principled BSDF"]
        attr = nodes.new("ShaderNodeAttribute")
        attr.attribute_name = "albedo"
        links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
        bsdf.subsurface_method = "RANDOM_WALK_SKIN"
        subsurface = bsdf.inputs["Subsurface Weight"]

        def scaled_by(factor) -> None:
            nonlocal subsurface
            product = nodes.new("ShaderNodeMath")
            product.operation = "MULTIPLY"
            links.new(factor, product.inputs[0])
            links.new(product.outputs["Value"], subsurface)
            subsurface = product.inputs[1]

        scaled_by(nodes.new("ShaderNodeLightPath").outputs["Is Camera Ray"])
        if fade_v is not None:
            uvmap, split, ramp = nodes.new("ShaderNodeUVMap"), nodes.new("ShaderNodeSeparateXYZ"), nodes.new("ShaderNodeMapRange")
            uvmap.uv_map, ramp.clamp = "uv", True
            for name, value in zip(("From Min", "From Max", "To Min", "To Max"), (*fade_v, 1.0, 0.0)):
                ramp.inputs[name].default_value = float(value)
            links.new(uvmap.outputs["UV"], split.inputs["Vector"])
            links.new(split.outputs["Y"], ramp.inputs["Value"])
            scaled_by(ramp.outputs["Result"])
        return {"material": mat, "bsdf": bsdf, "images": {}, "subsurface": subsurface}

    def set_skin(self, hand: int, albedo: np.ndarray, roughness: np.ndarray, bump: np.ndarray,
                 specular: np.ndarray) -> None:
        """Texture the hand: albedo (linear), roughness, bump and specular maps through the UV layer.

        Each call makes new images (see :meth:`_retire`): with persistent data Cycles keeps the
        pixels of an image it has loaded, even after ``foreach_set`` and ``update_tag`` (seen with
        bpy 5.0.1 once the world no longer changed between renders: every later pose of a worker
        wore its first pose's skin)."""
        if not self.mesh.uv_layers:
            raise ValueError("skin textures need UVs: send 'uv' with init")
        skin = self.skins[hand]
        mat, bsdf, images = skin["material"], skin["bsdf"], skin["images"]
        nodes, links = mat.node_tree.nodes, mat.node_tree.links
        maps = {"albedo": albedo, **{kind: np.repeat(values[..., None], 3, -1) for kind, values in
                                     (("roughness", roughness), ("bump", bump), ("specular", specular))}}
        for kind, pixels in maps.items():
            h, w, _ = pixels.shape
            img = self.bpy.data.images.new(f"{kind}_{hand}", w, h, alpha=False, float_buffer=True)
            img.colorspace_settings.name = "Linear Rec.709" if kind == "albedo" else "Non-Color"
            rgba = np.concatenate([pixels[::-1], np.ones((h, w, 1), np.float32)], axis=-1)
            img.pixels.foreach_set(np.ascontiguousarray(rgba, dtype=np.float32).ravel())
            if kind not in images:
                node = nodes.new("ShaderNodeTexImage")
                uvmap = nodes.new("ShaderNodeUVMap")
                uvmap.uv_map = "uv"
                links.new(uvmap.outputs["UV"], node.inputs["Vector"])
                images[kind] = node
                if kind == "albedo":
                    links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
                elif kind == "roughness":
                    links.new(node.outputs["Color"], bsdf.inputs["Roughness"])
                elif kind == "specular":
                    links.new(node.outputs["Color"], bsdf.inputs["Specular IOR Level"])
                else:
                    bump_node = nodes.new("ShaderNodeBump")
                    bump_node.inputs["Distance"].default_value = BUMP_DISTANCE_M
                    links.new(node.outputs["Color"], bump_node.inputs["Height"])
                    links.new(bump_node.outputs["Normal"], bsdf.inputs["Normal"])
            old, images[kind].image = images[kind].image, img
            self._retire(old)

    def set_cloth(self, slot: int, albedo: np.ndarray, roughness: np.ndarray, bump: np.ndarray, sheen: float) -> None:
        """Make ``slot`` a fabric: its maps through the UV layer as a skin's, without subsurface
        scattering and with the fibre's sheen (applied with the next geometry); its specular level
        is the Principled default 0.5 (a fabric has no specular map)."""
        self.set_skin(slot, albedo, roughness, bump, np.full_like(roughness, 0.5))
        self.cloth_sheen[slot] = float(sheen)

    def _retire(self, image) -> None:
        """Free a replaced image only after the next render. Cycles knows images by address:
        freed at once, a new image could be allocated at the same address and Cycles would keep the
        old pixels for it (seen: 0-1,300 differing pixels per image, varying from run to run)."""
        if image is not None:
            self._retired.append(image)

    def _build_world(self) -> None:
        bpy = self.bpy
        world = bpy.data.worlds.new("environment")
        world.use_nodes = True
        nodes, links = world.node_tree.nodes, world.node_tree.links
        self.env_node = nodes.new("ShaderNodeTexEnvironment")    # unlinked vector: the ray's world direction
        self.env_node.interpolation = "Linear"
        links.new(self.env_node.outputs["Color"], nodes["Background"].inputs["Color"])
        nodes["Background"].inputs["Strength"].default_value = 1.0   # exposure is applied by the caller
        world.cycles.sampling_method = "MANUAL"   # size set per map (importance_map_resolution)
        self.scene.world = world

    def add_envmap(self, name: str, pixels: np.ndarray) -> None:
        """A float image from linear (H, W, 3) radiance (replacing a map of that name); Blender
        stores rows bottom-up."""
        self._retire(self.envmaps.pop(name, None))
        h, w, _ = pixels.shape
        img = self.bpy.data.images.new(f"env_{name}", w, h, alpha=False, float_buffer=True)
        img.colorspace_settings.name = "Linear Rec.709"
        rgba = np.concatenate([pixels[::-1], np.ones((h, w, 1), np.float32)], axis=-1)
        img.pixels.foreach_set(np.ascontiguousarray(rgba, dtype=np.float32).ravel())
        img.pack()
        self.envmaps[name] = img

    def set_geometry(self, vertices: np.ndarray, colors: np.ndarray, material: dict,
                     material_index: np.ndarray | None = None) -> None:
        """The posed hands (project world, y up) with their per-vertex albedo and material values
        (and each face's material slot, when given)."""
        verts = np.asarray(vertices, np.float64) @ WORLD_TO_BLENDER.T
        self.mesh.vertices.foreach_set("co", verts.astype(np.float32).ravel())
        rgba = np.concatenate([colors, np.ones((len(colors), 1), np.float32)], axis=1).astype(np.float32)
        self.mesh.color_attributes["albedo"].data.foreach_set("color", rgba.ravel())
        if material_index is not None:
            self.mesh.polygons.foreach_set("material_index", np.asarray(material_index, np.int32))
        self.mesh.update()
        for slot, skin in enumerate(self.skins):
            inputs = skin["bsdf"].inputs
            if slot in self.cloth_sheen:
                skin["subsurface"].default_value = 0.0
                inputs["Sheen Weight"].default_value = self.cloth_sheen[slot]
                continue
            inputs["Roughness"].default_value = float(material.get("roughness", 0.45))
            skin["subsurface"].default_value = float(material.get("subsurface_weight", 1.0))
            inputs["Subsurface Radius"].default_value = [float(x) for x in material.get("subsurface_radius", (1.0, 0.35, 0.2))]
            inputs["Subsurface Scale"].default_value = float(material.get("subsurface_scale_m", 0.003))
            inputs["Specular IOR Level"].default_value = float(material.get("specular", 0.5))

    def set_accessories(self, vertices: np.ndarray, faces: np.ndarray, material_index: np.ndarray,
                        materials: list[dict]) -> None:
        """The pose's accessories (project world, y up), smooth-shaded, one Principled BSDF per
        material slot. Object, mesh and materials are made anew for every pose and the previous
        pose's removed: an image must not depend on what the worker rendered before (reusing them
        left Cycles' scene a few levels different after other poses' pieces)."""
        bpy = self.bpy
        if self.accessories is not None or len(faces):
            self.rebuild = True
        if self.accessories is not None:
            mesh = self.accessories.data
            used = list(mesh.materials)
            bpy.data.objects.remove(self.accessories)
            bpy.data.meshes.remove(mesh)
            for material in used:
                bpy.data.materials.remove(material)
            self.accessories = None
        if not len(faces):
            return
        mesh = bpy.data.meshes.new("accessories")
        verts = np.asarray(vertices, np.float64) @ WORLD_TO_BLENDER.T
        mesh.from_pydata(verts.tolist(), [], np.asarray(faces, np.int64).tolist())
        mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
        for slot, values in enumerate(materials):
            unknown = sorted(set(values) - set(PRINCIPLED_INPUTS))
            if unknown:
                raise ValueError(f"accessory material {slot}: inputs {unknown}; allowed {list(PRINCIPLED_INPUTS)}")
            material = bpy.data.materials.new(f"accessory_{slot}")
            material.use_nodes = True
            inputs = material.node_tree.nodes["Principled BSDF"].inputs
            for name, value in values.items():
                inputs[name].default_value = value
            mesh.materials.append(material)
        mesh.polygons.foreach_set("material_index", np.asarray(material_index, np.int32))
        mesh.update()
        self.accessories = bpy.data.objects.new("accessories", mesh)
        self.scene.collection.objects.link(self.accessories)

    def render(self, header: dict) -> np.ndarray:
        """One view of the current geometry -> (H, W, 4) linear premultiplied RGBA, row 0 at the top."""
        bpy, scene = self.bpy, self.scene
        if header["envmap"] not in self.envmaps:
            raise KeyError(f"envmap {header['envmap']!r} was never sent (have {sorted(self.envmaps)})")
        image = self.envmaps[header["envmap"]]
        if self.env_node.image != image:              # the only world change, once per map
            self.env_node.image = image
            scene.world.cycles.sample_map_resolution = importance_map_resolution(image.size[0])
        # radiance arriving along d is the map's at turn(d) when the map is turned by env_rotation;
        # turning hands and camera by the same turn gives every ray the same radiance
        turn = np.eye(4)
        turn[:3, :3] = _rotation_z(float(header.get("env_rotation", 0.0)))
        cam = header["camera"]
        K, R, t = np.asarray(cam["K"], float), np.asarray(cam["R"], float), np.asarray(cam["t"], float)
        from mathutils import Matrix

        self.hands.matrix_world = Matrix(turn.tolist())
        if self.accessories is not None:
            self.accessories.matrix_world = Matrix(turn.tolist())
        self.camera.matrix_world = Matrix((turn @ camera_matrix_world(R, t)).tolist())
        for key, value in camera_lens(K, self.width, self.height).items():
            setattr(self.camera.data, key, value)
        self._set_lens(header.get("lens", {"dof.use_dof": False}))
        scene.cycles.seed = int(header["seed"]) % (2 ** 31)
        self._set_region(header.get("region"))
        transparent = bool(header.get("transparent", True))
        if scene.render.film_transparent != transparent:
            scene.render.film_transparent = transparent
        retired, self._retired = self._retired, []
        scene.render.use_persistent_data = not self.rebuild   # off: this render builds Cycles' scene anew
        bpy.ops.render.render(write_still=False)
        scene.render.use_persistent_data, self.rebuild = True, False
        for old in retired:                           # this render no longer used them
            bpy.data.images.remove(old)
        path = os.path.join(self.tmp, "frame.exr")
        bpy.data.images["Render Result"].save_render(path, scene=scene)
        img = bpy.data.images.load(path, check_existing=False)
        try:
            pixels = np.empty(self.width * self.height * 4, np.float32)
            img.pixels.foreach_get(pixels)
        finally:
            bpy.data.images.remove(img)
            os.unlink(path)
        return pixels.reshape(self.height, self.width, 4)[::-1].copy()

    def _set_lens(self, lens: dict) -> None:
        """The thin lens of the view (the camera persists: a pinhole view turns depth of field off)."""
        unknown = sorted(set(lens) - set(LENS_ATTRIBUTES))
        if unknown:
            raise ValueError(f"lens attributes {unknown}: allowed {list(LENS_ATTRIBUTES)}")
        for path, value in lens.items():
            owner, _, name = path.rpartition(".")
            setattr(self.camera.data.dof if owner == "dof" else self.camera.data, name, value)

    def _set_region(self, region: list[int] | None) -> None:
        """Blender's render border: fractions of the frame, y from the bottom."""
        render = self.scene.render
        render.use_border, render.use_crop_to_border = region is not None, False
        if region is not None:
            x0, y0, x1, y1 = (int(v) for v in region)
            w, h = self.width, self.height
            render.border_min_x, render.border_max_x = max(x0, 0) / w, min(x1 + 1, w) / w
            render.border_min_y, render.border_max_y = max(h - 1 - y1, 0) / h, min(h - y0, h) / h

    def close(self) -> None:
        os.rmdir(self.tmp)


def _rotation_z(angle: float) -> np.ndarray:
    """Rotation by ``angle`` about Blender's up axis (z)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def serve(inp, out) -> None:
    """Answer requests until ``quit`` or end of input; an error is answered, not fatal."""
    scene = None
    try:
        while True:
            try:
                header, arrays = read_message(inp)
            except EOFError:
                return
            op = header.get("op")
            try:
                if op == "quit":
                    write_message(out, {"ok": True})
                    return
                if op == "init":
                    t0 = time.perf_counter()
                    if scene is not None:
                        scene.close()
                    scene = CyclesScene(header, arrays["faces"].astype(np.int64), arrays["hand_of_face"], arrays.get("uv"))
                    import bpy

                    write_message(out, {"ok": True, "device": scene.device, "device_note": scene.device_note,
                                        "blender": bpy.app.version_string, "seconds": time.perf_counter() - t0})
                elif scene is None:
                    raise RuntimeError(f"request {op!r} before init")
                elif op == "skin":
                    scene.set_skin(int(header["hand"]), arrays["albedo"], arrays["roughness"], arrays["bump"],
                                   arrays["specular"])
                    write_message(out, {"ok": True})
                elif op == "cloth":
                    scene.set_cloth(int(header["slot"]), arrays["albedo"], arrays["roughness"], arrays["bump"],
                                    float(header["sheen"]))
                    write_message(out, {"ok": True})
                elif op == "envmap":
                    scene.add_envmap(header["name"], arrays["pixels"])
                    write_message(out, {"ok": True})
                elif op == "geometry":
                    scene.set_geometry(arrays["vertices"], arrays["colors"], header.get("material", {}),
                                       arrays.get("material_index"))
                    write_message(out, {"ok": True})
                elif op == "accessories":
                    scene.set_accessories(arrays["vertices"], arrays["faces"], arrays["material_index"],
                                          list(header["materials"]))
                    write_message(out, {"ok": True})
                elif op == "render":
                    t0 = time.perf_counter()
                    rgba = scene.render(header)
                    write_message(out, {"ok": True, "seconds": time.perf_counter() - t0}, {"rgba": rgba})
                else:
                    raise ValueError(f"unknown request {op!r}")
            except Exception as exc:  # answered so that the client raises it with context
                write_message(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        if scene is not None:
            scene.close()


def main() -> None:
    # run as a script, this folder comes first on sys.path, and its cycles.py would shadow
    # Blender's own ``cycles`` add-on
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                                   # Blender's own prints go to stderr
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, protocol_out)


if __name__ == "__main__":
    main()
