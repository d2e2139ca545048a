"""Rendering backends behind one interface: ``raster`` (pyrender: exact labels, depth, visibility,
fast preview) and ``cycles`` (Blender Cycles: the photoreal RGB)."""
