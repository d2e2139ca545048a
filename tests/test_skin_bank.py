"""The seeded skin-texture bank: painted once per entry, the same textures from memory, disk or paint."""

from __future__ import annotations

import numpy as np
import pytest

from handsynth.render import skin
from handsynth.render.skin_bank import BANK_SIZE, SkinBank
from handsynth.seeds import seed_for

SIZE = 32
FIELDS = ("albedo", "roughness", "bump", "nail_mask", "subsurface_radius")


def _same(a: skin.SkinTextures, b: skin.SkinTextures) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS) and (a.tone, a.seed) == (b.tone, b.seed)


def test_an_entry_is_the_painting_of_its_seed_and_comes_back_identical_from_disk(hand_model, tmp_path, monkeypatch):
    bank = SkinBank(hand_model, seed=3, size=SIZE, cache_dir=tmp_path)
    painted = bank.textures(5)
    assert _same(painted, skin.skin_textures(hand_model, "right", seed_for("skin bank", 3, 5), size=SIZE))
    assert len(list(bank.folder.glob("*.npz"))) == 1
    # another process (a new bank object) reads the cache instead of painting again
    monkeypatch.setattr(skin, "skin_textures", lambda *a, **k: pytest.fail("painted again instead of reading the cache"))
    again = SkinBank(hand_model, seed=3, size=SIZE, cache_dir=tmp_path).textures(5)
    assert _same(again, painted) and again.albedo.dtype == np.float32


def test_a_torn_cache_file_is_painted_again(hand_model, tmp_path):
    bank = SkinBank(hand_model, seed=0, size=SIZE, cache_dir=tmp_path)
    first = bank.textures(1)
    path = next(bank.folder.glob("*.npz"))
    path.write_bytes(path.read_bytes()[:100])
    assert _same(SkinBank(hand_model, seed=0, size=SIZE, cache_dir=tmp_path).textures(1), first)


def test_poses_draw_entries_from_the_settings_seed_and_their_id(hand_model, tmp_path):
    bank = SkinBank(hand_model, seed=0, size=SIZE, cache_dir=tmp_path)
    ids = [f"proc/0/{i:07d}" for i in range(400)]
    entries = [bank.index_for(pid) for pid in ids]
    assert entries == [SkinBank(hand_model, seed=0, size=SIZE, cache_dir=tmp_path).index_for(pid) for pid in ids]
    assert set(entries) == set(range(BANK_SIZE))          # 400 poses wear every one of the 64 people
    other = SkinBank(hand_model, seed=1, size=SIZE, cache_dir=tmp_path)
    assert other.folder != bank.folder and [other.index_for(pid) for pid in ids] != entries
    with pytest.raises(IndexError, match="outside"):
        bank.textures(BANK_SIZE)
