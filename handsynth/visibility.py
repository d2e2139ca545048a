"""Keypoint visibility: is the joint's own skin what the camera sees at the joint's pixel?

Joints of the hand model lie inside the hand (the wrist about 2-3 cm beneath the skin of the palm,
the knuckles about a finger's radius), fingertips are skin vertices. So a fixed depth tolerance
is wrong both ways: too small for the wrist (never visible), too loose for fingertips (a surface
far behind the tip passed). Instead, per joint and per view, the tolerance is measured from the
mesh: the rays through the four pixel centres around the joint's projection (docs/ARCHITECTURE.md
"Pixels") are intersected with the camera-facing triangles of the joint's OWN hand mesh, and the
crossing nearest in front of the joint is the skin that covers it (the joint's depth minus the
skin's is the local thickness along the view ray: the wrist and the knuckles get their own, from
whichever side they are seen). The joint is visible when, at one of those four pixels,

1. is inside the image and labelled with a part of its own hand (right 1..16, left 17..32):
   not hidden by the other hand, a forearm or sleeve (33..36) or an accessory (37..40);
2. shows, in the rendered depth, exactly that covering skin (within depth-PNG rounding):
   nothing of either hand lies between the camera and the skin over the joint.

A surface keypoint (fingertip) may have no crossing in front of it; its covering skin is then the
nearest crossing at most ``SURFACE_SLACK_M`` behind it (the pixel centre's ray passes up to 0.7 px
beside the vertex), so a tip whose pixel shows a palm or the other hand far behind is not
visible. A fingertip exactly on the outline (seen side-on) is visible when one of the four pixel
centres around it falls on its skin.
"""

from __future__ import annotations

import numpy as np

from handsynth.cameras import Camera, project
from handsynth.render.pixel_centres import facing_surface_crossings

#: Rendered depth and the covering skin's depth may differ by the PNG's millimetre rounding
#: (0.5 mm) plus the GL depth buffer's and rasteriser's sub-pixel precision.
DEPTH_MATCH_M = 0.0015

#: How far behind a surface keypoint its skin may be seen at the keypoint's pixel centre.
SURFACE_SLACK_M = 0.004

#: Labels of each hand, in the order the keypoints are stacked (right, left).
HAND_LABELS = ((1, 16), (17, 32))


#: The four pixel centres around a projected point (column, row offsets from its floor).
_NEIGHBOURS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])


def keypoint_pixels(keypoints: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) world -> the 4 pixel centres around each projection (N, 4, 2) as (column, row),
    which of them are inside the image (N, 4), and the keypoints' camera depth z (N,)."""
    uv = project(keypoints, camera.K, camera.R, camera.t)
    z = keypoints @ camera.R[2] + camera.t[2]
    pix = np.floor(uv).astype(np.int64)[:, None, :] + _NEIGHBOURS
    inside = ((pix[..., 0] >= 0) & (pix[..., 0] < camera.width) & (pix[..., 1] >= 0) & (pix[..., 1] < camera.height)
              & (z[:, None] > 0))
    return np.clip(pix, 0, [camera.width - 1, camera.height - 1]), inside, z


def covering_skin_depth(keypoints: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                        camera: Camera) -> np.ndarray:
    """(N, 4) camera depth of the own-hand skin over each keypoint along the rays of the 4 pixel
    centres around it (``keypoint_pixels``); nan where there is none or the pixel is outside.

    The nearest camera-facing crossing in front of the keypoint, else (surface keypoints) the
    nearest one at most ``SURFACE_SLACK_M`` behind it.
    """
    pix, inside, z = keypoint_pixels(keypoints, camera)
    pixel, depth = facing_surface_crossings(vertices, faces, camera, pix.reshape(-1, 2))
    joint_z = np.repeat(z, len(_NEIGHBOURS))[pixel]
    front = np.full(inside.size, -np.inf)          # nearest crossing in front: the largest depth <= z
    np.maximum.at(front, pixel, np.where(depth <= joint_z, depth, -np.inf))
    behind = np.full(inside.size, np.inf)          # else the nearest within the slack behind
    np.minimum.at(behind, pixel, np.where((depth > joint_z) & (depth <= joint_z + SURFACE_SLACK_M), depth, np.inf))
    skin = np.where(np.isfinite(front), front, np.where(np.isfinite(behind), behind, np.nan)).reshape(inside.shape)
    return np.where(inside, skin, np.nan)


def keypoint_visibility(keypoints: np.ndarray, camera: Camera, labels: np.ndarray, depth_mm: np.ndarray,
                        hands: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(H, K, 3) world keypoints of H hands -> (H, K) bool visibility (rules in the module doc).

    labels, depth_mm: the rendered label and depth images; hands: (vertices, faces) per hand, in
    the keypoints' order (right, left).
    """
    visible = np.zeros(keypoints.shape[:2], dtype=bool)
    for h, (vertices, faces) in enumerate(hands):
        pix, inside, _ = keypoint_pixels(keypoints[h], camera)
        label = labels[pix[..., 1], pix[..., 0]]
        lo, hi = HAND_LABELS[h]
        skin = covering_skin_depth(keypoints[h], vertices, faces, camera)
        seen = depth_mm[pix[..., 1], pix[..., 0]] / 1000.0
        match = np.abs(seen - np.nan_to_num(skin, nan=-1.0)) <= DEPTH_MATCH_M
        visible[h] = (inside & (label >= lo) & (label <= hi) & match).any(axis=1)
    return visible
