"""Deterministic seeds derived from names, so every random choice can be replayed.

Following Kubric, a seed is recorded with every output row; it is derived (not drawn) from the
stage name, the settings' seed and stable ids (distinct pose id, augmentation index, view index),
never from a shard key or a row position: a re-run of any partition reproduces the same bytes, and
adding input poses (which re-cuts the shards) changes no existing pose's randomness.
"""

from __future__ import annotations

import hashlib

import numpy as np


def seed_for(*parts: object) -> int:
    """Return a 63-bit seed from the given parts (strings, ints), stable across processes."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(repr(p).encode("utf-8"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "little") >> 1


def rng_for(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded by :func:`seed_for` of the parts."""
    return np.random.default_rng(seed_for(*parts))
