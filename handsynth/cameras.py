"""Pinhole cameras (OpenCV convention: X_cam = R X_world + t; x right, y down, z forward).

RenderIH renders every pose from several viewpoints around the two hands. A view is drawn from
configured ranges (azimuth, elevation, distance, roll, focal length) and looks at the centre of
the hands; a view in which any hand vertex falls outside the image (or behind the camera) is
rejected and drawn again, so every annotated keypoint and mask pixel is inside the frame. Points
that must not show (an arm's cut far end) reject a view too when they would project into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    K: np.ndarray   # (3, 3) pixels
    R: np.ndarray   # (3, 3) world -> camera
    t: np.ndarray   # (3,) metres
    width: int
    height: int

    @property
    def position(self) -> np.ndarray:
        return -self.R.T @ self.t


@dataclass(frozen=True)
class CameraRanges:
    """Sampling ranges; angles in degrees, distance in metres, focal length in image widths.

    Defaults imitate InterHand2.6M crops, RenderIH's target domain: IH2.6M's ~80 cameras sit on a
    dome about 1 m from the hands (distance 0.8-1.2 m) with focal lengths of about 1,200-1,500 px
    for its 512 x 334 frames (values as recalled from its released camera files, not re-checked
    here). Training code crops around the two hands (about 0.2-0.3 m across, so 250-450 px in a
    frame) with a margin and resizes to 256 px, which makes the effective focal length about
    f * 256 / crop = 2.4-3.4 image widths. Views in which a hand leaves the frame are rejected.
    """

    azimuth: tuple[float, float] = (0.0, 360.0)
    elevation: tuple[float, float] = (-60.0, 60.0)
    distance: tuple[float, float] = (0.8, 1.2)
    roll: tuple[float, float] = (-30.0, 30.0)
    focal: tuple[float, float] = (2.4, 3.4)


def project(points: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """World points (..., 3) -> pixels (..., 2)."""
    cam = points @ R.T + t
    uv = cam @ K.T
    return uv[..., :2] / uv[..., 2:3]


def unproject(uv: np.ndarray, depth: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pixels (..., 2) at camera-space depth z (...,) -> world points (..., 3)."""
    ones = np.ones(uv.shape[:-1] + (1,))
    rays = np.concatenate([uv, ones], axis=-1) @ np.linalg.inv(K).T        # z = 1
    cam = rays * depth[..., None]
    return (cam - t) @ R


def look_at(center: np.ndarray, azimuth: float, elevation: float, distance: float, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """R, t of a camera on a sphere around ``center`` (world y up), looking at it, rolled."""
    az, el, ro = np.deg2rad([azimuth, elevation, roll])
    position = center + distance * np.array([np.cos(el) * np.cos(az), np.sin(el), np.cos(el) * np.sin(az)])
    z = center - position
    z /= np.linalg.norm(z)
    up = np.array([0.0, 1.0, 0.0])
    y = -(up - z * (up @ z))
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    c, s = np.cos(ro), np.sin(ro)
    x, y = c * x + s * y, -s * x + c * y
    R = np.stack([x, y, z])
    return R, -R @ position


#: Depth (m) in front of the camera below which a point counts as behind it.
NEAR_M = 0.05


class NoView(RuntimeError):
    """No view of the tries met the conditions."""


def shows(points: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int) -> bool:
    """Whether a small closed shape with corners ``points`` (Q, 3) may show in the image: the box
    around the projections of its corners in front of the camera overlaps the frame. Corners
    behind the camera are left out (the shape crosses the camera's plane, i.e. leaves the frame
    toward the viewer)."""
    front = points[points @ R[2] + t[2] > NEAR_M]
    if not len(front):
        return False
    uv = project(front, K, R, t)
    low, high = uv.min(axis=0), uv.max(axis=0)
    return bool((low < np.array([width, height])).all() and (high > 0.0).all())


def sample_camera(center: np.ndarray, points: np.ndarray, ranges: CameraRanges, rng: np.random.Generator,
                  width: int, height: int, margin: float = 2.0, max_tries: int = 200,
                  hidden: np.ndarray | None = None) -> Camera:
    """A random view of ``points`` (P, 3) keeping all of them inside the image by ``margin`` px,
    and each shape of ``hidden`` (S, Q, 3) out of it (:func:`shows`)."""
    for _ in range(max_tries):
        f = rng.uniform(*ranges.focal) * width
        K = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
        R, t = look_at(center, rng.uniform(*ranges.azimuth), rng.uniform(*ranges.elevation),
                       rng.uniform(*ranges.distance), rng.uniform(*ranges.roll))
        z = points @ R[2] + t[2]
        if (z <= NEAR_M).any():
            continue
        uv = project(points, K, R, t)
        if not ((uv >= margin) & (uv <= np.array([width, height]) - margin)).all():
            continue
        if hidden is None or not any(shows(shape, K, R, t, width, height) for shape in hidden):
            return Camera(K, R, t, width, height)
    raise NoView(f"no camera view in {max_tries} tries keeps all {len(points)} points inside a "
                 f"{width}x{height} image{'' if hidden is None else ' and the hidden shapes out of it'}; "
                 f"widen CameraRanges.distance or shorten focal")
