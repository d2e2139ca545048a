"""Retention, contact and naturalness of the optimizer on the demo preset's shards and on the benchmark sample.

Runs the pipeline's pose stages through the library (generator -> dedup -> augmentation ->
anchors -> discriminator -> optimize -> filter) with the demo preset's sizes, then audits every
kept pose against each hand's whole closed surface (exact distances, not the grids), and reports
finger coupling (share of fingers with |DIP - 2/3 PIP| > 20 degrees: source, augmented, kept) and
the smallest per-joint standard deviation of twist and splay over the kept poses of all shards
(targets: retention >= 93%, deepest kept <= 1 mm, coupling share <= 10%, std >= 1 degree):

    python benchmarks/optimize_retention.py [--bench-poses 64] [--no-discriminator]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from handsynth import anchors as an
from handsynth import augment, dedup, discriminator as di, optimize as op, penetration as pen
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.sources.procedural import generate_interacting_poses
from resources.settings import PRESETS


#: The reference implementation keeps a pose with at most this many crossing triangle pairs.
REFERENCE_MAX_PAIRS = 75


def _reference_rule_passes(model: HandModel, table) -> int:
    """How many poses pass the reference implementation's rule (<= 75 crossing triangle pairs)."""
    verts = {s: model.forward_numpy(s, table.hand(s)).vertices.double().cpu().numpy() for s in ("right", "left")}
    return sum(pen.intersecting_triangle_pairs(verts["right"][i], model.faces("right"), verts["left"][i],
                                               model.faces("left")) <= REFERENCE_MAX_PAIRS for i in range(len(table)))


def _exact_worst_mm(model: HandModel, table) -> np.ndarray:
    """Deepest vertex (mm) of each pose inside the other hand's whole closed surface (exact)."""
    verts = {s: model.forward_numpy(s, table.hand(s)).vertices.double() for s in ("right", "left")}
    return np.array([max(float(d.max()) for d in pen.exact_depths(model, {s: verts[s][i] for s in verts}).values())
                     * 1000.0 for i in range(len(table))])


def _run(model, poses, anchors, disc, field, config, label: str, kept_tables: list | None = None) -> dict:
    t = time.perf_counter()
    result = op.optimize_poses(model, poses, anchors, disc, field, config)
    seconds = time.perf_counter() - t
    keep, reason = op.filter_valid(result.stats)
    s = op.summary(result.stats, keep)
    kept = result.poses.take(keep)
    if kept_tables is not None:
        kept_tables.append(kept)
    exact = _exact_worst_mm(model, kept) if len(kept) else np.zeros(0)
    by = {}
    if "interaction" in poses.meta:
        for name, grp in poses.meta.groupby("interaction").groups.items():
            idx = np.asarray(list(grp))
            by[str(name)] = f"{int(keep[idx].sum())}/{len(idx)}"
    out = {"label": label, "poses": len(keep), "kept": int(keep.sum()), "retention": round(float(keep.mean()), 4),
           "contact_share_after_all": s["after"]["contact_share"],
           "contact_share_kept": round(float((result.stats["closest_anchor_pair_mm_after"][keep] < 5.0).mean()), 4)
           if keep.any() else 0.0,
           "exact_worst_kept_mm": round(float(exact.max()), 3) if len(exact) else 0.0,
           "kept_over_1mm": int((exact > 1.0).sum()),
           "kept_passing_reference_rule": _reference_rule_passes(model, kept) if len(kept) else 0, "by_interaction": by, "seconds": round(seconds, 1),
           "stage_seconds": result.seconds, "load_average": open("/proc/loadavg").read().split()[0],
           "drop_reasons": {k: int(v) for k, v in zip(*np.unique(reason[~keep], return_counts=True))},
           "coupling_augmented": augment.augmentation_report(model, poses)["coupling"],
           "coupling_kept": op.pose_report(model, kept)["coupling"]}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-poses", type=int, default=64)
    ap.add_argument("--no-discriminator", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    demo = PRESETS["demo"]
    model = HandModel.standin()
    field = pen.PenetrationField(model)
    raw = generate_interacting_poses(model, demo["n_procedural_poses"], seed=0)
    distinct = dedup.remove_similar_poses(model, raw, demo["dedup_threshold_mm"], demo["shard_size"])
    anchors = an.select_anchors(model, an.anchor_sample(raw, 0), demo["n_anchors_per_hand"])
    disc = None
    if not args.no_discriminator:
        disc, _ = di.train_discriminator(di.natural_hands(0), seed=0, epochs=demo["discriminator_epochs"])
    config = op.OptimizeConfig(iterations=demo["optimize_iterations"], batch_size=demo["optimize_batch_size"])
    kept_tables: list = []
    print(json.dumps({"coupling_source": op.pose_report(model, distinct)["coupling"]}), flush=True)
    for shard in sorted(distinct.meta["shard"].unique()):
        part = distinct.take(distinct.meta["shard"].to_numpy() == shard)
        poses, _ = augment.augment_pose_table(model, part, demo["n_augmentations"], 0)
        _run(model, poses, anchors, disc, field, config, f"demo {shard}", kept_tables)
    kept = PoseTable.concat(kept_tables)
    report = op.pose_report(model, kept)
    print(json.dumps({"demo kept poses": len(kept), "coupling_kept": report["coupling"],
                      "min_twist_std_deg": min(report["twist_std_deg"].values()),
                      "min_splay_std_deg": min(report["splay_std_deg"].values()),
                      "twist_std_deg": report["twist_std_deg"], "splay_std_deg": report["splay_std_deg"]}), flush=True)
    braw = generate_interacting_poses(model, args.bench_poses, seed=0)
    braw.meta["distinct_pose_id"] = braw.meta["pose_id"]
    bposes, _ = augment.augment_pose_table(model, braw, 1, 0)
    banchors = an.select_anchors(model, braw)
    _run(model, bposes, banchors, None, field, config, f"benchmark sample ({args.bench_poses})")


if __name__ == "__main__":
    main()
