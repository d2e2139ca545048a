"""Command line: score two-hand 3D predictions against ground truth (IH2.6M order, millimetres).

    python -m handsynth.metrics_cli --pred pred.npz --gt gt.json [--json scores.json]

Each file is ``.npz`` (array ``joints`` (N, 42, 3), or its only array; optional ``valid``
(N, 42)) or ``.json`` (a list (N, 42, 3), or an object with ``joints`` and optional ``valid``).
The ground truth's ``valid`` mask, if any, selects the joints that count.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from handsynth.metrics import NUM_JOINTS, evaluate


class MetricsInputError(ValueError):
    """A predictions or ground-truth file cannot be scored; the message names the file."""


def load_joints(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``(joints (N, 42, 3), valid (N, 42) or None)`` from an ``.npz`` or ``.json`` file."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.files)
                if "joints" in keys:
                    joints = npz["joints"]
                elif len(keys) == 1:
                    joints = npz[keys[0]]
                else:
                    raise MetricsInputError(f"{path}: no array 'joints' among {keys}")
                valid = npz["valid"] if "valid" in keys else None
        elif path.suffix == ".json":
            with open(path, "rb") as fh:
                doc = json.load(fh)
            if isinstance(doc, dict):
                if "joints" not in doc:
                    raise MetricsInputError(f"{path}: JSON object has no key 'joints' (keys: {sorted(doc)})")
                joints, valid = doc["joints"], doc.get("valid")
            else:
                joints, valid = doc, None
        else:
            raise MetricsInputError(f"{path}: unsupported extension {path.suffix!r}, expected .npz or .json")
        joints = np.asarray(joints, dtype=np.float64)
        valid = None if valid is None else np.asarray(valid).astype(bool)
    except (OSError, ValueError, TypeError) as exc:
        if isinstance(exc, MetricsInputError):
            raise
        raise MetricsInputError(f"{path}: cannot read joints ({exc})") from exc
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
        raise MetricsInputError(f"{path}: joints have shape {joints.shape}, expected (N, {NUM_JOINTS}, 3)")
    if len(joints) == 0:
        raise MetricsInputError(f"{path}: holds 0 samples; there is nothing to score")
    if not np.isfinite(joints).all():
        row = int(np.argwhere(~np.isfinite(joints))[0, 0])
        raise MetricsInputError(f"{path}: sample {row} has non-finite coordinates")
    if valid is not None:
        if valid.size != len(joints) * NUM_JOINTS:  # (N, 42) or IH2.6M's (N, 42, 1)
            raise MetricsInputError(f"{path}: valid has shape {valid.shape}, expected ({len(joints)}, {NUM_JOINTS})")
        valid = valid.reshape(len(joints), NUM_JOINTS)
        if not valid.any():  # every score would be NaN: an empty evaluation, not a result
            raise MetricsInputError(f"{path}: the 'valid' mask marks no joint of any sample as valid")
    return joints, valid


def format_table(scores: dict[str, float]) -> str:
    """A fixed-width table of :func:`handsynth.metrics.evaluate` scores."""

    def cell(key: str) -> str:
        value = scores.get(key)
        return f"{'-':>10}" if value is None or math.isnan(value) else f"{value:10.2f}"

    lines = [f"{'metric (mm)':<12}{'right':>10}{'left':>10}{'both':>10}"]
    for label, name in (("MPJPE", "mpjpe"), ("PA-MPJPE", "pa_mpjpe"), ("SA-MPJPE", "sa_mpjpe")):
        lines.append(f"{label:<12}" + "".join(cell(f"{name}_{s}") for s in ("right", "left", "both")))
    lines.append(f"{'MRRPE':<12}{'':>20}{cell('mrrpe')}")
    lines.append(f"samples: {int(scores['samples'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handsynth.metrics_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, help="predictions, .npz or .json, (N, 42, 3) mm, IH2.6M order")
    parser.add_argument("--gt", required=True, help="ground truth, same format; may carry a 'valid' (N, 42) mask")
    parser.add_argument("--json", dest="json_out", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    try:
        pred, _ = load_joints(args.pred)
        gt, valid = load_joints(args.gt)
        if pred.shape != gt.shape:
            raise MetricsInputError(f"{args.pred}: {len(pred)} samples, but {args.gt} has {len(gt)}")
        if args.json_out and not Path(args.json_out).resolve().parent.is_dir():
            raise MetricsInputError(f"{args.json_out}: the folder for the --json output does not exist")
    except MetricsInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scores = evaluate(pred, gt, valid)
    print(format_table(scores))
    if args.json_out:
        try:
            Path(args.json_out).write_text(
                json.dumps({k: (None if math.isnan(v) else v) for k, v in scores.items()}, indent=2)
            )
        except OSError as exc:
            print(f"error: {args.json_out}: cannot write the scores ({exc.strerror})", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
