"""Pose tables: Parquet round trip and errors that name the file, row and column."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from handsynth.pose_table import PARAM_COLUMNS, PoseTable, PoseTableError, empty_meta, from_hands


def _table(n: int = 3) -> PoseTable:
    meta = empty_meta(n)
    meta["pose_id"] = [f"p{i}" for i in range(n)]
    meta["source"] = "test"
    rng = np.random.default_rng(0)
    hands = {s: {"global_orient": rng.normal(size=(n, 3)), "hand_pose": rng.normal(size=(n, 45)),
                 "betas": rng.normal(size=(n, 10)), "transl": rng.normal(size=(n, 3))} for s in ("right", "left")}
    return from_hands(meta, hands).validate()


def test_parquet_round_trip_is_exact(tmp_path):
    table = _table()
    table.write_parquet(tmp_path / "t.parquet")
    back = PoseTable.read_parquet(tmp_path / "t.parquet")
    assert list(back.pose_ids) == list(table.pose_ids)
    for key in PARAM_COLUMNS:
        assert np.array_equal(back.arrays[key], table.arrays[key])


def test_nan_names_file_row_and_column(tmp_path):
    table = _table()
    table.arrays["left_betas"][1, 4] = np.nan
    path = tmp_path / "bad.parquet"
    pq.write_table(table.to_arrow(), path)
    with pytest.raises(PoseTableError, match=r"bad.parquet: row #1 \(pose_id='p1'\) column 'left_betas'\[4\] is nan"):
        PoseTable.read_parquet(path)


def test_wrong_length_list_is_named(tmp_path):
    table = _table()
    arrow = table.to_arrow()
    values = [list(v) for v in table.arrays["right_hand_pose"]]
    values[2] = values[2][:44]
    arrow = arrow.set_column(arrow.schema.get_field_index("right_hand_pose"), "right_hand_pose", pa.array(values))
    pq.write_table(arrow, tmp_path / "short.parquet")
    with pytest.raises(PoseTableError, match=r"row #2 \(pose_id='p2'\) column 'right_hand_pose' has 44 values, expected 45"):
        PoseTable.read_parquet(tmp_path / "short.parquet")


def test_missing_column_and_duplicate_ids_are_rejected():
    table = _table()
    del table.arrays["left_transl"]
    with pytest.raises(PoseTableError, match="missing column 'left_transl'"):
        table.validate()
    dup = _table()
    dup.meta.loc[2, "pose_id"] = "p0"
    with pytest.raises(PoseTableError, match="repeats an earlier id"):
        dup.validate()
