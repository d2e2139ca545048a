"""RenderIH's pose optimization: make augmented two-hand poses valid, natural and in contact.

Per pose, over both hands' finger rotations (``hand_pose``) and translations (root rotations and
shapes stay fixed), minimise

    w1 * L_A (attraction) + w2 * La (anatomy) + w3 * Ladv (naturalness) + w4 * Lp (penetration)
    + w5 * Lc (finger coupling) + a small pull toward the starting pose

with Adam (lr 1e-2 for rotations, 1e-4 for translations) and a plateau schedule (factor 0.5,
patience 20, min lr 1e-5), anchor pairs rebuilt every 40 iterations. Lc is a hinge on
|DIP - 2/3 PIP| beyond a tolerance (:func:`handsynth.synergies.coupling_loss`): the discriminator
alone does not keep the distal joints coupled. Every pose has its own Adam state and its own
learning rates, and its plateau schedule watches its own loss (:class:`PerPoseAdam`): no loss
term couples two poses. Every batched evaluation is padded to :data:`MIN_BATCH_ROWS` poses, so
that each pose's float32 products take the same kernels in any batch (on CPU its whole result,
final stage included, was measured bit-identical alone, among a few and inside a batch of 64):
a pose ends where it would alone, whatever its batch-mates or the batch size. Schedule ``renderih``:
penetration weight high and attraction low at first, so the hands separate before they are drawn
together, moving linearly until iteration 165 (of 215), then holding. Schedule ``reference``:
the reference implementation's 4 stages of 50/40/75/50 iterations.

Units: L_A and Lp in cm^2, La in rad^2, Ladv in nats. Finally each pose is projected onto the
joint limits (angles clamped in the anatomical frames), so anatomy never decides a drop on its
own. The projection moves fingers and can push them back into the other hand, so a
penetration-only pass follows that stays within the limits (projected Polyak steps over the
fingers' anatomical angles and the left hand's translation, :func:`_untangle`), then a
minimal-motion rigid separation of the left hand for what is left (a rigid shift keeps every
joint angle, hence the limits). The untangle can also end a pose deeper than the rigid shift
alone from the projected state would, so each pose keeps the shallower of the two by the exact
whole-surface depth, the smaller motion at a tie (:func:`_final_stage`); only then does the
filter decide: see :func:`filter_valid`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from handsynth import anchors as anchor_ops
from handsynth import joint_limits, penetration, synergies
from handsynth.anchors import Anchors
from handsynth.discriminator import PoseDiscriminator, naturalness_loss
from handsynth.hand_model.model import HandModel, ShapedHands
from handsynth.joint_limits import AnatomicalFrames
from handsynth.penetration import CandidateCache, PenetrationField, ShapeTerms, penetration_loss, penetration_stats
from handsynth.pose_table import PoseTable

SIDES = ("right", "left")
REFERENCE_STAGES = (50, 40, 75, 50)
REFERENCE_ATTRACTION = (10.0, 150.0, 1.0, 50.0)      # 10 x (1, 15, 0.1, 5)
REFERENCE_PENETRATION = (0.064, 0.0064, 1.92, 0.064)  # 0.064 x (1, 0.1, 30, 1)

#: Keep/drop defaults. Deepest vertex at most 1 mm inside the other hand's whole surface and at
#: most 10 vertices deeper than 0.5 mm: skin compresses a little in real contact; the final
#: separation pass brings almost every pose well below these bounds.
MAX_VIOLATION_DEG = 0.1
MAX_DEPTH_MM = 1.0
MAX_PENETRATING_VERTICES = 10

#: Every batched evaluation runs on at least this many poses: a smaller batch (a batch of one, the
#: untangle's last live poses) is padded with copies of its last pose, whose results are dropped.
#: Matrix products whose rows are poses then take the same kernel for every pose: measured with
#: MKL on this CPU, a row of a float32 product is bit-identical for every row count from 4 up and
#: at every position, while 1 to 3 rows take other kernels (matrix-vector) with other round-off
#: (~1e-8 m in the vertices), which the untangle's Polyak steps amplified to 7 mm. 8 leaves room
#: for other CPUs' kernels (unmeasured, as are GPUs').
MIN_BATCH_ROWS = 8


@dataclass
class OptimizeConfig:
    iterations: int = 215
    schedule: str = "renderih"
    batch_size: int = 64
    lr_pose: float = 1e-2
    lr_transl: float = 1e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 20
    min_lr: float = 1e-5
    pair_every: int = 40
    #: penetration candidates are kept until a vertex moved half this far (mm); 0 rebuilds them
    #: every iteration (the benchmark's baseline), with identical depths
    candidate_slack_mm: float = 4.0
    #: in the loop, depths are exact up to this (mm), deeper ones may read deeper (see
    #: :class:`CandidateCache`); the statistics and the filter measure with the full margin
    candidate_margin_mm: float = 4.0
    #: pairs are only built for poses whose hands overlap less than this (separate first)
    pair_max_depth_mm: float = 5.0
    w_anatomy: float = 20.0
    w_adversarial: float = 0.05
    w_stay: float = 1e-2
    #: finger coupling: hinge on |DIP - 2/3 PIP| beyond the tolerance (rad^2), see synergies
    w_coupling: float = 20.0
    coupling_tolerance_deg: float = 5.0
    #: renderih schedule: (start, end) weights, moving until `ramp_end` x iterations / 215
    attraction: tuple[float, float] = (0.1, 2.0)
    penetration: tuple[float, float] = (20.0, 5.0)
    ramp_end: int = 165
    #: after the projection onto the limits: a penetration-only pass over the fingers' angles
    #: (within the limits) and the left hand's translation (see :func:`_untangle`)
    untangle_iterations: int = 80
    untangle_relax: float = 1.0
    untangle_transl_unit: float = 0.05
    #: bisection steps bringing a freed hand back along its path (see :func:`_return_along_path`)
    untangle_return_steps: int = 8
    #: then minimal-motion shifts of the left hand against what is left
    separation_iterations: int = 40
    separation_margin_mm: float = 0.1
    #: the final choice per pose between (untangle, then shift) and (shift alone): exact depths
    #: closer than this count as equal, and then the smaller motion wins (see :func:`_final_stage`)
    choice_depth_tolerance_mm: float = 0.1


def weights_at(iteration: int, config: OptimizeConfig) -> dict[str, float]:
    """Loss weights at an iteration (pure function of the schedule)."""
    scale = config.iterations / 215.0
    if config.schedule == "reference":
        bounds = np.cumsum([round(s * scale) for s in REFERENCE_STAGES])
        stage = int(min(np.searchsorted(bounds, iteration, side="right"), len(bounds) - 1))
        w1, w4 = REFERENCE_ATTRACTION[stage], REFERENCE_PENETRATION[stage]
    elif config.schedule == "renderih":
        t = min(iteration / max(config.ramp_end * scale, 1.0), 1.0)
        w1 = config.attraction[0] + (config.attraction[1] - config.attraction[0]) * t
        w4 = config.penetration[0] + (config.penetration[1] - config.penetration[0]) * t
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}; use 'renderih' or 'reference'")
    return {"attraction": w1, "anatomy": config.w_anatomy, "adversarial": config.w_adversarial, "penetration": w4,
            "coupling": config.w_coupling}


@dataclass
class OptimizeResult:
    poses: PoseTable                     # optimized, one row per input pose
    stats: pd.DataFrame                  # per pose: before / after values of every term
    curves: dict[str, list[float]] = field(default_factory=dict)   # mean per iteration
    seconds: dict[str, float] = field(default_factory=dict)        # wall time per stage, all batches


@dataclass
class BatchShapes:
    """What the fixed shapes (betas) of a batch determine, computed once per batch: the model's
    shaped rest hands and the penetration field's part maps, per side."""

    hands: dict[str, ShapedHands]
    parts: dict[str, ShapeTerms]

    @classmethod
    def of(cls, model: HandModel, field: PenetrationField, hands) -> "BatchShapes":
        return cls({s: model.shaped(s, hands[s]["betas"]) for s in SIDES},
                   {s: field.shape_terms(s, hands[s]["betas"]) for s in SIDES})

    def take(self, idx: torch.Tensor) -> "BatchShapes":
        return BatchShapes({s: ShapedHands(h.v_shaped[idx], h.rest_joints[idx]) for s, h in self.hands.items()},
                           {s: ShapeTerms(t.a_inv[idx], t.c[idx], t.scale[idx]) for s, t in self.parts.items()})


