"""Pose metrics on hand-made cases with known millimetre answers, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from handsynth.keypoints import IH26M_HAND, IH26M_ROOT
from handsynth.metrics import MIDDLE_MCP, evaluate, mpjpe, mrrpe, pa_mpjpe, procrustes_align, sa_mpjpe
from handsynth.metrics_cli import main


def _gt(n: int = 4, seed: int = 0) -> np.ndarray:
    """Two hands about 100 mm apart, joints spread ~40 mm (mm, IH2.6M order)."""
    rng = np.random.default_rng(seed)
    gt = rng.normal(size=(n, 42, 3)) * 40
    gt[:, IH26M_HAND["left"]] += [100.0, 0, 0]
    return gt


def _rotation(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return q * np.sign(np.linalg.det(q))[:, None, None]  # proper rotations (det +1)


def test_translated_left_hand_has_zero_mpjpe_and_mrrpe_equal_to_offset():
    gt = _gt()
    pred = gt.copy()
    offset = np.array([30.0, -40.0, 0.0])  # 50 mm
    pred[:, IH26M_HAND["left"]] += offset
    np.testing.assert_allclose(mpjpe(pred, gt), 0, atol=1e-9)
    np.testing.assert_allclose(mrrpe(pred, gt), 50.0)
    pred_all = gt + offset  # both hands moved together: relative placement unchanged
    np.testing.assert_allclose(mrrpe(pred_all, gt), 0, atol=1e-9)


def test_one_displaced_fingertip_gives_its_share_of_the_error():
    gt = _gt()
    pred = gt.copy()
    pred[:, 0] += [0, 0, 21.0]  # right thumb tip, 21 mm off; the hand has 21 joints
    err = mpjpe(pred, gt)
    np.testing.assert_allclose(err[:, 0], 1.0)
    np.testing.assert_allclose(err[:, 1], 0.0)
    scores = evaluate(pred, gt)
    assert scores["mpjpe_right"] == pytest.approx(1.0) and scores["mpjpe_both"] == pytest.approx(0.5)


def test_displaced_wrist_moves_every_root_relative_joint():
    gt = _gt()
    pred = gt.copy()
    pred[:, IH26M_ROOT["right"]] += [0, 10.0, 0]
    # the 20 other joints are 10 mm off after subtracting the predicted wrist; the wrist itself 0
    np.testing.assert_allclose(mpjpe(pred, gt)[:, 0], 20 * 10.0 / 21)


def test_rotated_scaled_translated_copy_has_zero_pa_mpjpe():
    rng = np.random.default_rng(1)
    gt = _gt(5)
    pred = gt.copy()
    for s in ("right", "left"):
        rot = _rotation(rng, 5)
        pred[:, IH26M_HAND[s]] = (
            1.3 * np.einsum("nij,nkj->nki", rot, gt[:, IH26M_HAND[s]]) + rng.normal(size=(5, 1, 3)) * 50
        )
    np.testing.assert_allclose(pa_mpjpe(pred, gt), 0, atol=1e-9)
    assert (mpjpe(pred, gt) > 5).all()


def test_mirrored_hand_is_not_aligned_by_a_reflection():
    gt = _gt()
    pred = gt * [-1.0, 1.0, 1.0]  # a reflection, not a rotation
    assert (pa_mpjpe(pred, gt) > 1).all()


def test_procrustes_is_optimal_under_perturbation():
    rng = np.random.default_rng(2)
    gt = rng.normal(size=(3, 21, 3)) * 40
    pred = gt + rng.normal(size=gt.shape) * 8
    aligned = procrustes_align(pred, gt)
    best = ((aligned - gt) ** 2).sum(axis=(1, 2))
    for _ in range(20):
        w = rng.normal(size=3) * 0.02  # a small rotation (second-order exponential map)
        wx = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
        small = np.eye(3) + wx + wx @ wx / 2
        centre = aligned.mean(axis=1, keepdims=True)
        moved = (aligned - centre) @ small.T * (1 + rng.normal() * 0.01) + centre + rng.normal(size=3) * 0.5
        assert (((moved - gt) ** 2).sum(axis=(1, 2)) >= best - 1e-9).all()


def test_scale_aligned_removes_scale_about_middle_mcp():
    gt = _gt()
    pred = gt.copy()
    for s in ("right", "left"):
        c = gt[:, MIDDLE_MCP[s], None]
        pred[:, IH26M_HAND[s]] = (gt[:, IH26M_HAND[s]] - c) * 0.8 + c + [5.0, 0, 0]
    np.testing.assert_allclose(sa_mpjpe(pred, gt), 0, atol=1e-9)
    assert (mpjpe(pred, gt) > 1).all()


def test_valid_mask_excludes_joints_and_whole_hands_without_root():
    gt = _gt()
    pred = gt.copy()
    pred[:, 0] += [0, 0, 21.0]
    valid = np.ones((4, 42), dtype=bool)
    valid[:, 0] = False  # the displaced joint does not count
    np.testing.assert_allclose(mpjpe(pred, gt, valid)[:, 0], 0, atol=1e-9)
    valid[1, IH26M_ROOT["left"]] = False  # no left root in sample 1: left hand and MRRPE undefined
    assert np.isnan(mpjpe(pred, gt, valid)[1, 1]) and np.isnan(mrrpe(pred, gt, valid)[1])
    assert not np.isnan(mrrpe(pred, gt, valid)[[0, 2, 3]]).any()
    assert evaluate(pred, gt, valid[..., None])["mpjpe_left"] == pytest.approx(0.0, abs=1e-9)  # (N, 42, 1) works


def test_shape_errors():
    with pytest.raises(ValueError, match=r"ground truth must have shape \(N, 42, 3\)"):
        mpjpe(np.zeros((2, 21, 3)), np.zeros((2, 21, 3)))
    with pytest.raises(ValueError, match="prediction shape"):
        mpjpe(np.zeros((3, 42, 3)), np.zeros((2, 42, 3)))


def test_cli_table_and_json(tmp_path, capsys):
    gt = _gt()
    pred = gt.copy()
    pred[:, IH26M_HAND["left"]] += [0, 0, 12.0]
    pred[:, 0] += [0, 0, 21.0]
    np.savez(tmp_path / "pred.npz", joints=pred)
    (tmp_path / "gt.json").write_text(json.dumps({"joints": gt.tolist(), "valid": np.ones((4, 42, 1)).tolist()}))
    assert (
        main(
            [
                "--pred",
                str(tmp_path / "pred.npz"),
                "--gt",
                str(tmp_path / "gt.json"),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "MPJPE" in out and "samples: 4" in out
    mrrpe_line = next(line for line in out.splitlines() if line.startswith("MRRPE"))
    assert mrrpe_line.split()[-1] == "12.00"
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["mpjpe_right"] == pytest.approx(1.0) and scores["mrrpe"] == pytest.approx(12.0)


def test_cli_bad_input_names_the_file(tmp_path, capsys):
    np.savez(tmp_path / "pred.npz", joints=np.zeros((4, 21, 3)))
    np.savez(tmp_path / "gt.npz", joints=_gt())
    assert main(["--pred", str(tmp_path / "pred.npz"), "--gt", str(tmp_path / "gt.npz")]) == 2
    err = capsys.readouterr().err
    assert "pred.npz: joints have shape (4, 21, 3), expected (N, 42, 3)" in err


def test_cli_runs_as_module(tmp_path):
    gt = _gt(2)
    np.savez(tmp_path / "gt.npz", joints=gt)
    np.savez(tmp_path / "pred.npz", joints=gt)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "handsynth.metrics_cli",
            "--pred",
            str(tmp_path / "pred.npz"),
            "--gt",
            str(tmp_path / "gt.npz"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "PA-MPJPE" in proc.stdout and "0.00" in proc.stdout
