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


#: The only columns a summary reads.
COLUMNS: tuple[str, ...] = ("pose_id", "distinct_pose_id", "tar_key", "visible_keypoints", "width", "height",
                            "hand_model", *(f"{kind}_bytes" for kind in MEMBER_SUFFIX))


def summarize(tables: pd.DataFrame | Iterable[pd.DataFrame]) -> dict[str, Any]:
    """One shard's annotation table (or its batches of rows, in any split) -> its summary (JSON values).

    ``images``, ``poses``, ``distinct_poses`` and ``blocks`` (block tars) are counts; poses do not
    span shards, so they add up across shards. ``visible_keypoints`` is the sum over images (for
    the dataset mean); ``bytes`` the stored PNG bytes per kind; ``image_sizes`` and
    ``hand_models`` the distinct values seen, with their image counts. Memory: one batch plus
    the shard's pose ids and block keys.
    """
    seen: dict[str, set[str]] = {"poses": set(), "distinct_poses": set(), "blocks": set()}
    images = visible = 0
    sizes: dict[str, int] = {}
    models: dict[str, int] = {}
    nbytes = dict.fromkeys(MEMBER_SUFFIX, 0)
    for table in [tables] if isinstance(tables, pd.DataFrame) else tables:
        images += len(table)
        for name, column in (("poses", "pose_id"), ("distinct_poses", "distinct_pose_id"), ("blocks", "tar_key")):
            seen[name].update(table[column].astype(str).unique())
        visible += int(table["visible_keypoints"].sum())
        for kind in MEMBER_SUFFIX:
            nbytes[kind] += int(table[f"{kind}_bytes"].sum())
        sizes = _add([sizes, _counts(table["width"].astype(str) + "x" + table["height"].astype(str))])
        models = _add([models, _counts(table["hand_model"].astype(str))])
    return {"images": images, **{name: len(values) for name, values in seen.items()}, "visible_keypoints": visible,
            "bytes": nbytes, "image_sizes": sizes, "hand_models": models}


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
