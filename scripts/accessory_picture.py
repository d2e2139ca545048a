"""The docs picture of accessories: close-ups of watches, bracelets and rings through the pipeline's
own render path (``render_pose_views``, every hand drawn to wear a wrist piece and a ring), each
crop in three rows (the kinds in turn, each kind's largest first): the Cycles photo, the raster preview and the label image (hands grey, forearms
dark, wrist pieces 37/38 orange, rings 39/40 cyan).

Crops are cut around each accessory's labelled pixels from views rendered at ``--size`` (cameras
frame the whole hands, so an accessory is small in a 256 px view). Run from the repository root
(the npm Poly Haven maps under ``IH_ASSETS_DIR``, else procedural):
``python scripts/accessory_picture.py docs/accessories.png [--size 512] [--samples 16] [--poses 4] [--views 2]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from forearm_picture import maps

from handsynth.accessories import ACCESSORY_LABELS
from handsynth.arms import ArmOptions
from handsynth.hand_model.model import HandModel
from handsynth.render import RenderOptions
from handsynth.render.raster import decode_png
from handsynth.sources.procedural import generate_interacting_poses
from handsynth.views import render_pose_views

CROP = 160
#: Label image colours: background black, hands grey, forearms and sleeves dark, accessories bright.
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[1:33], PALETTE[33:37] = 150, 70
PALETTE[[37, 38]], PALETTE[[39, 40]] = (255, 150, 30), (40, 220, 255)


def crops(image, min_pixels: int) -> list[tuple[str, int, np.ndarray]]:
    """(kind, pixels, a (photo, preview, labels) column) per accessory with at least ``min_pixels`` pixels."""
    labels = decode_png(image.pngs["label"])
    kind_of = {p["label"]: p["kind"] for p in json.loads(image.scene["accessories"])}
    out = []
    for value in ACCESSORY_LABELS:
        rows, cols = np.nonzero(labels == value)
        if len(rows) < min_pixels:
            continue
        centre = np.array([rows.mean(), cols.mean()])
        half = int(max(np.ptp(rows), np.ptp(cols), 48) * 0.9)
        lo = np.clip(centre.astype(int) - half, 0, np.array(labels.shape) - 2 * half)
        box = (slice(lo[0], lo[0] + 2 * half), slice(lo[1], lo[1] + 2 * half))
        tiles = [image.rgb[box], image.raster_rgb[box], PALETTE[labels[box]]]
        column = np.concatenate([np.asarray(Image.fromarray(t).resize((CROP, CROP), Image.LANCZOS)) for t in tiles])
        out.append((kind_of[value], len(rows), column))
    return out


def pick(found: list[tuple[str, int, np.ndarray]], count: int) -> list[np.ndarray]:
    """Up to ``count`` columns, the kinds in turn (watch, bracelet, ring), each kind's largest first."""
    by_kind = {k: sorted((f for f in found if f[0] == k), key=lambda f: -f[1]) for k in ("watch", "bracelet", "ring")}
    turns = [by_kind[k][i][2] for i in range(count) for k in by_kind if i < len(by_kind[k])]
    return turns[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--poses", type=int, default=4)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--pose-seed", type=int, default=1)
    parser.add_argument("--columns", type=int, default=8)
    args = parser.parse_args()
    model = HandModel.standin()
    poses = generate_interacting_poses(model, args.poses, seed=args.pose_seed)
    library = maps()
    options = RenderOptions(backend="cycles", samples=args.samples, denoise=True, device="cpu", subdivision=1)
    start = time.perf_counter()
    images = list(render_pose_views(model, poses, args.views, args.size, library, seed=0, options=options,
                                    arms=ArmOptions(True, 0.0, 1.0)))
    print(f"{len(images)} images in {time.perf_counter() - start:.1f} s; alpha IoU {min(i.alpha_iou for i in images):.3f}",
          file=sys.stderr)
    found = [c for image in images for c in crops(image, min_pixels=(args.size // 64) ** 2)]
    for image in images[::args.views]:
        worn = json.loads(image.scene["accessories"])
        print(image.record.pose["pose_id"], [(p["kind"], p["side"], p["where"], p["materials"]["parts"][
            "case" if p["kind"] == "watch" else "band"]["name"]) for p in worn], file=sys.stderr)
    picked = pick(found, args.columns)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(picked, axis=1)).save(args.out)


if __name__ == "__main__":
    main()
