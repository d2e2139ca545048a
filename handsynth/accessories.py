"""Watches, bracelets and rings on the hands: drawn per pose, fitted around the posed surface, labelled.

Issue 19 asks for accessories with labels of their own at a configurable share. A share of the
hands (``ArmOptions.accessory_share``) wears a wrist piece (a watch, or a bracelet: a band or a
string of beads) and, drawn independently at the same share, a ring on the proximal phalanx of a
finger (ring finger most often). Every draw derives from ``seed_for("accessories", seed, pose_id)``
and the material of each piece from ``seed_for("accessory_material", seed, pose_id, side, kind)``
(:func:`handsynth.render.accessories.accessory_materials`): the same pose wears the same things
wherever it is rendered, and every variable is drawn whatever the share, so a share changes which
hands wear something, not what they wear.

Fitting (why they neither sink into the skin nor float): each piece is built from the pose's own
posed surface, so it follows ``global_orient`` and the finger pose.

* a wrist piece is a band around the forearm's rings (:class:`handsynth.hand_model.forearm.Forearm`)
  past the wrist blend: per direction around the arm its inner radius is the largest the forearm
  reaches there over the band's width and the neighbouring rings (whose vertices the subdivided
  surface mixes in), plus :data:`CLEARANCE`; a watch's case sits on the back of the wrist, lifted
  above the strap and any skin under its footprint;
* a ring is a band around the finger's cross-section halfway between its MCP and PIP joints,
  centred on the cross-section's centroid: per direction around the finger its inner radius is
  the farthest the rendered skin of the phalanx reaches that way within the band's width (the
  cross-section's support function, which encloses it), plus :data:`RING_CLEARANCE`.

Then every piece is tested, on the very surface that renders (subdivided), for crossing triangles
with both hands, both forearms and the pieces kept before it (:func:`handsynth.penetration.intersecting_triangle_pairs`):
a ring that would pass through a neighbouring finger moves to the next finger drawn (not to the
thumb), a wrist piece that would (the other hand gripping the wrist, a sleeve's cuff under it) is left off, and each
piece left off is recorded. Labels: 37 right / 38 left wrist piece, 39 right / 40 left ring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from handsynth.hand_model import forearm as fa
from handsynth.penetration import intersecting_triangle_pairs
from handsynth.render.accessories import AccessoryMaterials, SurfaceMaterial, accessory_materials
from handsynth.seeds import rng_for, seed_for

SIDES = ("right", "left")
WRIST_LABELS: dict[str, int] = {"right": 37, "left": 38}
RING_LABELS: dict[str, int] = {"right": 39, "left": 40}
ACCESSORY_LABELS = (37, 38, 39, 40)
#: Gap between a wrist piece and the forearm's skin (m): a strap worn snug.
CLEARANCE = 0.0015
#: Gap between a ring and the finger's skin (m).
RING_CLEARANCE = 0.0005
#: Of the wrist pieces, the share that are watches (the rest bracelets).
WATCH_SHARE = 0.6
#: Fingers a ring goes on, with their weights, and each finger's MCP keypoint (MANO order; the PIP
#: is the next keypoint and the proximal phalanx is the part of the MCP joint; the thumb's MCP and
#: IP). The fingers are tried in the drawn order: between two fingers pressed together a ring
#: cannot sit without passing through one, so a ring often moves to the next finger drawn. It never
#: moves to the thumb: few people wear a thumb ring (the thumb is drawn first at its weight only),
#: and a fallback onto the thumb, the finger least often pressed against another, made thumb rings
#: the most common kind (44 of 69 fitted rings in ``benchmarks/accessory_bench.py``).
RING_FINGERS = {"ring": 0.4, "middle": 0.15, "index": 0.2, "pinky": 0.15, "thumb": 0.1}
FINGER_MCP = {"index": 1, "middle": 4, "pinky": 7, "ring": 10, "thumb": 14}
#: Where a ring sits between the MCP (0) and PIP (1) joints: past the web between the fingers.
RING_POSITION = 0.5
#: Where a wrist piece's near edge may sit beyond the wrist blend (m, drawn uniformly): a watch or
#: bracelet is worn just above the wrist bones.
WRIST_GAP_RANGE = (0.003, 0.015)
#: Segments around a band, per forearm ring vertex (the forearm has 15 around: 60 make it round).
AROUND_PER_RING_VERTEX = 4
RING_SEGMENTS = 40
PROFILE_SEGMENTS = 12


@dataclass(frozen=True)
class Wish:
    """What one hand is drawn to wear, before fitting: ``kind`` (watch, bracelet, ring), where
    (``fingers`` in order of preference for a ring; for a wrist piece ``gap_m`` from the end of the
    wrist blend to its near edge), sizes in metres (a string of beads: the cord's) and the materials."""

    kind: str
    side: str
    materials: AccessoryMaterials
    width: float
    thickness: float
    gap_m: float = 0.0
    fingers: tuple[str, ...] = ()
    case_diameter: float = 0.0
    case_height: float = 0.0
    bead_radius: float = 0.0


def draw_accessories(share: float, seed: int, pose_id: str) -> list[Wish]:
    """What the pose's hands wear, each hand's wrist piece and ring at ``share`` (see the module doc)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"accessory_share must be in [0, 1], got {share}")
    rng = rng_for("accessories", seed, pose_id)
    wishes = []
    names, weights = list(RING_FINGERS), np.array(list(RING_FINGERS.values()))
    for side in SIDES:
        wears_wrist, wears_ring, watch = rng.random(3)
        kind = "watch" if watch < WATCH_SHARE else "bracelet"
        materials = accessory_materials(kind, seed_for("accessory_material", seed, pose_id, side, kind))
        gap = float(rng.uniform(*WRIST_GAP_RANGE))
        if kind == "watch":
            wrist = Wish(kind, side, materials, float(rng.uniform(0.018, 0.022)), float(rng.uniform(0.002, 0.003)), gap,
                         case_diameter=float(rng.uniform(0.034, 0.042)), case_height=float(rng.uniform(0.008, 0.011)))
        elif "beads" in materials.parts:
            wrist = Wish(kind, side, materials, 0.001, 0.001, gap, bead_radius=float(rng.uniform(0.003, 0.005)))
        else:
            wrist = Wish(kind, side, materials, float(rng.uniform(0.003, 0.010)), float(rng.uniform(0.0015, 0.0035)), gap)
        order = [names[i] for i in rng.choice(len(names), size=len(names), replace=False, p=weights / weights.sum())]
        fingers = (order[0], *(f for f in order[1:] if f != "thumb"))
        ring = Wish("ring", side, accessory_materials("ring", seed_for("accessory_material", seed, pose_id, side, "ring")),
                    float(rng.uniform(0.002, 0.005)), float(rng.uniform(0.001, 0.0016)), fingers=fingers)
        wishes += [w for w, worn in ((wrist, wears_wrist < share), (ring, wears_ring < share)) if worn]
    return wishes


@dataclass(frozen=True)
class Piece:
    """One fitted accessory: a closed mesh (world metres) whose faces each name a part of its
    materials (``face_parts`` index ``part_names``), and where it sits."""

    wish: Wish
    where: str                 # "wrist" or the finger's name
    vertices: np.ndarray       # (V, 3)
    faces: np.ndarray          # (F, 3), wound outward
    part_names: tuple[str, ...]
    face_parts: np.ndarray     # (F,)

    @property
    def label(self) -> int:
        return (RING_LABELS if self.wish.kind == "ring" else WRIST_LABELS)[self.wish.side]

    def record(self) -> dict[str, object]:
        """What a manifest row says about it: kind, side, where, sizes (mm) and the material record."""
        w = self.wish
        sizes = {"width_mm": w.width, "thickness_mm": w.thickness, "case_diameter_mm": w.case_diameter,
                 "case_height_mm": w.case_height, "bead_radius_mm": w.bead_radius}
        return {"kind": w.kind, "side": w.side, "where": self.where, "label": self.label,
                **{k: round(1000.0 * v, 2) for k, v in sizes.items() if v}, "materials": w.materials.to_record()}


@dataclass(frozen=True)
class Dressing:
    """A pose's fitted pieces and the pieces drawn but left off (kind, side, why)."""

    pieces: tuple[Piece, ...] = ()
    left_off: tuple[tuple[str, str, str], ...] = ()

    def record(self) -> dict[str, object]:
        """JSON-ready manifest columns."""
        return {"accessories": json.dumps([p.record() for p in self.pieces], sort_keys=True),
                "accessories_left_off": json.dumps([list(x) for x in self.left_off])}

    @cached_property
    def mesh(self) -> "AccessoryMesh":
        """All pieces as one mesh for the renderers (built once: both passes and every view use it)."""
        vertices, faces, labels, slots, materials = [], [], [], [], []
        offset = 0
        for piece in self.pieces:
            vertices.append(piece.vertices)
            faces.append(piece.faces + offset)
            labels.append(np.full(len(piece.faces), piece.label, np.int64))
            slots.append(piece.face_parts + len(materials))
            materials += [piece.wish.materials.parts[name] for name in piece.part_names]
            offset += len(piece.vertices)
        if not self.pieces:
            return AccessoryMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int64),
                                 np.zeros(0, np.int64), [], np.zeros((0, 3)))
        faces_all, slots_all = np.concatenate(faces), np.concatenate(slots)
        verts = np.concatenate(vertices)
        colour = np.zeros((len(verts), 3))
        colour[faces_all.ravel()] = np.repeat(np.array([materials[k].base_color for k in slots_all]), 3, axis=0)
        return AccessoryMesh(verts, faces_all, np.concatenate(labels), slots_all, materials, colour)