class _Objective:
    """Everything needed to evaluate the loss terms of a batch of poses."""

    def __init__(self, model: HandModel, anchors: Anchors, discriminator: PoseDiscriminator | None,
                 frames: AnatomicalFrames, field: PenetrationField, coupling_tolerance_deg: float = 5.0) -> None:
        self.model, self.anchors, self.disc, self.field = model, anchors, discriminator, field
        self.coupling_tolerance_deg = coupling_tolerance_deg
        self.frames = frames.to(model.device)
        self.faces = {s: torch.as_tensor(model.faces(s), device=model.device) for s in SIDES}

    def angles(self, side: str, hand_pose: torch.Tensor) -> torch.Tensor:
        full = self.model.full_finger_pose(side, hand_pose)
        if side == "left":
            full = joint_limits.mirror_pose(full)
        return joint_limits.joint_angles(full, self.frames)

    def vertices_and_depths(self, hands, shapes: BatchShapes | None,
                            cache: CandidateCache | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Posed vertices (B, 778, 3) and penetration depths (B, 778) per side. With the batch's
        shapes, one pass gives both the vertices and the joint transforms the depths need."""
        if shapes is None:
            verts = {s: self.model.forward(s, **hands[s]).vertices for s in SIDES}
            return verts, self.field.depths(hands, verts, None, cache)
        posed = {s: self.model.posed(s, shapes.hands[s], hands[s]["global_orient"], hands[s]["hand_pose"],
                                     hands[s]["transl"]) for s in SIDES}
        verts = {s: v for s, (v, _) in posed.items()}
        return verts, self.field.depths(hands, verts, shapes.parts, cache, transforms={s: r for s, (_, r) in posed.items()})

    def terms(self, hands: dict[str, dict[str, torch.Tensor]], pairs, shapes: BatchShapes | None = None,
              cache: CandidateCache | None = None) -> tuple[dict[str, torch.Tensor], dict]:
        verts, depths = self.vertices_and_depths(hands, shapes, cache)
        anchor = {s: self.anchors.points(s, verts[s], self.faces[s]) for s in SIDES}
        angles = {s: self.angles(s, hands[s]["hand_pose"]) for s in SIDES}
        anatomy = sum(joint_limits.limit_loss_from_angles(a) for a in angles.values())
        adversarial = (sum(naturalness_loss(self.disc, a.reshape(-1, 45)) for a in angles.values())
                       if self.disc is not None else torch.zeros_like(anatomy))
        coupling = sum(synergies.coupling_loss(a, self.coupling_tolerance_deg) for a in angles.values())
        terms = {"penetration": penetration_loss(depths), "anatomy": anatomy, "adversarial": adversarial,
                 "coupling": coupling}
        if pairs is not None:
            terms["attraction"] = anchor_ops.attraction_loss(anchor["left"][0], anchor["right"][0], *pairs)
        extras = {"depths": depths, "anchor": anchor, "angles": angles}
        return terms, extras


def _batch_hands(table: PoseTable, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """The batch's parameters as tensors of their own (the optimizer updates them in place)."""
    return {s: {k: torch.as_tensor(v, device=device).clone() for k, v in table.hand(s).items()} for s in SIDES}


def _evaluate(obj: _Objective, hands, pairs=None, shapes=None) -> dict[str, np.ndarray]:
    with torch.no_grad():
        terms, extras = obj.terms(hands, pairs, shapes)
        out = {k: v.cpu().numpy() for k, v in terms.items()}
        out.update(penetration_stats(extras["depths"]))
        viol = [joint_limits.limit_violation(a).amax(dim=(1, 2)) for a in extras["angles"].values()]
        out["max_violation_deg"] = torch.maximum(*viol).cpu().numpy()
        (pl, nl), (pr, nr) = extras["anchor"]["left"], extras["anchor"]["right"]
        out["closest_anchor_pair_mm"] = anchor_ops.closest_pair_mm(pl, nl, pr, nr).cpu().numpy()
    return out


def _deepest(depths: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) depth of each pose's deepest vertex of either hand inside the other (m)."""
    return torch.maximum(depths["right"].amax(1), depths["left"].amax(1))


def _pose_from_angles(obj: _Objective, side: str, angles: torch.Tensor) -> torch.Tensor:
    """MANO hand_pose (B, 45) of anatomical angles (B, 15, 3): the inverse of ``obj.angles``."""
    full = joint_limits.compose_pose(angles, obj.frames).reshape(-1, 45)
    if side == "left":
        full = joint_limits.mirror_pose(full)
    return full - obj.model.hands_mean(side)


def _padded(idx: torch.Tensor) -> torch.Tensor:
    """``idx`` with its last entry repeated up to :data:`MIN_BATCH_ROWS` entries (see there); its
    first ``len(idx)`` entries are ``idx`` itself, so results are cut back with ``[:len(idx)]``."""
    if len(idx) == 0 or len(idx) >= MIN_BATCH_ROWS:
        return idx
    return torch.cat([idx, idx[-1:].expand(MIN_BATCH_ROWS - len(idx))])


def _project(obj: _Objective, hands) -> dict[str, torch.Tensor]:
    """Project both hands onto the joint limits (in place: angles clamped in the anatomical frames);
    returns the projected angles (B, 15, 3) per side, where :func:`_untangle` starts."""
    with torch.no_grad():
        angles = {s: joint_limits.project_angles(obj.angles(s, hands[s]["hand_pose"].detach())) for s in SIDES}
        for s in SIDES:
            hands[s]["hand_pose"] = _pose_from_angles(obj, s, angles[s])
            hands[s]["transl"] = hands[s]["transl"].detach()
    return angles


def _untangle(obj: _Objective, hands, shapes: BatchShapes | None, angles: dict[str, torch.Tensor],
              config: OptimizeConfig) -> torch.Tensor:
    """A penetration-only pass over projected poses (``angles``: see :func:`_project`) that stays
    on the joint limits (in place); returns the indices of the poses it took part in.

    Variables: both hands' anatomical angles, box-constrained (clamped to the limits, and no
    gradient component through an active bound: projected gradient), and the left hand's
    translation, in units of ``untangle_transl_unit`` so that moving a finger and moving the hand
    weigh alike. Steps are Polyak's, ``relax * Lp / |grad Lp|^2``, which need no learning rate.
    Lp has many local minima (a finger pushed out of one gap lands in its neighbour; monotone
    descent stalls in them), so the steps are not made monotone: each pose keeps the shallowest
    state it visited, and a freed pose stops there. Only poses that penetrate after the projection
    take part; a freed hand is then brought back along its path (:func:`_return_along_path`).
    The live poses are evaluated padded to :data:`MIN_BATCH_ROWS`: these discontinuous steps turn
    any round-off that depends on how many poses are live into different paths.
    """
    lim = torch.deg2rad(torch.as_tensor(joint_limits.JOINT_LIMITS, dtype=torch.float32, device=obj.model.device))
    lo, hi = lim[..., 0], lim[..., 1]
    unit = config.untangle_transl_unit
    idx = _penetrating(obj, hands, shapes)
    if len(idx) == 0 or config.untangle_iterations == 0:
        return idx[:0]
    ang = {s: angles[s][idx] for s in SIDES}
    transl = hands["left"]["transl"][idx]
    best = {s: ang[s].clone() for s in SIDES} | {"transl": transl.clone()}
    best_depth = torch.full((len(idx),), torch.inf, device=transl.device)
    live = torch.arange(len(idx), device=transl.device)     # poses not yet free
    for it in range(config.untangle_iterations + 1):
        rows, n = _padded(live), len(live)
        sub, sub_shapes = _take(hands, shapes, idx[rows])
        a = [ang[s][rows].requires_grad_(True) for s in SIDES]
        t = transl[rows].requires_grad_(True)
        for s, x in zip(SIDES, a):
            sub[s]["hand_pose"] = _pose_from_angles(obj, s, x)
        sub["left"]["transl"] = t
        _, depths = obj.vertices_and_depths(sub, sub_shapes)
        deepest = _deepest(depths).detach()[:n]
        better = deepest < best_depth[live]
        won = live[better]
        best_depth[won] = deepest[better]
        for k, s in enumerate(SIDES):
            best[s][won] = a[k].detach()[:n][better]
        best["transl"][won] = t.detach()[:n][better]
        active = deepest > 0
        if it == config.untangle_iterations or not bool(active.any()):
            break
        loss = penetration_loss(depths)
        grads = list(torch.autograd.grad(loss.sum(), a + [t]))
        for k in range(2):
            blocked = ((a[k] <= lo + 1e-6) & (grads[k] > 0)) | ((a[k] >= hi - 1e-6) & (grads[k] < 0))
            grads[k] = torch.where(blocked, torch.zeros_like(grads[k]), grads[k])
        g_t = grads[2] * unit
        sq = grads[0].pow(2).sum((1, 2)) + grads[1].pow(2).sum((1, 2)) + g_t.pow(2).sum(1)
        step = config.untangle_relax * loss.detach() / sq.clamp_min(1e-20)
        with torch.no_grad():
            for k, s in enumerate(SIDES):
                ang[s][live] = (a[k] - step[:, None, None] * grads[k]).clamp(lo, hi)[:n]
            transl[live] = (t - step[:, None] * g_t * unit)[:n]
        live = live[active]
    with torch.no_grad():
        for s in SIDES:
            hands[s]["hand_pose"] = hands[s]["hand_pose"].index_put((idx,), _pose_from_angles(obj, s, best[s]))
        freed = (best_depth == 0).nonzero()[:, 0]
        if len(freed):
            best["transl"][freed] = _return_along_path(obj, hands, shapes, idx[freed], best["transl"][freed], config)
        hands["left"]["transl"] = hands["left"]["transl"].index_put((idx,), best["transl"])
    return idx


def _return_along_path(obj: _Objective, hands, shapes: BatchShapes | None, idx: torch.Tensor,
                       freed: torch.Tensor, config: OptimizeConfig) -> torch.Tensor:
    """Left-hand translations (K, 3) of the poses ``idx`` brought back from where the untangle
    freed them (``freed``) toward where they started (``hands``), as far as they stay free.

    Polyak's steps are large where the gradients nearly cancel and can carry a hand centimetres
    away, out of contact; with the untangled fingers, a bisection on the segment between the two
    translations (no gradients) finds a free point within 1/2^steps of the shortest return.
    """
    rows = _padded(torch.arange(len(idx), device=idx.device))
    sub, sub_shapes = _take(hands, shapes, idx[rows])
    start, freed = sub["left"]["transl"], freed[rows]
    near, far = torch.zeros(len(rows), device=start.device), torch.ones(len(rows), device=start.device)
    for _ in range(config.untangle_return_steps):
        mid = (near + far) / 2
        sub["left"]["transl"] = start + mid[:, None] * (freed - start)
        _, depths = obj.vertices_and_depths(sub, sub_shapes)
        free = _deepest(depths) == 0
        far, near = torch.where(free, mid, far), torch.where(free, near, mid)
    return (start + far[:, None] * (freed - start))[: len(idx)]


def _take(hands, shapes: BatchShapes | None, idx: torch.Tensor):
    """The poses ``idx`` of a batch: their hand tensors and shape terms."""
    return {s: {k: v[idx] for k, v in hands[s].items()} for s in SIDES}, (shapes.take(idx) if shapes else None)


def _penetrating(obj: _Objective, hands, shapes) -> torch.Tensor:
    """Indices of the poses with any vertex inside the other hand (grid depth > 0)."""
    with torch.no_grad():
        _, depths = obj.vertices_and_depths(hands, shapes)
        return (_deepest(depths) > 0).nonzero()[:, 0]


def _separate(obj: _Objective, hands, shapes, config: OptimizeConfig) -> None:
    """Minimal-motion rigid separation (in place) of what is left inside the other hand.

    A rigid shift of the left hand keeps every joint angle, hence the limits. Per step, each pose
    still penetrating moves along its penetration gradient by its deepest depth plus a small margin
    (plain steps, not Adam, which overshoots and pulls hands out of contact); a free pose stays.
    Only the penetrating poses are evaluated (padded to :data:`MIN_BATCH_ROWS`).
    """
    idx = _penetrating(obj, hands, shapes)
    if len(idx) == 0:
        return
    sub, sub_shapes = _take(hands, shapes, _padded(idx))
    left = sub["left"]
    for _ in range(config.separation_iterations):
        left["transl"] = left["transl"].detach().requires_grad_(True)
        _, depths = obj.vertices_and_depths(sub, sub_shapes)
        deepest = _deepest(depths).detach()
        if not bool((deepest > 0).any()):
            break
        (grad,) = torch.autograd.grad(penetration_loss(depths).sum(), left["transl"])
        direction = -grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        step = torch.where(deepest > 0, deepest + config.separation_margin_mm / 1000.0, torch.zeros_like(deepest))
        left["transl"] = left["transl"].detach() + direction * step[:, None]
    hands["left"]["transl"] = hands["left"]["transl"].detach().index_put((idx,), left["transl"].detach()[: len(idx)])


def _final_stage(obj: _Objective, hands, shapes: BatchShapes | None, config: OptimizeConfig,
                 seconds: dict[str, float] | None = None, poses: int | None = None) -> np.ndarray:
    """Projection onto the joint limits, then two ways out of the penetration it left, and per pose
    the better one (in place). Returns the exact whole-surface depth (mm) of each pose that had
    the choice, NaN for the others (the projection left them free by the grids).

    The untangle then the rigid shift frees poses a shift alone leaves deep, but it moves fingers
    into twists and splays where the grids read shallower than the whole surface, and can end a
    pose deeper than the shift alone does (measured: 1.15 against 0.49 mm). So the shift alone
    from the projected state is computed as well, and each pose keeps the shallower of the two by
    the keep filter's measures (the deeper of grid and exact whole-surface depth); depths within
    ``choice_depth_tolerance_mm`` count as equal, and then the smaller motion (mean vertex
    displacement from the projected state) wins. Only the first ``poses`` poses are judged (the
    others pad the batch: see :data:`MIN_BATCH_ROWS`).
    """
    seconds = {} if seconds is None else seconds
    started = time.perf_counter()
    angles = _project(obj, hands)
    projected = {s: dict(h) for s, h in hands.items()}
    shifted = {s: dict(h) for s, h in hands.items()}
    idx = _untangle(obj, hands, shapes, angles, config)
    started = _lap(seconds, "untangle", started)
    _separate(obj, hands, shapes, config)
    _separate(obj, shifted, shapes, config)
    started = _lap(seconds, "separation", started)
    exact = np.full(len(hands["left"]["transl"]), np.nan)
    idx = idx[idx < (len(exact) if poses is None else poses)]
    if len(idx):
        n, rows = len(idx), _padded(idx)
        verts, depth, exact_of = {}, {}, {}
        with torch.no_grad():
            for name, state in (("projected", projected), ("untangled", hands), ("shifted", shifted)):
                v, d = obj.vertices_and_depths(*_take(state, shapes, rows))
                verts[name] = {s: x[:n].double().cpu() for s, x in v.items()}
                if name != "projected":
                    exact_of[name] = np.array([max(float(e.max()) for e in penetration.exact_depths(
                        obj.model, {s: verts[name][s][i] for s in SIDES}).values()) for i in range(n)]) * 1000.0
                    depth[name] = np.maximum(_deepest(d)[:n].cpu().numpy() * 1000.0, exact_of[name])
        motion = {name: sum((verts[name][s] - verts["projected"][s]).norm(dim=-1).mean(dim=1) for s in SIDES).numpy()
                  for name in ("untangled", "shifted")}
        gap = depth["untangled"] - depth["shifted"]
        tie = np.abs(gap) <= config.choice_depth_tolerance_mm
        untangled = ((gap < 0) & ~tie) | (tie & (motion["untangled"] < motion["shifted"]))
        take = idx[torch.as_tensor(~untangled, device=idx.device)]
        with torch.no_grad():
            for s in SIDES:
                hands[s]["hand_pose"] = hands[s]["hand_pose"].index_put((take,), shifted[s]["hand_pose"][take])
            hands["left"]["transl"] = hands["left"]["transl"].index_put((take,), shifted["left"]["transl"][take])
        exact[idx.cpu().numpy()] = np.where(untangled, exact_of["untangled"], exact_of["shifted"])
    _lap(seconds, "choice", started)
    return exact


def optimize_batch(obj: _Objective, table: PoseTable, config: OptimizeConfig, curves: dict[str, list[float]],
                   log_fn: Callable[[str], None] | None = None,
                   seconds: dict[str, float] | None = None) -> tuple[PoseTable, pd.DataFrame]:
    """Optimize one batch of poses (see the module docstring). The batch is padded to
    :data:`MIN_BATCH_ROWS` poses, so a pose ends where it would in any other batch."""
    device = obj.model.device
    n = len(table)
    hands = _batch_hands(table.take(_padded(torch.arange(n)).numpy()), device)
    start = {s: hands[s]["hand_pose"].clone() for s in SIDES}
    pose_vars = [hands[s]["hand_pose"].requires_grad_(True) for s in SIDES]
    transl_vars = [hands[s]["transl"].requires_grad_(True) for s in SIDES]
    opt = PerPoseAdam([(pose_vars, config.lr_pose), (transl_vars, config.lr_transl)], config)
    shapes = BatchShapes.of(obj.model, obj.field, hands)                        # betas stay fixed
    before = _evaluate(obj, hands, shapes=shapes)
    seconds = {} if seconds is None else seconds
    started = time.perf_counter()
    pairs = None
    cache = CandidateCache(config.candidate_slack_mm / 1000.0, config.candidate_margin_mm / 1000.0)
    for it in range(config.iterations):
        if it % config.pair_every == 0:
            with torch.no_grad():
                _, extras = obj.terms(hands, None, shapes)
                depth = _deepest(extras["depths"]) * 1000
                (pl, nl), (pr, nr) = extras["anchor"]["left"], extras["anchor"]["right"]
                pairs = anchor_ops.build_pairs(pl, nl, pr, nr, active=(depth < config.pair_max_depth_mm).float())
        w = weights_at(it, config)
        terms, _ = obj.terms(hands, pairs, shapes, cache)
        stay = sum(((hands[s]["hand_pose"] - start[s]) ** 2).sum(dim=1) for s in SIDES)
        total = sum(w[k] * v for k, v in terms.items()) + config.w_stay * stay
        grads = torch.autograd.grad(total.sum(), pose_vars + transl_vars)
        opt.step(grads, total.detach())
        for k, v in terms.items():
            curves.setdefault(k, []).append(float(v.detach()[:n].mean()))
        curves.setdefault("total", []).append(float(total.detach()[:n].mean()))
        if log_fn and (it % 50 == 0 or it == config.iterations - 1):
            log_fn(f"iteration {it}/{config.iterations}: total {total[:n].mean().item():.4f} "
                   + " ".join(f"{k} {v[:n].mean().item():.4f}" for k, v in terms.items()))
    _lap(seconds, "schedule", started)
    exact = _final_stage(obj, hands, shapes, config, seconds, poses=n)
    after = _evaluate(obj, hands, pairs, shapes)
    stats = pd.DataFrame({f"{k}_before": v[:n] for k, v in before.items()} | {f"{k}_after": v[:n] for k, v in after.items()}
                         | {"surface_depth_mm_after": exact[:n]})
    arrays = {f"{s}_{k}": hands[s][k].detach()[:n].cpu().numpy() for s in SIDES for k in ("hand_pose", "transl")}
    return table.with_arrays(**arrays), stats


class PerPoseAdam:
    """Adam with per-pose learning rates and a per-pose plateau schedule (in place on the tensors).

    The update is torch's Adam (betas 0.9 / 0.999, eps 1e-8, bias-corrected), which is elementwise;
    the learning rates are (B,) per parameter group, and each pose's rates drop by
    ``plateau_factor`` (not below ``min_lr``) when its own loss has not improved by a relative 1e-4
    for more than ``plateau_patience`` steps, as torch's ReduceLROnPlateau does for one loss. One
    schedule on the batch mean made a pose's trajectory depend on its batch-mates.
    """

    BETAS, EPS, THRESHOLD = (0.9, 0.999), 1e-8, 1e-4

    def __init__(self, groups: list[tuple[list[torch.Tensor], float]], config: OptimizeConfig) -> None:
        n = groups[0][0][0].shape[0]
        device = groups[0][0][0].device
        self.params = [p for ps, _ in groups for p in ps]
        self.lr = [torch.full((n,), lr, device=device) for ps, lr in groups for _ in ps]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.steps = 0
        self.best = torch.full((n,), torch.inf, device=device)
        self.bad = torch.zeros(n, dtype=torch.long, device=device)
        self.factor, self.patience, self.min_lr = config.plateau_factor, config.plateau_patience, config.min_lr

    def step(self, grads: tuple[torch.Tensor, ...], loss: torch.Tensor) -> None:
        """One Adam step with ``grads`` (one per parameter), then the schedule on the (B,) loss."""
        b1, b2 = self.BETAS
        self.steps += 1
        c1, c2 = 1 - b1 ** self.steps, (1 - b2 ** self.steps) ** 0.5
        with torch.no_grad():
            for p, g, m, v, lr in zip(self.params, grads, self.m, self.v, self.lr):
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                size = (lr / c1).reshape(-1, *([1] * (p.dim() - 1)))
                p.sub_(size * m / (v.sqrt() / c2 + self.EPS))
            better = loss < self.best * (1 - self.THRESHOLD)
            self.best = torch.where(better, loss, self.best)
            self.bad = torch.where(better, torch.zeros_like(self.bad), self.bad + 1)
            drop = self.bad > self.patience
            for k, lr in enumerate(self.lr):
                lower = (lr * self.factor).clamp_min(self.min_lr)
                self.lr[k] = torch.where(drop & (lr - lower > self.EPS), lower, lr)
            self.bad = torch.where(drop, torch.zeros_like(self.bad), self.bad)


def _lap(seconds: dict[str, float], stage: str, since: float) -> float:
    """Add the time since ``since`` to ``seconds[stage]``; return now."""
    now = time.perf_counter()
    seconds[stage] = seconds.get(stage, 0.0) + now - since
    return now


def optimize_poses(model: HandModel, poses: PoseTable, anchors: Anchors, discriminator: PoseDiscriminator | None,
                   field: PenetrationField, config: OptimizeConfig,
                   log_fn: Callable[[str], None] | None = None) -> OptimizeResult:
    """Optimize every pose of the table in batches of ``config.batch_size``."""
    frames = AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    obj = _Objective(model, anchors, discriminator, frames, field, config.coupling_tolerance_deg)
    curves: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    tables, stats = [], []
    for s in range(0, len(poses), config.batch_size):
        idx = np.arange(s, min(s + config.batch_size, len(poses)))
        if log_fn:
            log_fn(f"optimizing poses {idx[0]}..{idx[-1]} of {len(poses)}")
        batch_curves: dict[str, list[float]] = {}
        t, st = optimize_batch(obj, poses.take(idx), config, batch_curves, log_fn, seconds)
        tables.append(t)
        stats.append(st)
        for k, v in batch_curves.items():  # average the curves of all batches, weighted by size
            prev = curves.get(k)
            curves[k] = [x * len(idx) for x in v] if prev is None else [a + b * len(idx) for a, b in zip(prev, v)]
    curves = {k: [x / max(len(poses), 1) for x in v] for k, v in curves.items()}
    table = PoseTable.concat(tables) if tables else poses
    stats_df = pd.concat(stats, ignore_index=True) if stats else pd.DataFrame()
    if len(stats_df):
        started = time.perf_counter()
        stats_df["surface_depth_mm_after"] = surface_depths_of_candidates(model, table, stats_df)
        _lap(seconds, "exact_check", started)
    return OptimizeResult(table, stats_df, curves, {k: round(v, 3) for k, v in seconds.items()})


def surface_depths_of_candidates(model: HandModel, table: PoseTable, stats: pd.DataFrame) -> np.ndarray:
    """Whole-surface depth (mm) of every pose the grid-based filter would keep (NaN for the others).
    The grids agree with the whole surface to ~2 mm at p99, so a pose the grids call 0.9 mm deep
    can be 1.1 mm deep: the final decision is taken on the exact surface, as the audit's is. Depths
    already in ``stats["surface_depth_mm_after"]`` (the final stage's choice measured them) are kept."""
    grid_keep, _ = filter_valid(stats.drop(columns=["surface_depth_mm_after"], errors="ignore"))
    known = stats.get("surface_depth_mm_after", pd.Series(np.nan, index=stats.index)).to_numpy(dtype=float)
    depths = np.where(grid_keep, known, np.nan)
    todo = np.flatnonzero(grid_keep & np.isnan(known))
    if len(todo):
        cand = table.take(_padded(torch.as_tensor(todo)).numpy())           # padded: see MIN_BATCH_ROWS
        verts = {s: model.forward_numpy(s, cand.hand(s)).vertices.double().cpu() for s in SIDES}
        depths[todo] = [max(float(d.max()) for d in penetration.exact_depths(model, {s: verts[s][i] for s in SIDES}).values())
                        * 1000.0 for i in range(len(todo))]
    return depths


def filter_valid(stats: pd.DataFrame, max_violation_deg: float = MAX_VIOLATION_DEG, max_depth_mm: float = MAX_DEPTH_MM,
                 max_penetrating_vertices: int = MAX_PENETRATING_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """Keep mask and a reason per pose: '' (kept), 'joint_limits', 'penetration' or both."""
    limits = stats["max_violation_deg_after"].to_numpy() > max_violation_deg
    pen = ((stats["max_depth_mm_after"].to_numpy() > max_depth_mm)
           | (stats["penetrating_vertices_after"].to_numpy() > max_penetrating_vertices))
    if "surface_depth_mm_after" in stats:   # the exact whole-surface depth decides where it was measured
        pen |= stats["surface_depth_mm_after"].fillna(0.0).to_numpy() > max_depth_mm
    reason = np.where(limits & pen, "joint_limits+penetration", np.where(limits, "joint_limits", np.where(pen, "penetration", "")))
    return ~(limits | pen), reason


def summary(stats: pd.DataFrame, keep: np.ndarray, contact_mm: float = 5.0) -> dict:
    """Before/after figures a person wants: penetration, limits, contact, retention."""
    if len(stats) == 0:
        return {"poses": 0}
    out = {"poses": int(len(stats)), "retention": round(float(keep.mean()), 4)}
    for when in ("before", "after"):
        depth = stats[f"max_depth_mm_{when}"]
        out[when] = {
            "mean_max_penetration_mm": round(float(depth.mean()), 3),
            "share_penetrating": round(float((stats[f"penetrating_vertices_{when}"] > 0).mean()), 4),
            "mean_max_limit_violation_deg": round(float(stats[f"max_violation_deg_{when}"].mean()), 3),
            "share_violating_limits": round(float((stats[f"max_violation_deg_{when}"] > MAX_VIOLATION_DEG).mean()), 4),
            "contact_share": round(float((stats[f"closest_anchor_pair_mm_{when}"] < contact_mm).mean()), 4),
        }
    return out


def pose_report(model: HandModel, table: PoseTable) -> dict:
    """Naturalness figures of a pose set (both hands, right-equivalent): finger coupling, and the
    standard deviation (degrees) of every joint's twist and splay (0 would mean an axis pinned)."""
    from handsynth.augment import right_equivalent_angles

    frames = AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right"))
    angles = np.concatenate([right_equivalent_angles(model, table, s, frames) for s in SIDES])
    std = angles.std(axis=0) if len(angles) else np.zeros((15, 3))
    names = joint_limits.JOINT_NAMES
    return {"coupling": synergies.coupling_stats(angles),
            "splay_std_deg": {n: round(float(x), 3) for n, x in zip(names, std[:, 1])},
            "twist_std_deg": {n: round(float(x), 3) for n, x in zip(names, std[:, 2])}}


def config_record(config: OptimizeConfig) -> dict:
    return asdict(config)
