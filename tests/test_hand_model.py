"""The generated stand-in hand: MANO schema, smplx code path, parts, symmetry, proportions."""

from __future__ import annotations

import numpy as np
import pytest
import smplx
import torch
import trimesh

from handsynth.hand_model import mano_files
from handsynth.hand_model.model import HandModel
from handsynth.hand_model.parts import boundary_loops
from handsynth.keypoints import TIP_VERTEX_IDS


def random_params(n: int, seed: int = 0, scale: float = 0.35) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "global_orient": rng.normal(0, 1.0, (n, 3)),
        "hand_pose": rng.normal(0, scale, (n, 45)),
        "betas": rng.normal(0, 1.0, (n, 10)),
        "transl": rng.normal(0, 0.1, (n, 3)),
    }


def test_models_load_through_smplx_and_give_21_keypoints(each_hand_model):
    hand_model = each_hand_model
    assert all(isinstance(layer, smplx.MANO) for layer in hand_model.layers.values())
    if hand_model.is_standin:
        assert "stand-in" in hand_model.name
    else:  # the MANO-like pickles, read as real MANO: the left file's shapedirs bug is fixed
        assert hand_model.identity["kind"] == "mano" and hand_model.identity["left_shapedirs_fixed"]
    out = hand_model.forward_numpy("right", random_params(8))
    assert out.vertices.shape == (8, 778, 3)
    assert out.joints.shape == (8, 16, 3)
    assert out.keypoints.shape == (8, 21, 3)
    tips = out.vertices[:, list(TIP_VERTEX_IDS.values())]
    assert torch.equal(out.keypoints[:, 16:], tips)
    # the model is open at the wrist like MANO: a disc of 778 vertices with one boundary loop of L,
    # F = 2V - 2 - L; the surface the pipeline sees is closed by a cap of L - 2 triangles: F = 2V - 4
    loops = boundary_loops(hand_model.open_faces("right"), "model")
    assert len(loops) == 1 and 12 <= len(loops[0]) <= 20 and np.array_equal(loops[0], hand_model.wrist_loop("right"))
    assert len(hand_model.open_faces("right")) == 2 * 778 - 2 - len(loops[0])
    assert len(hand_model.faces("right")) == 2 * 778 - 4