@dataclass(frozen=True)
class AccessoryMesh:
    """The pieces of a pose as one mesh: per face its label and material slot (index of
    ``materials``); per vertex the linear base colour of its part (the raster preview's colour;
    every part has vertices of its own)."""

    vertices: np.ndarray
    faces: np.ndarray
    face_labels: np.ndarray
    face_slots: np.ndarray
    materials: list[SurfaceMaterial]
    linear_colors: np.ndarray


@dataclass(frozen=True)
class SideSurface:
    """What fitting needs of one side of a posed pose: the rendered (subdivided) surface of hand and
    forearm, each hand face's part, the 21 keypoints, the forearm's rings (batch of one) and the
    sleeve's cuff distance from the wrist loop (None without a sleeve)."""

    vertices: np.ndarray       # (V, 3)
    faces: np.ndarray          # (F, 3): hand faces first
    hand_face_parts: np.ndarray   # (F_hand,) part 0..15 of the hand's faces
    keypoints: np.ndarray      # (21, 3)
    forearm: fa.Forearm
    sleeve_start: float | None = None


# ---- meshes ---------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _grid_faces(rows: int, cols: int, offset: int = 0) -> np.ndarray:
    """Quads (as two triangles) of a (rows x cols) vertex grid closed in both directions (a torus)."""
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    a, b = i * cols + j, ((i + 1) % rows) * cols + j
    c, d = ((i + 1) % rows) * cols + (j + 1) % cols, i * cols + (j + 1) % cols
    return offset + np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])


