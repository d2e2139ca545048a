"""Skin appearance per image: a tone from light to dark and low-frequency albedo variation.

The stand-in hand (like MANO) has no UV layout, so appearance is per-vertex colour: a skin tone
drawn along a melanin axis between measured-looking light and dark albedos, modulated by smooth
random noise over the rest-pose surface and reddened near the knuckles, all from one seed.
"""

from __future__ import annotations

import numpy as np

LIGHT = np.array([0.90, 0.72, 0.62])
DARK = np.array([0.33, 0.20, 0.14])
REDDEN = np.array([1.0, 0.86, 0.84])


def skin_colors(rest_vertices: np.ndarray, joints: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Per-vertex RGB in [0, 1] (V, 3) and the tone (0 light .. 1 dark) for one hand."""
    tone = float(rng.beta(1.4, 1.8))
    base = LIGHT + (DARK - LIGHT) * tone
    x = rest_vertices / 0.03                                            # ~3 cm features
    noise = np.zeros(len(x))
    for _ in range(4):
        k = rng.normal(size=3)
        noise += np.sin(x @ k + rng.uniform(0, 2 * np.pi))
    variation = 1.0 + 0.04 * noise / 2.0
    near_joint = np.exp(-np.min(np.linalg.norm(rest_vertices[:, None] - joints[None, 1:], axis=2), axis=1) / 0.006)
    tint = 1.0 + (REDDEN - 1.0) * 0.5 * near_joint[:, None]
    return np.clip(base * variation[:, None] * tint, 0, 1), tone