def test_generated_arrays_match_the_mano_schema(hand_model):
    arrays = mano_files.read_mano_file(hand_model.identity["source"] + "/MANO_RIGHT.npz")
    mano_files.validate_mano_arrays(arrays, "stand-in")
    assert np.allclose(arrays["weights"].sum(axis=1), 1.0)
    assert list(arrays["kintree_table"][0, 1:]) == [0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    # the regressor reproduces the designed skeleton from the surface
    assert np.abs(arrays["J_regressor"] @ arrays["v_template"] - arrays["J"]).max() < 5e-4
    comps = arrays["hands_components"]
    assert np.allclose(comps @ comps.T, np.eye(45), atol=1e-6)
    # ten independent shape directions
    assert np.linalg.matrix_rank(arrays["shapedirs"].reshape(-1, 10), tol=1e-6) == 10
    # skin blends across joints: a band of vertices is shared between bones
    assert (arrays["weights"].max(axis=1) < 0.9).sum() > 60


def test_part_labels_cover_every_vertex_and_part_meshes_are_watertight(each_hand_model):
    hand_model = each_hand_model
    labels = hand_model.part_labels
    assert labels.shape == (778,) and set(np.unique(labels)) == set(range(16))
    for side in ("right", "left"):
        meshes = hand_model.part_meshes(side)
        covered = np.unique(np.concatenate([p.vertex_ids for p in meshes]))
        assert len(covered) == 778
        verts = hand_model.forward_numpy(side, random_params(4, seed=3)).vertices.numpy()
        for b in range(4):
            for p in meshes:
                m = trimesh.Trimesh(p.posed_numpy(verts[b]), p.faces, process=False)
                assert m.is_watertight and m.is_winding_consistent, (side, p.part)
                assert m.volume > 0, (side, p.part)
    for side in ("right", "left"):  # the whole surface, its wrist capped, and the wrist cap is the palm's
        whole = trimesh.Trimesh(hand_model.forward_numpy(side, random_params(1, seed=4)).vertices[0].numpy(),
                                hand_model.faces(side), process=False)
        assert whole.is_watertight and whole.is_winding_consistent and whole.volume > 0, side
        cap = hand_model.faces(side)[len(hand_model.open_faces(side)):]
        assert np.isin(cap, hand_model.wrist_loop(side)).all() and (hand_model.face_labels[side][-len(cap):] == 0).all()


def test_left_hand_is_the_mirror_of_the_right(each_hand_model):
    hand_model = each_hand_model
    p = random_params(6, seed=5)
    m = np.array([1.0, -1.0, -1.0])
    left = {
        "global_orient": p["global_orient"] * m,
        "hand_pose": p["hand_pose"] * np.tile(m, 15),
        "betas": p["betas"],
        "transl": p["transl"] * np.array([-1.0, 1.0, 1.0]),
    }
    r = hand_model.forward_numpy("right", p)
    l = hand_model.forward_numpy("left", left)
    mirrored = r.vertices.numpy() * np.array([-1.0, 1.0, 1.0])
    assert np.abs(l.vertices.numpy() - mirrored).max() < 1e-5
    lmesh = trimesh.Trimesh(l.vertices[0].numpy(), hand_model.faces("left"), process=False)
    assert lmesh.volume > 0  # re-wound faces keep normals outward


def test_rest_proportions_are_adult_human(each_hand_model):
    hand_model = each_hand_model
    kp = hand_model.rest_keypoints("right") * 1000.0  # mm
    wrist, middle_mcp, middle_tip = kp[0], kp[4], kp[18]
    assert 175 < np.linalg.norm(middle_tip - wrist) < 200      # wrist to middle fingertip
    assert 85 < np.linalg.norm(middle_mcp - wrist) < 100        # palm a little over half
    chains = {"index": (1, 2, 3, 17), "middle": (4, 5, 6, 18), "ring": (10, 11, 12, 19),
              "pinky": (7, 8, 9, 20), "thumb": (13, 14, 15, 16)}
    for name, (a, b, c, tip) in chains.items():
        bones = [np.linalg.norm(kp[x] - kp[y]) for x, y in ((a, b), (b, c), (c, tip))]
        assert all(12 < L < 55 for L in bones), (name, bones)
    # the tip keypoint is a surface vertex just beyond the distal joint
    assert np.linalg.norm(kp[18] - kp[6]) > 20


def test_shape_space_changes_size_and_keeps_joint_consistency(each_hand_model):
    hand_model = each_hand_model
    base = random_params(1, seed=9)
    base["betas"][:] = 0
    big = {k: v.copy() for k, v in base.items()}
    big["betas"][0, 0] = 2.0
    a = hand_model.forward_numpy("right", base).keypoints[0].numpy()
    b = hand_model.forward_numpy("right", big).keypoints[0].numpy()
    la, lb = np.linalg.norm(a[18] - a[0]), np.linalg.norm(b[18] - b[0])
    assert 1.08 < lb / la < 1.16  # +2 std of overall size is about +12 %


def test_standin_generation_is_deterministic_and_cached_by_build_key(hand_model, tmp_path):
    from handsynth.hand_model import standin

    regenerated = HandModel.standin(cache_dir=tmp_path)
    assert regenerated.identity["digest"] == hand_model.identity["digest"]
    # a cached copy made by other generator code (another build key) is made again
    path = tmp_path / standin.STANDIN_VERSION / "MANO_RIGHT.npz"
    stale = dict(mano_files.read_mano_file(path), build_key=np.array("other code"))
    stale["posedirs"] = np.zeros_like(stale["posedirs"])
    mano_files.write_npz(path, stale)
    again = HandModel.standin(cache_dir=tmp_path)
    assert str(mano_files.read_mano_file(path)["build_key"]) == standin.build_key()
    assert again.identity["digest"] == hand_model.identity["digest"]


def test_skeleton_only_keypoints_match_the_skinned_mesh(each_hand_model):
    """Exact where the tips ride their distal bone alone (the stand-in: no correctives there); MANO's
    tips also carry pose correctives, which the skeleton-only path skips."""
    p = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in random_params(16, seed=11).items()}
    for side in ("right", "left"):
        full = each_hand_model.forward(side, p["global_orient"], p["hand_pose"], p["betas"], p["transl"]).keypoints
        fast = each_hand_model.keypoints_fk(side, p["global_orient"], p["hand_pose"], p["betas"], p["transl"])
        tips = (full - fast)[:, 16:].norm(dim=-1) * 1000.0
        print(each_hand_model.name, side, f"tips: median {tips.median():.2f} mm, max {tips.max():.2f} mm")
        assert (full - fast)[:, :16].abs().max() < 1e-5, side
        assert tips.max() < (0.01 if each_hand_model.is_standin else 5.0), side


