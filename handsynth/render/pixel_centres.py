"""Triangles sampled at pixel centres in numpy: the independent silhouette and per-pixel surface depths.

The project's pixel convention (docs/ARCHITECTURE.md, "Pixels"): integer pixel coordinates are
pixel centres, as in OpenCV and InterHand2.6M, so pixel (row r, column c) is the sample at
projected coordinates (u, v) = (c, r) and covers [c - 0.5, c + 0.5) x [r - 0.5, r + 0.5).

This module knows nothing of OpenGL: the mask check compares pyrender's labels with what it finds
here, and keypoint visibility asks it which surfaces of a hand a pixel's ray crosses. Every test
is the same edge function, vectorised over all (triangle, candidate pixel) pairs, so a 256 x 256
silhouette of two hands takes a few milliseconds instead of a Python loop over 3,000 triangles.
"""

from __future__ import annotations

import numpy as np

from handsynth.cameras import Camera, project


def _camera_space(vertices: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) world -> pixel coordinates (V, 2) and camera depth z (V,)."""
    return project(vertices, camera.K, camera.R, camera.t), vertices @ camera.R[2] + camera.t[2]


def _edge_functions(tri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per triangle (F, 3, 2) the edge functions w_i(x, y) = A_i x + B_i y + C_i, i = vertex.

    w_i is twice the area of the sub-triangle opposite vertex i, signed so that all three are
    >= 0 inside whichever way the triangle winds; they sum to twice the triangle's area (F,),
    so w_i / sum are the screen-space barycentrics. Degenerate triangles get area 0.
    """
    j, k = tri[:, [1, 2, 0]], tri[:, [2, 0, 1]]          # the edge opposite each vertex
    d = k - j
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - \
        (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])
    sign = np.sign(area)[:, None]
    return -d[..., 1] * sign, d[..., 0] * sign, (d[..., 1] * j[..., 0] - d[..., 0] * j[..., 1]) * sign, np.abs(area)


def silhouette_from_projection(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside (or on an edge of) some projected triangle.

    Candidates are the pixel centres of each triangle's bounding box. Boxes are padded to powers
    of two and grouped by padded size, so each group is one broadcast (n, rows, columns) grid,
    and the edge functions split into a column term plus a row term: no per-candidate index
    arithmetic. A pixel centre outside the box is outside the triangle, so padding adds no pixels.
    """
    uv, _ = _camera_space(vertices, camera)
    tri = uv[faces]
    A, B, C, area = _edge_functions(tri)
    lo = np.maximum(np.ceil(tri.min(axis=1)), 0).astype(np.int64)                  # (F, 2) column, row
    hi = np.minimum(np.floor(tri.max(axis=1)), [camera.width - 1, camera.height - 1]).astype(np.int64)
    size = hi - lo + 1
    keep = (size > 0).all(axis=1) & (area > 0)
    pad = 2 ** np.ceil(np.log2(np.maximum(size, 1))).astype(np.int64)
    mask = np.zeros((camera.height, camera.width), dtype=bool)
    group = np.where(keep, pad[:, 0] * 65536 + pad[:, 1], -1)
    order = np.argsort(group, kind="stable")
    keys, starts = np.unique(group[order], return_index=True)
    for key, sel in zip(keys, np.split(order, starts[1:])):
        if key < 0:
            continue
        pw, ph = divmod(int(key), 65536)
        xs = lo[sel, 0, None] + np.arange(pw)                                       # (n, pw)
        ys = lo[sel, 1, None] + np.arange(ph)                                       # (n, ph)
        inside = (xs < camera.width)[:, None, :] & (ys < camera.height)[:, :, None]
        for e in range(3):
            inside &= (A[sel, e, None] * xs)[:, None, :] + (B[sel, e, None] * ys + C[sel, e, None])[:, :, None] >= 0
        n, r, c = np.nonzero(inside)
        mask[ys[n, r], xs[n, c]] = True
    return mask


def facing_surface_crossings(vertices: np.ndarray, faces: np.ndarray, camera: Camera,
                             pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where pixel centres' rays meet camera-facing triangles: (pixel index (N,), camera depth (N,) m).

    pixels (P, 2) integer (column, row). Camera-facing = outward normal toward the camera (faces
    wound as OpenGL draws front faces; pyrender culls the others, so these are the surfaces a
    render can show). Meant for a handful of pixels (the keypoints of one hand): only the
    (pixel, triangle) pairs whose bounding box holds the pixel centre get the edge test.
    """
    uv, z = _camera_space(vertices, camera)
    cam = vertices @ camera.R.T + camera.t
    normal = np.cross(cam[faces[:, 1]] - cam[faces[:, 0]], cam[faces[:, 2]] - cam[faces[:, 0]])
    facing = np.einsum("fc,fc->f", normal, cam[faces[:, 0]]) < 0
    faces = faces[facing]
    tri = uv[faces]
    lo, hi = tri.min(axis=1), tri.max(axis=1)                                       # (F, 2)
    x, y = pixels[:, 0].astype(np.float64), pixels[:, 1].astype(np.float64)
    near = ((x[:, None] >= lo[None, :, 0]) & (x[:, None] <= hi[None, :, 0])
            & (y[:, None] >= lo[None, :, 1]) & (y[:, None] <= hi[None, :, 1]))       # (P, F)
    p, f = np.nonzero(near)
    A, B, C, area = _edge_functions(tri[f])
    w = A * x[p, None] + B * y[p, None] + C                                           # (N, 3)
    inside = (area > 0) & (w >= 0).all(axis=1)
    p, f, w, area = p[inside], f[inside], w[inside], area[inside]
    # perspective-correct: 1/z is linear in the image, interpolated with the barycentrics
    return p, area / (w / z[faces[f]]).sum(axis=1)
