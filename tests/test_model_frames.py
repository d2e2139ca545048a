"""Anatomical joint frames read the same way on the stand-in and on the MANO-like test model.

The stand-in's ``hands_mean`` is built in these very frames (pure bends), so on it alone the
readings below would hold by construction; the MANO-like model's relaxed pose is data-like,
made in the model's raw axes, as real MANO's is.
"""

from __future__ import annotations

import numpy as np
import torch

from handsynth import joint_limits as jl


def _frames(model) -> jl.AnatomicalFrames:
    return jl.AnatomicalFrames(jl.AnatomicalFrames.from_rest_keypoints(model.rest_keypoints("right")).frames.double())


def test_a_bend_about_the_frames_bend_axis_reads_back_and_flexes_toward_the_palm(each_hand_model):
    frames = _frames(each_hand_model)
    rest = each_hand_model.rest_keypoints("right")
    volar = np.cross(rest[1] - rest[0], rest[7] - rest[0])
    volar /= np.linalg.norm(volar)
    for joint, tip in ((0, 17), (4, 18), (13, 16)):                  # index MCP, middle PIP, thumb MCP
        pose = torch.zeros(1, 15, 3, dtype=torch.float64)
        pose[0, joint] = frames.frames[joint][:, 0] * np.deg2rad(37.0)
        angles = torch.rad2deg(jl.joint_angles(pose.reshape(1, 45), frames))[0, joint]
        assert torch.allclose(angles, torch.tensor([37.0, 0.0, 0.0], dtype=torch.float64), atol=1e-6)
        hand_pose = pose.reshape(1, 45).float() - each_hand_model.hands_mean("right")
        z = torch.zeros(1, 3)
        moved = each_hand_model.forward("right", z, hand_pose, torch.zeros(1, 10), z).keypoints[0, tip].numpy()
        assert (moved - rest[tip]) @ volar > 0.005, jl.JOINT_NAMES[joint]


def test_the_relaxed_pose_reads_as_a_slightly_flexed_hand(each_hand_model):
    """``hands_mean`` of both models bends every finger joint a little; the MANO-like one also
    carries twist and splay of a few degrees, as real MANO's does."""
    full = each_hand_model.full_finger_pose("right", torch.zeros(1, 45)).double()
    angles = torch.rad2deg(jl.joint_angles(full, _frames(each_hand_model)))[0].numpy()   # (15, 3)
    print(each_hand_model.name, "relaxed pose (bend, splay, twist):", np.round(angles, 1).tolist())
    assert (angles[:, 0] > 0).all() and (angles[:, 0] < 40).all()
    off_axis = np.abs(angles[:, 1:]).max()
    if each_hand_model.is_standin:
        assert off_axis < 1e-3
    else:
        assert 1.0 < off_axis < 20.0