def test_missing_webxr_hand_names_the_file_and_the_fetch_script(tmp_path, monkeypatch):
    from handsynth.hand_model import standin

    monkeypatch.setenv("IH_ASSETS_DIR", str(tmp_path / "assets"))
    with pytest.raises(FileNotFoundError, match=r"assets/webxr-input-profiles-assets-1\.0\.20/.*right\.glb.*scripts/fetch_assets\.sh"):
        standin.generate_standin_model()
    (tmp_path / "bad.glb").write_bytes(b"not a glb file at all, just some bytes")
    with pytest.raises(ValueError, match="bad.glb: not a binary glTF"):
        standin.generate_standin_model(tmp_path / "bad.glb")


def test_standin_fingers_taper(hand_model):
    """The fingers are thinner at the middle of their distal phalanx than of their proximal one."""
    v = hand_model.layers["right"].v_template.numpy()
    kp = hand_model.rest_keypoints("right")
    labels = hand_model.part_labels

    def radius(part: int, start: np.ndarray, end: np.ndarray) -> float:
        axis = (end - start) / np.linalg.norm(end - start)
        rel = v[labels == part] - (start + end) / 2
        along = rel @ axis
        ring = rel[np.abs(along) < 0.003] - np.outer(along[np.abs(along) < 0.003], axis)
        return float(np.median(np.linalg.norm(ring, axis=1)))

    for first, tip in ((1, 17), (4, 18), (10, 19), (7, 20)):
        base = radius(first, kp[first], kp[first + 1])
        end = radius(first + 2, kp[first + 2], kp[tip])
        assert 0.004 < end < 0.85 * base < 0.012, (first, base, end)


# ---- fixed-shape fast path (HandModel.shaped / posed) ----------------------------------------

def _torch_params(n: int, seed: int) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in random_params(n, seed=seed, scale=0.5).items()}


@pytest.mark.parametrize("side", ["right", "left"])
def test_posed_equals_the_smplx_forward_and_joint_transforms(each_hand_model, side):
    hand_model = each_hand_model
    from smplx.lbs import batch_rigid_transform

    p = _torch_params(8, seed=21)
    ref = hand_model.forward(side, p["global_orient"], p["hand_pose"], p["betas"], p["transl"])
    shaped = hand_model.shaped(side, p["betas"])
    verts, rel = hand_model.posed(side, shaped, p["global_orient"], p["hand_pose"], p["transl"])
    assert verts.shape == (8, 778, 3) and rel.shape == (8, 16, 4, 4)
    assert verts.dtype == rel.dtype == torch.float32
    posed_joints, jt_rel, rest_joints = hand_model.joint_transforms(side, p["global_orient"], p["hand_pose"], p["betas"])
    # smplx's own sequential chain, the reference for the level-parallel one
    layer = hand_model.layers[side]
    rot = hand_model._rotations(side, p["global_orient"], p["hand_pose"])
    sj, srel = batch_rigid_transform(rot, rest_joints, layer.parents)
    errs = {"vertices": (verts - ref.vertices).abs().max().item(),
            "rel": (rel - jt_rel).abs().max().item(),
            "rel_smplx": (rel - srel).abs().max().item(),
            "joints": (posed_joints + p["transl"][:, None] - ref.joints).abs().max().item(),
            "rest_joints": (shaped.rest_joints - rest_joints).abs().max().item()}
    print(side, errs)
    assert all(e < 1e-5 for e in errs.values()), errs
    assert torch.allclose(jt_rel, srel, atol=1e-6) and torch.allclose(posed_joints, sj, atol=1e-6)


@pytest.mark.parametrize("side", ["right", "left"])
def test_posed_gradients_equal_the_smplx_forward(each_hand_model, side):
    hand_model = each_hand_model
    p = _torch_params(8, seed=22)
    w = torch.randn(8, 778, 3, generator=torch.Generator().manual_seed(5))
    shaped = hand_model.shaped(side, p["betas"])
    grads = []
    for fast in (False, True):
        x = {k: p[k].clone().requires_grad_(True) for k in ("global_orient", "hand_pose", "transl")}
        if fast:
            verts, _ = hand_model.posed(side, shaped, x["global_orient"], x["hand_pose"], x["transl"])
        else:
            verts = hand_model.forward(side, x["global_orient"], x["hand_pose"], p["betas"], x["transl"]).vertices
        (verts * w).sum().backward()
        grads.append({k: v.grad for k, v in x.items()})
    for k in grads[0]:
        err = (grads[0][k] - grads[1][k]).abs().max().item()
        print(side, k, "max grad error", err, "max |grad|", grads[0][k].abs().max().item())
        assert torch.allclose(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-6), (k, err)


