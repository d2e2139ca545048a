"""The two forearms of a pose: elbow directions drawn per pose, clear of the other hand and arm.

A hand's ``global_orient`` already decides where its forearm can go: only the wrist's flexion and
deviation are free, within the wrist's range of motion (:mod:`handsynth.hand_model.forearm`). So
whether the two arms belong to one person or to two is what the pose's hand orientations imply;
what is drawn here is each wrist's bend, from a spread around neutral (photographed wrists are
mostly near straight: sigma 25 degrees of flexion, 10 of deviation, clipped to the range).

A draw is kept when neither forearm passes through the other side's hand or forearm beyond the
wrist (no crossing triangle pairs, :func:`crossings`). Otherwise the wrists are drawn again, at
most :data:`MAX_ATTEMPTS` times, and the draw with the fewest crossings is used and its count
recorded, so the asset check can name it. Crossings within the wrist blend (the forearm's first
:data:`fa.BLEND_LENGTH`, which follows the hand's own wrist loop whatever the elbow) are counted
apart: there the other hand touches or grips this wrist, which the pose decides (as it decides the
hands' contact; RenderIH's validity rule keeps a pose with up to 75 crossing pairs between its
hands), and no draw changes them much (measured on 40 procedural poses: 5 had 9-79 such pairs
whatever the draw; all 40 reached 0 crossings beyond the wrist, within 4 draws, 1.2 on average).
Every draw derives from ``seed_for("elbow", seed, pose_id, attempt)``: the same pose gets the same
forearms wherever it is rendered.

Sleeves: a share of the poses (``ArmOptions.sleeve_share``, drawn from ``seed_for("sleeve", seed,
pose_id)``) wear one garment on both arms, its cuff :data:`SLEEVE_STARTS` from each wrist loop (a
ring the forearm has anyway, so the mesh keeps its topology) and its fabric drawn from
``seed_for("cloth", seed, pose_id)`` (:mod:`handsynth.render.cloth`); the sleeve's faces are
labelled 35 (right) / 36 (left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from handsynth.hand_model import forearm as fa
from handsynth.hand_model.model import HandModel
from handsynth.penetration import intersecting_triangle_pairs
from handsynth.seeds import seed_for

SIDES = ("right", "left")
#: Draws of the two wrists before the best one is taken.
MAX_ATTEMPTS = 12
#: Spread of the drawn wrist angles around neutral (degrees): flexion, deviation.
WRIST_SIGMA_DEG = (25.0, 10.0)
#: Where a sleeve's cuff may sit, from the wrist loop (m): rings of every forearm
#: (:data:`fa.RING_STATIONS`), from just past the wrist to mid-forearm.
SLEEVE_STARTS = (0.06, 0.08, 0.10, 0.12)


@dataclass(frozen=True)
class ArmOptions:
    """Whether hands continue into forearms (off: RenderIH's own look, hands ending at the wrist),
    the share of poses whose forearms wear sleeves and the share of hands wearing each of a wrist
    piece and a ring (:mod:`handsynth.accessories`; both need forearms)."""

    forearms: bool = True
    sleeve_share: float = 0.0
    accessory_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sleeve_share", "accessory_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Sleeves:
    """A pose's garment: each side's cuff distance from the wrist loop (m) and the fabric's seed."""

    starts: dict[str, float]
    cloth_seed: int


def draw_sleeves(options: ArmOptions, seed: int, pose_id: str) -> Sleeves | None:
    """Whether the pose wears sleeves (at ``options.sleeve_share``), and where their cuffs sit."""
    rng = np.random.default_rng(seed_for("sleeve", seed, pose_id))
    if not rng.random() < options.sleeve_share:
        return None
    return Sleeves({s: float(SLEEVE_STARTS[int(rng.integers(len(SLEEVE_STARTS)))]) for s in SIDES},
                   seed_for("cloth", seed, pose_id))


@dataclass(frozen=True)
class ArmChoice:
    """What was drawn for one pose: per side the elbow direction (unit, the hand's root frame) and
    the wrist angles (flexion, deviation in degrees) it implies; the draws it took and the
    crossings of the draw used."""

    elbows: dict[str, np.ndarray]
    wrist_angles: dict[str, np.ndarray]
    attempts: int
    crossings: "Crossings"
    sleeves: Sleeves | None = None

    def record(self) -> dict[str, object]:
        """JSON-ready columns of a manifest row."""
        out: dict[str, object] = {"arm_attempts": self.attempts, "arm_crossings": self.crossings.arm,
                                  "wrist_crossings": self.crossings.wrist}
        for s in SIDES:
            out[f"elbow_{s}"] = [float(x) for x in self.elbows[s]]
            out[f"wrist_angles_{s}"] = [float(x) for x in self.wrist_angles[s]]
        out["sleeve_start_m"] = [] if self.sleeves is None else [self.sleeves.starts[s] for s in SIDES]
        return out


@dataclass(frozen=True)
class PosedHand:
    """One posed hand of a single pose, as :func:`fa.attach_forearm` takes it (batch of one)."""

    vertices: torch.Tensor        # (1, 778, 3)
    global_orient: torch.Tensor   # (1, 3)
    betas: torch.Tensor           # (1, 10)
    transl: torch.Tensor          # (1, 3)


def posed_hand(vertices: torch.Tensor, params: dict[str, np.ndarray]) -> PosedHand:
    """``vertices`` of ``model.forward`` for the one-row parameter block ``params`` (PoseTable.hand)."""
    as_t = lambda k: torch.as_tensor(np.asarray(params[k], dtype=np.float32))  # noqa: E731
    return PosedHand(vertices, as_t("global_orient"), as_t("betas"), as_t("transl"))


def draw_wrist_angles(rng: np.random.Generator) -> np.ndarray:
    """(flexion, deviation) in degrees, around neutral and inside the wrist's range."""
    flexion = np.clip(rng.normal(0.0, WRIST_SIGMA_DEG[0]), *fa.FLEXION_RANGE_DEG)
    deviation = np.clip(rng.normal(0.0, WRIST_SIGMA_DEG[1]), *fa.DEVIATION_RANGE_DEG)
    return np.array([flexion, deviation])


def attach_both(model: HandModel, hands: dict[str, PosedHand], elbows: dict[str, np.ndarray],
                sleeves: Sleeves | None = None) -> dict[str, fa.Forearm]:
    return {s: fa.attach_forearm(model, s, hands[s].vertices, hands[s].global_orient, hands[s].betas, hands[s].transl,
                                 elbows[s], sleeve_start=None if sleeves is None else sleeves.starts[s]) for s in SIDES}


@dataclass(frozen=True, order=True)
class Crossings:
    """Triangle pairs where a forearm crosses the other side's hand or forearm: ``arm`` with a
    forearm face beyond the wrist blend (the elbow draw decides them), ``wrist`` between the other
    side and a forearm's wrist blend alone (the pose decides them). Ordered: fewer arm crossings first."""

    arm: int
    wrist: int


def _blend_faces(forearm: fa.Forearm) -> np.ndarray:
    """Which faces of a forearm lie within the wrist blend (between rings at most BLEND_LENGTH out)."""
    rings_in_blend = int(np.searchsorted(fa.RING_STATIONS, fa.BLEND_LENGTH, side="right"))
    return forearm.faces.max(axis=1) < rings_in_blend * len(forearm.hand_loop)


def crossings(model: HandModel, hands: dict[str, PosedHand], forearms: dict[str, fa.Forearm]) -> Crossings:
    """The forearms' crossings with the other side (each pair once; see :class:`Crossings`).

    Each forearm meets its own hand only along the wrist loop it starts on, so only the other
    side is tested: right forearm x left hand, left forearm x right hand, right x left forearm."""
    count = intersecting_triangle_pairs
    verts = {s: forearms[s].vertices[0].detach().double().numpy() for s in SIDES}
    hand = {s: hands[s].vertices[0].detach().double().numpy() for s in SIDES}
    blend = {s: _blend_faces(forearms[s]) for s in SIDES}
    part = {(s, inner): forearms[s].faces[blend[s] == inner] for s in SIDES for inner in (True, False)}
    wrist = count(verts["right"], part["right", True], verts["left"], part["left", True])
    arm = (count(verts["right"], part["right", False], verts["left"], forearms["left"].faces)
           + count(verts["right"], part["right", True], verts["left"], part["left", False]))
    for s, other in (("right", "left"), ("left", "right")):
        wrist += count(verts[s], part[s, True], hand[other], model.open_faces(other))
        arm += count(verts[s], part[s, False], hand[other], model.open_faces(other))
    return Crossings(arm, wrist)


def choose_arms(model: HandModel, hands: dict[str, PosedHand], seed: int, pose_id: str,
                sleeves: Sleeves | None = None) -> tuple[ArmChoice, dict[str, fa.Forearm]]:
    """The pose's elbow directions and forearms, wearing ``sleeves`` if given (see the module doc)."""
    best: tuple[Crossings, dict[str, np.ndarray], dict[str, fa.Forearm]] | None = None
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng(seed_for("elbow", seed, pose_id, attempt))
        angles = {s: draw_wrist_angles(rng) for s in SIDES}
        elbows = {s: fa.elbow_direction(model, s, *angles[s]) for s in SIDES}
        forearms = attach_both(model, hands, elbows, sleeves)
        found = crossings(model, hands, forearms)
        if best is None or found < best[0]:
            best = (found, elbows, forearms)
        if found.arm == 0:
            break
    found, elbows, forearms = best
    angles = {s: fa.wrist_angles(model, s, elbows[s]) for s in SIDES}
    return ArmChoice(elbows, angles, attempt + 1, found, sleeves), forearms