def _outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``faces`` wound so that the closed surface's signed volume is positive (normals point out)."""
    t = vertices[faces]
    volume = np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum()
    return faces if volume > 0 else faces[:, ::-1].copy()


def band(centre: np.ndarray, axis: np.ndarray, directions: np.ndarray, radii: np.ndarray, width: float,
         thickness: float, exponent: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """A closed band around ``axis`` through ``centre``: at each of the (N,) in-plane unit
    ``directions`` its inner surface lies ``radii`` out; its cross-section is a superellipse
    (``exponent`` 2: an ellipse, larger: a rounded rectangle) ``width`` along the axis and
    ``thickness`` outward."""
    t = np.linspace(0.0, 2 * np.pi, PROFILE_SEGMENTS, endpoint=False)
    power = 2.0 / exponent
    out = 0.5 * thickness * (1 + np.sign(np.cos(t)) * np.abs(np.cos(t)) ** power)     # 0 at the inner side
    along = 0.5 * width * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** power
    verts = (centre + along[None, :, None] * axis
             + directions[:, None, :] * (radii[:, None, None] + out[None, :, None])).reshape(-1, 3)
    return verts, _outward(verts, _grid_faces(len(directions), PROFILE_SEGMENTS))


def _disc(centre: np.ndarray, normal: np.ndarray, u: np.ndarray, radius: float, segments: int,
          up: bool) -> tuple[np.ndarray, np.ndarray]:
    """A flat fan (its own vertices: a sharp edge when smooth-shaded) facing ``normal`` (``up``) or away."""
    v = np.cross(normal, u)
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = centre + radius * (np.cos(a)[:, None] * u + np.sin(a)[:, None] * v)
    faces = np.stack([np.full(segments, segments), np.arange(segments), (np.arange(segments) + 1) % segments], 1)
    return np.concatenate([ring, centre[None]]), faces if up else faces[:, ::-1].copy()


def _wall(bottom: np.ndarray, normal: np.ndarray, u: np.ndarray, radius: float, height: float,
          segments: int, outward: bool) -> tuple[np.ndarray, np.ndarray]:
    """An open cylinder wall from ``bottom`` up ``normal``, facing out (``outward``) or in."""
    v = np.cross(normal, u)
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = radius * (np.cos(a)[:, None] * u + np.sin(a)[:, None] * v)
    verts = np.concatenate([bottom + ring, bottom + height * normal + ring])
    k = np.arange(segments)
    n = (k + 1) % segments
    faces = np.concatenate([np.stack([k, n, n + segments], 1), np.stack([k, n + segments, k + segments], 1)])
    return verts, faces if outward else faces[:, ::-1].copy()


def _join(parts: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Meshes (vertices, faces, part index) as one: vertices, faces, each face's part."""
    verts, faces, face_parts, offset = [], [], [], 0
    for v, f, part in parts:
        verts.append(v)
        faces.append(f + offset)
        face_parts.append(np.full(len(f), part))
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(face_parts)


def watch_case(bottom: np.ndarray, normal: np.ndarray, u: np.ndarray, diameter: float,
               height: float) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """A round case standing on ``bottom`` along ``normal``: wall, back and a bezel around a dial
    recessed 1 mm (the case's parts "case", the dial "dial")."""
    r, inner, recess, n = 0.5 * diameter, 0.41 * diameter, 0.001, 48
    top = bottom + height * normal
    bezel_ring = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    v = np.cross(normal, u)
    circle = np.cos(bezel_ring)[:, None] * u + np.sin(bezel_ring)[:, None] * v
    bezel = np.concatenate([top + r * circle, top + inner * circle])
    k, m = np.arange(n), (np.arange(n) + 1) % n
    bezel_faces = np.concatenate([np.stack([k, m, m + n], 1), np.stack([k, m + n, k + n], 1)])
    return [(*_wall(bottom, normal, u, r, height, n, True), "case"), (*_disc(bottom, normal, u, r, n, False), "case"),
            (bezel, bezel_faces, "case"), (*_wall(top - recess * normal, normal, u, inner, recess, n, False), "case"),
            (*_disc(top - recess * normal, normal, u, inner, n, True), "dial")]


def sphere(centre: np.ndarray, radius: float, rows: int = 6, cols: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere: poles and ``rows - 1`` latitude rings of ``cols`` vertices."""
    lat = np.linspace(0.0, np.pi, rows + 1)[1:-1]
    lon = np.linspace(0.0, 2 * np.pi, cols, endpoint=False)
    ring = np.stack([np.sin(lat)[:, None] * np.cos(lon), np.sin(lat)[:, None] * np.sin(lon),
                     np.repeat(np.cos(lat)[:, None], cols, 1)], -1).reshape(-1, 3)
    verts = centre + radius * np.concatenate([[[0, 0, 1.0]], ring, [[0, 0, -1.0]]])
    south = len(verts) - 1
    faces = [[0, 1 + (j + 1) % cols, 1 + j] for j in range(cols)]
    for i in range(rows - 2):
        for j in range(cols):
            a, b = 1 + i * cols + j, 1 + i * cols + (j + 1) % cols
            faces += [[a, b, b + cols], [a, b + cols, a + cols]]
    faces += [[south, 1 + (rows - 2) * cols + j, 1 + (rows - 2) * cols + (j + 1) % cols] for j in range(cols)]
    return verts, _outward(verts, np.array(faces))


# ---- fitting --------------------------------------------------------------------------------------


def _in_plane(offsets: np.ndarray, axis: np.ndarray) -> np.ndarray:
    return offsets - (offsets @ axis)[..., None] * axis


def _wrist_piece(wish: Wish, side: SideSurface) -> Piece | str:
    """The wish around the forearm (see the module doc), or why it cannot be worn."""
    forearm, stations = side.forearm, side.forearm.stations
    n_loop = len(forearm.hand_loop)
    rings = forearm.vertices[0, :len(stations) * n_loop].detach().double().numpy().reshape(len(stations), n_loop, 3)
    reach = 2 * wish.bead_radius if wish.bead_radius else wish.width                   # along the arm
    span = (fa.BLEND_LENGTH + wish.gap_m, fa.BLEND_LENGTH + wish.gap_m + reach)
    if side.sleeve_start is not None and span[1] > side.sleeve_start:
        return "a sleeve's cuff"
    straight = stations >= fa.BLEND_LENGTH - 1e-9
    means = rings.mean(axis=1)
    first = int(np.flatnonzero(straight)[0])
    axis = _unit(means[first + 1] - means[first])
    station = 0.5 * (span[0] + span[1])
    centre = means[first] + (station - stations[first]) * axis
    # every ring past the blend within a ring spacing of the band: the subdivided surface there mixes them
    near = straight & (stations >= span[0] - 0.021) & (stations <= span[1] + 0.021)
    offsets = _in_plane(rings[near] - centre, axis)                                     # (K, L, 3)
    reference = offsets[np.argmin(np.abs(stations[near] - station))]
    dirs = _unit(reference)
    radii = np.max(np.einsum("kli,li->kl", offsets, dirs), axis=0)                      # along each direction
    points = dirs * radii[:, None]
    f = np.arange(AROUND_PER_RING_VERTEX) / AROUND_PER_RING_VERTEX                     # chords: no corner cut
    around = (points[:, None] * (1 - f[:, None]) + np.roll(points, -1, 0)[:, None] * f[:, None]).reshape(-1, 3)
    around_dirs, around_r = _unit(around), np.linalg.norm(around, axis=1) + CLEARANCE
    if wish.bead_radius:
        return _beads(wish, centre, axis, around_dirs, around_r)
    strap_v, strap_f = band(centre, axis, around_dirs, around_r, wish.width, wish.thickness)
    parts: list[tuple[np.ndarray, np.ndarray, str]] = [(strap_v, strap_f, "strap" if wish.kind == "watch" else "band")]
    if wish.kind == "watch":
        volar = np.cross(side.keypoints[1] - side.keypoints[0], side.keypoints[7] - side.keypoints[0])
        dorsal = _unit(_in_plane(-volar * (1.0 if wish.side == "right" else -1.0), axis))
        # the case stands on the strap and on any skin under its footprint (a flexed-back hand), not in it
        footprint = lambda rel: np.linalg.norm(rel - (rel @ dorsal)[:, None] * dorsal, axis=1) <= 0.5 * wish.case_diameter  # noqa: E731
        strap_rel, skin_rel = strap_v - centre, side.vertices - centre
        lift = max(float(np.max(strap_rel[footprint(strap_rel)] @ dorsal)),
                   float(np.max(skin_rel[footprint(skin_rel)] @ dorsal, initial=-np.inf)) + CLEARANCE)
        parts += watch_case(centre + lift * dorsal, dorsal, axis, wish.case_diameter, wish.case_height)
    names = tuple(dict.fromkeys(name for _, _, name in parts))
    verts, faces, face_parts = _join([(v, f, names.index(n)) for v, f, n in parts])
    return Piece(wish, "wrist", verts, faces, names, face_parts)


def _beads(wish: Wish, centre: np.ndarray, axis: np.ndarray, dirs: np.ndarray, radii: np.ndarray) -> Piece:
    """Beads touching each other around the band's line, ``wish.bead_radius`` out from it, on a thin cord."""
    path = dirs * (radii + wish.bead_radius)[:, None]
    seg = np.linalg.norm(np.roll(path, -1, 0) - path, axis=1)
    length = np.concatenate([[0.0], np.cumsum(seg)])
    count = max(int(length[-1] // (2.05 * wish.bead_radius)), 3)
    parts = [(*band(centre, axis, dirs, radii + wish.bead_radius - 0.5 * wish.thickness, wish.width, wish.thickness, 2.0), 0)]
    for s in np.arange(count) * length[-1] / count:
        k = min(int(np.searchsorted(length, s, side="right")) - 1, len(path) - 1)
        f = (s - length[k]) / seg[k]
        parts.append((*sphere(centre + path[k] * (1 - f) + np.roll(path, -1, 0)[k] * f, wish.bead_radius), 1))
    verts, faces, face_parts = _join(parts)
    return Piece(wish, "wrist", verts, faces, ("band", "beads"), face_parts)


def _ring(wish: Wish, side: SideSurface, finger: str) -> Piece | str:
    """A round ring on ``finger``'s proximal phalanx (see the module doc)."""
    mcp = FINGER_MCP[finger]
    base, tip = side.keypoints[mcp], side.keypoints[mcp + 1]
    axis = _unit(tip - base)
    seat = base + RING_POSITION * (tip - base)
    n_hand = len(side.hand_face_parts)
    faces = side.faces[:n_hand][side.hand_face_parts == mcp]
    along = (side.vertices[faces] - seat) @ axis                                        # (F, 3)
    # every phalanx triangle reaching into the band's width: the surface there lies within their corners
    under = np.unique(faces[(along.min(axis=1) <= 0.5 * wish.width) & (along.max(axis=1) >= -0.5 * wish.width)])
    if len(under) < 8:
        return f"no {finger} phalanx skin at the ring's seat"
    flat = _in_plane(side.vertices[under] - seat, axis)
    centre = seat + flat.mean(axis=0)
    u = _unit(np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0]))
    a = np.linspace(0.0, 2 * np.pi, RING_SEGMENTS, endpoint=False)
    dirs = np.cos(a)[:, None] * u + np.sin(a)[:, None] * np.cross(axis, u)
    radii = np.max((flat - flat.mean(axis=0)) @ dirs.T, axis=0) + RING_CLEARANCE
    verts, faces = band(centre, axis, dirs, radii, wish.width, wish.thickness, 2.5)
    return Piece(wish, finger, verts, faces, ("band",), np.zeros(len(faces), np.int64))


@dataclass(frozen=True)
class Obstacle:
    """A mesh a piece must not cross, with its triangles' bounding boxes (worked out once per pose)."""

    vertices: np.ndarray
    faces: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def of(cls, vertices: np.ndarray, faces: np.ndarray) -> "Obstacle":
        tri = vertices[faces]
        return cls(vertices, faces, tri.min(axis=1), tri.max(axis=1))


def crossings(piece: Piece, obstacles: list[Obstacle]) -> int:
    """Triangle pairs where ``piece`` crosses any of ``obstacles`` (only their triangles whose boxes
    meet the piece's box are tested: a ring meets a few dozen of a hand's thousands)."""
    lo, hi = piece.vertices.min(axis=0), piece.vertices.max(axis=0)
    count = 0
    for o in obstacles:
        near = ((o.hi >= lo) & (o.lo <= hi)).all(axis=1)
        if near.any():
            count += intersecting_triangle_pairs(piece.vertices, piece.faces, o.vertices, o.faces[near])
    return count


def dress(wishes: list[Wish], sides: dict[str, SideSurface]) -> Dressing:
    """Fit each wish (in order) and keep it when it crosses no surface of the pose nor a piece kept
    before it; a ring tries its fingers in order."""
    kept: list[Piece] = []
    left_off = []
    surfaces = [Obstacle.of(s.vertices, s.faces) for s in sides.values()]
    for wish in wishes:
        obstacles = surfaces + [Obstacle.of(p.vertices, p.faces) for p in kept]
        candidates = wish.fingers if wish.kind == "ring" else ("wrist",)
        why = ""
        for where in candidates:
            fitted = _ring(wish, sides[wish.side], where) if wish.kind == "ring" else _wrist_piece(wish, sides[wish.side])
            if isinstance(fitted, str):
                why = fitted
                continue
            if crossings(fitted, obstacles) == 0:
                kept.append(fitted)
                break
            why = "crosses the hands or arms"
        else:
            left_off.append((wish.kind, wish.side, why))
    return Dressing(tuple(kept), tuple(left_off))
