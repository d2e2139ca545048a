"""Small per-shard records of the annotation tables, and the dataset totals made from them.

The dataset manifest describes a million images; reading every annotation table to count rows
would hold the dataset in memory (or read it all again on every manifest). Each shard's
``annotations`` step summarises its own table (:func:`summarize`: a few numbers, the same size
for any shard) and records it on its materialization; the manifest adds the records up
(:func:`combine`). No Dagster here.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from handsynth.render.blocks import MEMBER_SUFFIX

#: What every summary holds (a summary without one of these is from other code and is refused).
FIELDS: tuple[str, ...] = ("images", "poses", "distinct_poses", "blocks", "visible_keypoints", "bytes",
                           "image_sizes", "hand_models")


def summarize(table: pd.DataFrame) -> dict[str, Any]:
    """One shard's annotation table -> its summary (JSON values).

    ``images``, ``poses``, ``distinct_poses`` and ``blocks`` (block tars) are counts; poses do not
    span shards, so they add up across shards. ``visible_keypoints`` is the sum over images (for
    the dataset mean); ``bytes`` the stored PNG bytes per kind; ``image_sizes`` and
    ``hand_models`` the distinct values seen, with their image counts.
    """
    n = len(table)
    return {
        "images": n,
        "poses": int(table["pose_id"].nunique()) if n else 0,
        "distinct_poses": int(table["distinct_pose_id"].nunique()) if n else 0,
        "blocks": int(table["tar_key"].nunique()) if n else 0,
        "visible_keypoints": int(table["visible_keypoints"].sum()) if n else 0,
        "bytes": {kind: int(table[f"{kind}_bytes"].sum()) if n else 0 for kind in MEMBER_SUFFIX},
        "image_sizes": _counts(table["width"].astype(str) + "x" + table["height"].astype(str)) if n else {},
        "hand_models": _counts(table["hand_model"].astype(str)) if n else {},
    }


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts().sort_index().items()}


def check(summary: Any, where: str) -> dict[str, Any]:
    """``summary`` if it has every field of :data:`FIELDS`; a ``ValueError`` naming ``where`` if not."""
    missing = [f for f in FIELDS if not isinstance(summary, Mapping) or f not in summary]
    if missing:
        raise ValueError(f"{where}: shard summary lacks {missing}")
    return dict(summary)


def combine(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Shard -> summary into the dataset's totals (``images_per_shard`` included)."""
    parts = [summaries[s] for s in sorted(summaries)]
    images = sum(int(p["images"]) for p in parts)
    total: dict[str, Any] = {
        "images": images,
        "images_per_shard": {s: int(summaries[s]["images"]) for s in sorted(summaries)},
        **{k: sum(int(p[k]) for p in parts) for k in ("poses", "distinct_poses", "blocks")},
        "visible_keypoints_mean": (sum(int(p["visible_keypoints"]) for p in parts) / images) if images else 0.0,
        "bytes": {kind: sum(int(p["bytes"][kind]) for p in parts) for kind in MEMBER_SUFFIX},
        "image_sizes": _add(p["image_sizes"] for p in parts),
        "hand_models": _add(p["hand_models"] for p in parts),
    }
    total["bytes"]["total"] = int(np.sum(list(total["bytes"].values())))
    return total


def _add(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))
