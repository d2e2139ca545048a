"""A UV layout for a hand mesh in MANO's schema, computed once and cached by model digest.

MANO's official files carry no texture coordinates, and the stand-in is rebuilt from a surface
whose vertex order is MANO's, not an artist's; so both get their layout the same way: ``xatlas``
charts the right hand's rest mesh (a few dozen charts, padded for bilinear lookups) and the
result is cached under ``<cache>/uv/<digest>.npz``. Skin textures are computed from 3D rest-pose
attributes rasterised into this layout (:mod:`handsynth.render.skin`), so the chart shapes never
show as texture discontinuities.

Convention, as in OBJ ``vt``/``f``: ``uv`` (T, 2) in [0, 1] with v pointing UP (v = 0 is the
bottom row of the image), ``faces_uv`` (F, 3) gives each face corner's ``uv`` row, face by face
in the model's face order. The left hand is the mirror of the right: its corners carry the same
coordinates as the right hand's corners at the same vertices, so one texture fits both hands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Bumped when the charting settings change (part of the cache key).
UV_VERSION = "uv-2"
#: Charts are packed for this texture size with this many texels of padding between them.
PACK_RESOLUTION = 1024
PACK_PADDING = 6


@dataclass(frozen=True)
class UVLayout:
    """Texture coordinates of one hand: ``uv`` (T, 2) float32, ``faces_uv`` (F, 3) int32.

    ``vertex_ids`` (T,) int32 names the mesh vertex each coordinate belongs to (a vertex on a
    chart seam has several), so per-vertex values can be gathered from a texture.
    """

    uv: np.ndarray
    faces_uv: np.ndarray
    vertex_ids: np.ndarray

    def corner_uv(self) -> np.ndarray:
        """(F, 3, 2) the coordinates at every face corner."""
        return self.uv[self.faces_uv]


def compute_uv_layout(vertices: np.ndarray, faces: np.ndarray) -> UVLayout:
    """Chart and pack a closed triangle mesh with xatlas (deterministic for a given mesh).

    The mesh is handed over in millimetres: in metres xatlas treats the smallest faces as
    degenerate and leaves their corners at (0, 0).
    """
    import xatlas

    atlas = xatlas.Atlas()
    mm = np.asarray(vertices, dtype=np.float64) * 1000.0
    atlas.add_mesh(np.ascontiguousarray(mm, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = PACK_RESOLUTION
    pack.padding = PACK_PADDING
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uv = atlas[0]
    if indices.shape != faces.shape or not np.array_equal(vmapping[indices], faces):
        raise RuntimeError("xatlas changed the face order; cannot map its UVs back onto the model's faces")
    if (uv == 0).all(axis=1).any():
        raise RuntimeError("xatlas left faces uncharted (corners at 0, 0): degenerate faces in the hand mesh?")
    return UVLayout(np.clip(uv, 0.0, 1.0).astype(np.float32), indices.astype(np.int32), vmapping.astype(np.int32))


def mirrored_layout(right: UVLayout, right_faces: np.ndarray, left_faces: np.ndarray) -> UVLayout:
    """The right hand's layout on the left hand's faces, matched face by face through vertex ids.

    The left hand's faces are the right's re-wound (stand-in) or MANO's own left faces; either
    way each left face has a right face over the same three vertices, and each corner takes the
    coordinate the right face gives that vertex.
    """
    key = {tuple(sorted(map(int, f))): i for i, f in enumerate(right_faces)}
    faces_uv = np.empty_like(right.faces_uv)
    for li, f in enumerate(left_faces):
        ri = key.get(tuple(sorted(map(int, f))))
        if ri is None:
            raise ValueError(f"left hand face {li} {tuple(map(int, f))} has no right-hand face over the same vertices")
        corner_of = dict(zip(map(int, right_faces[ri]), right.faces_uv[ri]))
        faces_uv[li] = [corner_of[int(v)] for v in f]
    return UVLayout(right.uv, faces_uv, right.vertex_ids)


def cached_uv_layout(cache_dir: Path, digest: str, vertices: np.ndarray, faces: np.ndarray) -> UVLayout:
    """The layout of the right hand with model ``digest``, computed once into ``cache_dir/uv``."""
    path = Path(cache_dir) / "uv" / f"{UV_VERSION}-{digest}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            layout = UVLayout(z["uv"], z["faces_uv"], z["vertex_ids"])
        if layout.faces_uv.shape == faces.shape and np.array_equal(layout.vertex_ids[layout.faces_uv], faces):
            return layout
        log.warning("%s: cached UV layout does not fit the model's %d faces; recomputing", path, len(faces))
    log.info("computing the UV layout of hand model %s with xatlas", digest)
    layout = compute_uv_layout(vertices, faces)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, uv=layout.uv, faces_uv=layout.faces_uv, vertex_ids=layout.vertex_ids)
    tmp.replace(path)
    return layout
