"""Small helpers to show pictures and tables in the Dagster UI."""

from __future__ import annotations

import base64

from dagster import MetadataValue


def image(png: bytes, alt: str = "image") -> MetadataValue:
    """A PNG shown inline in the asset's metadata (Markdown with a data URI)."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")
