"""handsynth: the RenderIH data-generation math, free of any orchestration code.

Submodules are imported explicitly (``from handsynth.pose_table import PoseTable``) so that
importing one stage never drags in torch, pyrender or the whole pipeline.
"""