def test_posed_accepts_one_shape_for_the_whole_batch(each_hand_model):
    hand_model = each_hand_model
    p = _torch_params(4, seed=23)
    p["betas"][:] = p["betas"][:1]
    one = hand_model.shaped("right", p["betas"][:1])
    v1, r1 = hand_model.posed("right", one, p["global_orient"], p["hand_pose"], p["transl"])
    v4, r4 = hand_model.posed("right", hand_model.shaped("right", p["betas"]), p["global_orient"], p["hand_pose"], p["transl"])
    assert torch.allclose(v1, v4, atol=1e-7) and torch.allclose(r1, r4, atol=1e-7)


def test_level_chain_handles_any_tree_order():
    """A tree whose level-by-level order is not the index order, against smplx's chain."""
    from smplx.lbs import batch_rigid_transform, batch_rodrigues

    from handsynth.hand_model.model import ChainLevels, level_rigid_transform

    parents = torch.tensor([-1, 0, 1, 0, 2, 3, 3, 6])
    chain = ChainLevels.from_parents(parents)
    assert [idx.tolist() for idx, _ in chain.levels] == [[1, 3], [2, 5, 6], [4, 7]] and chain.inverse is not None
    g = torch.Generator().manual_seed(0)
    rot = batch_rodrigues(torch.randn(3 * 8, 3, generator=g)).view(3, 8, 3, 3)
    joints = torch.randn(3, 8, 3, generator=g)
    ref_joints, ref_rel = batch_rigid_transform(rot, joints, parents)
    fast_joints, fast_rel = level_rigid_transform(rot, joints, parents, chain)
    assert torch.allclose(fast_joints, ref_joints, atol=1e-6) and torch.allclose(fast_rel, ref_rel, atol=1e-6)
    with pytest.raises(ValueError):
        ChainLevels.from_parents(torch.tensor([-1, 2, 0]))


def test_depths_with_precomputed_transforms_equal_the_default(hand_model):
    from handsynth import penetration as pen
    from tests.test_optimization import _interpenetrating_poses

    field = pen.PenetrationField(hand_model)
    hands = _interpenetrating_poses(hand_model, 4, seed=5)
    verts, rels = {}, {}
    for s in hands:
        verts[s], rels[s] = hand_model.posed(s, hand_model.shaped(s, hands[s]["betas"]), hands[s]["global_orient"],
                                             hands[s]["hand_pose"], hands[s]["transl"])
    fresh, given = field.depths(hands, verts), field.depths(hands, verts, transforms=rels)
    assert any(bool((fresh[s] > 0).any()) for s in fresh)      # the sample really interpenetrates
    for s in fresh:
        err = (fresh[s] - given[s]).abs().max().item()
        print(s, "depth difference", err, "deepest", fresh[s].max().item())
        assert err <= 1e-7, (s, err)


def test_posed_pose_correctives_match_smplx(hand_model):
    """The fast path with denser correctives than the stand-in's: a copy with random ones on every
    vertex and feature, of MANO's magnitude (a few mm over the 135 pose features)."""
    import copy

    model = copy.deepcopy(hand_model)
    g = torch.Generator().manual_seed(7)
    for layer in model.layers.values():
        layer.posedirs.copy_(torch.randn(layer.posedirs.shape, generator=g) * 2e-3)
    model._skin.clear()                                          # arrays cached from the old posedirs
    p = _torch_params(8, seed=24)
    w = torch.randn(8, 778, 3, generator=g)
    for side in ("right", "left"):
        grads = []
        for fast in (False, True):
            x = {k: p[k].clone().requires_grad_(True) for k in ("global_orient", "hand_pose", "transl")}
            if fast:
                verts, _ = model.posed(side, model.shaped(side, p["betas"]), x["global_orient"], x["hand_pose"], x["transl"])
            else:
                verts = model.forward(side, x["global_orient"], x["hand_pose"], p["betas"], x["transl"]).vertices
            (verts * w).sum().backward()
            grads.append((verts.detach(), {k: v.grad for k, v in x.items()}))
        (ref, gref), (fast, gfast) = grads
        moved = (ref - hand_model.forward(side, p["global_orient"], p["hand_pose"], p["betas"], p["transl"]).vertices).abs().max()
        err = (ref - fast).abs().max().item()
        print(side, "correctives move vertices up to", moved.item(), "max vertex error", err,
              {k: (gref[k] - gfast[k]).abs().max().item() for k in gref})
        assert moved > 1e-3 and err < 1e-5
        for k in gref:
            assert torch.allclose(gfast[k], gref[k], rtol=1e-4, atol=1e-6), k
