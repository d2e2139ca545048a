"""Pictures of the stand-in hand and its skin: ``docs/standin_hand.png`` and ``docs/skin_textures.png``.

Rows are skin seeds (light to dark), columns poses and views (the open hand's back and palm, a
grasp, a fist), each hand with a straight forearm in its mean skin colour, each tile 256 px as the pipeline
renders; a quick textured pyrender preview, not the Cycles look. Run from the repository root:
``PYOPENGL_PLATFORM=egl python scripts/standin_hand_picture.py [out_dir]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import pyrender  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402
from PIL import Image  # noqa: E402

from handsynth.hand_model import forearm, standin  # noqa: E402
from handsynth.hand_model.model import HandModel  # noqa: E402
from handsynth.render import skin  # noqa: E402

TILE = 256


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    f = (target - eye) / np.linalg.norm(target - eye)
    s = np.cross(f, up)
    s /= np.linalg.norm(s)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = s, np.cross(s, f), -f, eye
    return pose


def _posed(model: HandModel, pose: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right hand vertices in one of the stand-in's picture poses (``standin.PICTURE_POSES_DEG``),
    and the vertices and faces of its forearm (straight on, the wrist neither flexed nor deviated)."""
    full = standin.picture_pose(model.rest_keypoints("right"), pose)
    hand_pose = torch.as_tensor(full[None], dtype=torch.float32) - model.hands_mean("right")[None]
    z, betas = torch.zeros(1, 3), torch.zeros(1, 10)
    hand = model.forward("right", z, hand_pose, betas, z).vertices
    arm = forearm.attach_forearm(model, "right", hand, z, betas, z)
    return hand[0].numpy(), arm.vertices[0].numpy(), arm.faces


def main(out_dir: Path) -> None:
    model = HandModel.standin()
    layout = model.uv_layout("right")
    renderer = pyrender.OffscreenRenderer(TILE, TILE)
    shots = []  # (vertices, eye offset, up): back and palm of the open hand, a grasp, a fist
    for pose, eye, up in (("open", (0, 0.3, 0), (1, 0, 0)), ("open", (0, -0.3, 0), (1, 0, 0)),
                          ("grasp", (0.05, 0.12, -0.2), (1, 0, 0)), ("fist", (0.1, -0.1, -0.18), (0, 1, 0))):
        shots.append((*_posed(model, pose), np.array(eye, float), np.array(up, float)))
    rows, maps = [], []
    for seed in (3, 2, 1, 5, 10):
        tex = skin.skin_textures(model, "right", seed, size=1024)
        image = Image.fromarray((skin.linear_to_srgb(tex.albedo) * 255).astype(np.uint8))
        row = []
        # the forearm has no skin texture of its own yet: the skin colour around the wrist, as a
        # one-texel texture so that it takes the hand's own material path
        wrist = skin.vertex_albedo(tex, layout, 778)[model.wrist_loop("right")].mean(axis=0)
        arm_texel = Image.fromarray((skin.linear_to_srgb(wrist) * 255).astype(np.uint8).reshape(1, 1, 3))
        for verts, arm_verts, arm_faces, eye, up in shots:
            centre = verts.mean(axis=0)
            mesh = trimesh.Trimesh(verts[layout.vertex_ids] - centre, layout.faces_uv, process=False,
                                   visual=trimesh.visual.TextureVisuals(uv=layout.uv, image=image))
            scene = pyrender.Scene(ambient_light=[0.35] * 3, bg_color=[0.22, 0.22, 0.26])
            scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=True))
            arm = trimesh.Trimesh(arm_verts - centre, arm_faces, process=False, visual=trimesh.visual.TextureVisuals(
                uv=np.full((len(arm_verts), 2), 0.5), image=arm_texel))
            scene.add(pyrender.Mesh.from_trimesh(arm, smooth=True))
            pose = _look_at(eye, np.zeros(3), up)
            scene.add(pyrender.PerspectiveCamera(yfov=0.7), pose=pose)
            scene.add(pyrender.DirectionalLight(intensity=3.0), pose=pose)
            row.append(renderer.render(scene)[0])
        rows.append(np.concatenate(row, axis=1))
        small = tex.albedo[::4, ::4]
        grey = lambda m: np.repeat((m[::4, ::4, None] * 255).astype(np.uint8), 3, axis=2)  # noqa: E731
        maps.append(np.concatenate([(skin.linear_to_srgb(small) * 255).astype(np.uint8), grey(tex.bump),
                                    grey(tex.roughness), grey(tex.specular), grey(tex.nail_mask)], axis=1))
        print(f"seed {seed}: tone {tex.tone:.2f}, subsurface radius {np.round(tex.subsurface_radius, 2)} mm")
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out_dir / "standin_hand.png")
    Image.fromarray(np.concatenate(maps, axis=0)).save(out_dir / "skin_textures.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs"))
