"""Third-party assets fetched by ``scripts/fetch_assets.sh`` (npm packages, by exact version, each
with its license file): where they live and the package folders the pipeline reads."""

from __future__ import annotations

import os
from pathlib import Path

#: @pmndrs/assets 1.7.0 (CC0): Poly Haven HDRIs as ``hdri/*.exr.js``.
NPM_HDRI_PACKAGE = "pmndrs-assets-1.7.0"
#: @webxr-input-profiles/assets 1.0.20 (MIT): the rigged generic hand.
NPM_HAND_PACKAGE = "webxr-input-profiles-assets-1.0.20"


def assets_dir() -> Path:
    """``$IH_ASSETS_DIR``, else ``<repo>/.local/assets`` (where the setup script puts them)."""
    return Path(os.environ.get("IH_ASSETS_DIR", Path(__file__).resolve().parents[1] / ".local" / "assets"))
