"""Cycles close-ups of the stand-in's skin (back and palm of a rest hand, one row per skin seed).

Shows what the skin maps do under real lighting: albedo, roughness and bump through the UVs, as
the pipeline's Cycles worker applies them. Run from the repository root:
``python scripts/skin_closeup.py out.png [--size 384] [--samples 64] [--seeds 3,10]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from handsynth import cameras, envmaps
from handsynth.hand_model.model import HandModel
from handsynth.render import SceneSpec, skin
from handsynth.render.cycles import CyclesRenderer
from handsynth.render.raster import HandMesh
from handsynth.views import subdivide, subdivide_corners

HDRI = Path(".local/assets/pmndrs-assets-1.7.0/hdri")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seeds", default="3,10")
    parser.add_argument("--envmap", default="apartment")
    args = parser.parse_args()
    model = HandModel.standin()
    layer = model.layers["right"]
    rest = layer.v_template.detach().cpu().numpy().astype(np.float64)
    joints = layer.J_regressor.detach().cpu().numpy() @ rest
    frame = skin.hand_frame(rest, joints)
    layout = model.uv_layout("right")
    verts, faces = subdivide(rest, model.faces("right"), 1)
    uv = subdivide_corners(layout.uv[layout.faces_uv], 1)
    env, _ = envmaps.load_npm_hdris(HDRI)[args.envmap] if HDRI.exists() else (envmaps.procedural_envmap(0, 128, 256), 0)
    centre = 0.5 * (rest.min(axis=0) + rest.max(axis=0))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        tex = skin.skin_textures(model, "right", seed, size=1024)
        # one worker per skin: a worker keeps the first texture it was sent (persistent data)
        renderer = CyclesRenderer(args.size, args.size, faces, np.zeros(len(faces), int), samples=args.samples,
                                  denoise=True, device="cpu", uv=uv)
        try:
            renderer.set_skin(0, tex.albedo, tex.roughness, tex.bump, tex.specular)
            row = []
            for side in (-1.0, 1.0):          # back of the hand, then the palm
                eye = centre + side * 0.42 * frame.palm_normal
                R, t = _look(eye, centre, joints[4] - joints[0])     # fingers up
                f = args.size * 1.9
                cam = cameras.Camera(np.array([[f, 0, (args.size - 1) / 2], [0, f, (args.size - 1) / 2], [0, 0, 1.0]]),
                                     R, t, args.size, args.size)
                hand = HandMesh(verts, faces, np.full((len(verts), 3), 0.5), np.zeros(len(faces), int), 1)
                material = {"subsurface_radius": [float(x) for x in tex.subsurface_radius], "subsurface_scale_m": 0.001}
                row.append(renderer.render(SceneSpec([hand], cam, args.envmap, env, 0.6, envmaps.auto_exposure(env),
                                                     material), seed=seed).rgb)
        finally:
            renderer.close()
        rows.append(np.concatenate(row, axis=1))
        print(f"seed {seed}: tone {tex.tone:.2f}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)


def _look(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV R, t of a camera at ``eye`` looking at ``target`` with ``up`` toward the image top."""
    z = (target - eye) / np.linalg.norm(target - eye)
    y = -(up - (up @ z) * z)
    y /= np.linalg.norm(y)
    R = np.stack([np.cross(y, z), y, z])
    return R, -R @ eye


if __name__ == "__main__":
    main()
