"""Pictures for people: histograms, curves and image grids as PNG bytes (matplotlib, Agg)."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def histograms(series: Mapping[str, np.ndarray], title: str, bins: int = 30, xlabel: str = "") -> bytes:
    """One panel per named array."""
    n = max(len(series), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.6), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items()):
        values = np.asarray(values, dtype=float)
        ax.hist(values[np.isfinite(values)], bins=bins, color="#4a7ab5")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def curves(series: Mapping[str, Sequence[float]], title: str, xlabel: str = "iteration", log: bool = True) -> bytes:
    """Named curves over a shared x axis, one panel each (loss terms have different scales)."""
    n = max(len(series), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.4 * rows), squeeze=False)
    for ax, (name, ys) in zip(axes.flat, series.items()):
        ys = np.asarray(ys, dtype=float)
        ax.plot(np.arange(len(ys)), ys, color="#b5584a")
        if log and np.all(ys[np.isfinite(ys)] > 0) and len(ys):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def draw_keypoints(rgb: np.ndarray, uv: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) with 2D keypoints (42, 2) drawn: right hand red, left blue, hollow if hidden."""
    from PIL import ImageDraw

    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    for k, (u, v) in enumerate(uv):
        color = (230, 40, 40) if k < 21 else (40, 90, 230)
        box = (u - 2, v - 2, u + 2, v + 2)
        draw.ellipse(box, fill=color if visible[k] else None, outline=color)
    return np.asarray(img)


def image_grid(images: Sequence[np.ndarray], cols: int = 5, max_side: int = 160) -> bytes:
    """A contact sheet of uint8 RGB images (each resized to ``max_side``)."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    tiles = [Image.fromarray(np.asarray(im, dtype=np.uint8)).resize((max_side, max_side)) for im in images]
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * max_side, rows * max_side), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * max_side, (i // cols) * max_side))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
