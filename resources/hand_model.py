"""The hand model as a Dagster resource: real MANO from a folder, or the generated stand-in."""

from __future__ import annotations

import functools
from typing import Literal

from dagster import ConfigurableResource
from pydantic import Field

from handsynth.hand_model.model import HandModel


@functools.lru_cache(maxsize=4)
def _load(source: str, mano_folder: str, cache_dir: str, device: str) -> HandModel:
    if source == "mano":
        return HandModel.from_mano_folder(mano_folder, device=device)
    return HandModel.standin(cache_dir=cache_dir or None, device=device)


class HandModelResource(ConfigurableResource):
    """Which hand model every geometric step uses; loaded once per process."""

    source: Literal["standin", "mano"] = Field(
        default="standin", description="'standin' (generated, not MANO) or 'mano' (files in mano_folder).")
    mano_folder: str = Field(default="", description="Folder with MANO_RIGHT/MANO_LEFT .pkl or .npz.")
    cache_dir: str = Field(default="", description="Where the generated stand-in is cached (default ~/.cache/handsynth).")
    device: str = Field(default="cpu", description="torch device: 'cpu' or 'cuda[:i]'.")

    def get(self) -> HandModel:
        return _load(self.source, self.mano_folder, self.cache_dir, self.device)
