"""A bank of seeded skin textures: each painted once by :mod:`handsynth.render.skin`, then reused.

Painting one 512 x 512 texture set costs 0.2-0.6 s on a CPU core, as much as a whole raster image
several times over, and a pose needs only one person's skin. So a run paints at most
:data:`BANK_SIZE` people, entry ``i`` from ``seed_for("skin bank", seed, i)``, and pose ``p`` wears
entry ``seed_for("skin", seed, p) % BANK_SIZE``: the settings' seed and the stable pose id, never
a shard or a row position. At paper scale (~110,000 kept poses) the bank is painted once per
machine and every entry is worn by ~1,700 poses under other cameras, lights and exposures.

Entries are cached on disk (``<cache>/skin_bank/<key>/<i>.npz``, plain arrays, read with
``allow_pickle=False``) so that every render process of a machine shares one painting, and the
last few are kept in memory. The cache key covers everything the painting depends on: the hand
model's digest, its UV layout version, the texture size, the settings' seed and a digest of
``skin.py`` itself, so an improved painting repaints instead of reusing stale textures.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from handsynth.hand_model.uv import UV_VERSION
from handsynth.render import skin
from handsynth.seeds import seed_for

log = logging.getLogger(__name__)

#: People in the bank: 64 painted once cost ~30 s, negligible beside a shard's renders.
BANK_SIZE = 64
#: Entries kept decoded in memory (6.3 MB each at 512 texels).
MEMORY_ENTRIES = 4
#: The square (S, S) maps beside the (S, S, 3) albedo and the (3,) subsurface radius.
_SQUARE_MAPS = ("roughness", "bump", "nail_mask", "specular")
_ARRAYS = ("albedo", *_SQUARE_MAPS, "subsurface_radius")


def _painting_digest() -> str:
    """The painting code's identity: a change to skin.py must not reuse textures it painted before."""
    return hashlib.sha256(Path(skin.__file__).read_bytes()).hexdigest()[:12]


class SkinBank:
    """``BANK_SIZE`` seeded skins of ``model`` at ``size`` texels; ``textures(index_for(pose_id))``."""

    def __init__(self, model, seed: int, size: int, cache_dir: str | os.PathLike | None = None,
                 entries: int = BANK_SIZE) -> None:
        from handsynth.hand_model.model import default_cache_dir

        if entries < 1:
            raise ValueError(f"a skin bank needs at least one entry, got {entries}")
        self.model, self.seed, self.size, self.entries = model, int(seed), int(size), int(entries)
        key = f"{model.identity['digest']}-{UV_VERSION}-{size}-{self.seed}-{_painting_digest()}"
        self.folder = Path(cache_dir or default_cache_dir()) / "skin_bank" / key
        self._memory: OrderedDict[int, skin.SkinTextures] = OrderedDict()

    def index_for(self, pose_id: str) -> int:
        """The bank entry a pose wears (both hands: one person)."""
        return seed_for("skin", self.seed, pose_id) % self.entries

    def textures(self, index: int) -> skin.SkinTextures:
        """Entry ``index``: from memory, else from the disk cache, else painted (and cached)."""
        if not 0 <= index < self.entries:
            raise IndexError(f"skin bank entry {index} outside 0..{self.entries - 1}")
        if index in self._memory:
            self._memory.move_to_end(index)
            return self._memory[index]
        textures = self._read(index)
        if textures is None:
            textures = skin.skin_textures(self.model, "right", seed_for("skin bank", self.seed, index), size=self.size)
            self._write(index, textures)
        self._memory[index] = textures
        while len(self._memory) > MEMORY_ENTRIES:
            self._memory.popitem(last=False)
        return textures

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:04d}.npz"

    def _read(self, index: int) -> skin.SkinTextures | None:
        path = self._path(index)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in _ARRAYS}
                tone, seed = float(z["tone"]), int(z["seed"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:   # torn or foreign: paint again
            log.warning("%s: unreadable skin bank entry (%s); painting it again", path, exc)
            return None
        square = (self.size, self.size)
        if arrays["albedo"].shape != square + (3,) or any(arrays[n].shape != square for n in _SQUARE_MAPS):
            log.warning("%s: skin bank entry is not %d texels square; painting it again", path, self.size)
            return None
        return skin.SkinTextures(**arrays, tone=tone, seed=seed)

    def _write(self, index: int, textures: skin.SkinTextures) -> None:
        """Atomic: written under a process-unique name, then renamed (parallel renderers may race)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(index)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **{name: getattr(textures, name) for name in _ARRAYS}, tone=textures.tone, seed=textures.seed)
        tmp.replace(path)
