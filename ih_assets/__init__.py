"""Dagster assets of the RenderIH pipeline; `ih_assets.definitions` assembles them."""
