"""The Great Expectations 1.x suite of the annotation table, run in memory.

dagster-ge supports only GX < 1, so asset checks call :func:`validate_annotations` directly. The
suite checks scalar columns (list columns are summarised into scalars by handsynth.annotate).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from handsynth.annotate import SCALAR_COLUMNS

if TYPE_CHECKING:
    import great_expectations as gx


def _gx():
    """Great Expectations, imported on first use: the import takes ~2 s, and every Dagster step
    process, code-server load and CLI call imports this module (through the asset definitions)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # GX progress bars would flood the run logs
    import great_expectations
    import great_expectations.expectations

    return great_expectations, great_expectations.expectations


def annotation_suite(image_size: int | None = None) -> gx.ExpectationSuite:
    """No nulls, unique image ids, positive focal lengths, orthonormal rotations, boxes in order."""
    gx, gxe = _gx()
    suite = gx.ExpectationSuite(name="annotations")
    for column in SCALAR_COLUMNS:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="image_id"))
    suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=["tar_key", "rgb_offset"]))
    for column in ("fx", "fy"):
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, strict_min=True))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="r_orthonormality_error", min_value=0, max_value=1e-4))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="visible_keypoints", min_value=0, max_value=42))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="view", min_value=0))
    suite.add_expectation(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="bbox_x1", column_B="bbox_x0"))
    suite.add_expectation(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="bbox_y1", column_B="bbox_y0"))
    if image_size is not None:
        for column in ("width", "height"):
            suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=image_size, max_value=image_size))
        for column in ("cx", "cy", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"):
            suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=image_size))
    return suite


def validate_annotations(df: pd.DataFrame, image_size: int | None = None) -> tuple[bool, list[dict[str, Any]]]:
    """Run the suite on the scalar columns; return success and one summary per failed expectation."""
    gx, _ = _gx()
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas("annotations")
    asset = source.add_dataframe_asset("annotation_table")
    batch_def = asset.add_batch_definition_whole_dataframe("whole")
    scalars = df[[c for c in SCALAR_COLUMNS if c in df.columns]].copy()
    result = batch_def.get_batch(batch_parameters={"dataframe": scalars}).validate(annotation_suite(image_size))
    failures = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            failures.append({"expectation": cfg.type, "column": cfg.kwargs.get("column") or cfg.kwargs.get("column_A"),
                             "unexpected_count": (r.result or {}).get("unexpected_count")})
    return bool(result.success), failures
