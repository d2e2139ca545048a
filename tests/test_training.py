"""The training Dataset over a real (tiny) pipeline output: items, splits, the memory-mapped
index shared by DataLoader workers, and the README's training snippet run as written."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from handsynth.cameras import project
from handsynth.exports import split_of
from handsynth.render.blocks import read_member
from handsynth.render.raster import decode_png
from handsynth.storage import LocalStore, open_store
from handsynth.training import RenderIHDataset, iter_annotation_tables
from tests.pipeline_output import PREFIX, pipeline_output

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def output():
    return pipeline_output()


def _table(root: Path) -> pd.DataFrame:
    return pd.concat(list(iter_annotation_tables(LocalStore(root), PREFIX)), ignore_index=True)


def test_dataset_items_match_the_annotations_and_images(output):
    root, _ = output
    store, prefix = open_store(str(root))
    assert prefix == PREFIX
    ds = RenderIHDataset(store, prefix, with_mask=True, with_depth=True)
    table = _table(root)
    assert len(ds) == len(table) > 0
    assert [ds.image_id(i) for i in range(len(ds))] == list(table["image_id"])
    item = ds[0]
    assert item["image"].shape == (3, 96, 96) and 0 <= item["image"].min() and item["image"].max() <= 1
    rgb = decode_png(read_member(store, table.iloc[0], "rgb"))
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy() * 255, rgb[..., :3], atol=1e-3)
    np.testing.assert_allclose(item["keypoints2d"].numpy().ravel(), table["keypoints2d_px"].iloc[0], atol=1e-3)
    # keypoints are the projection of the 3D camera-frame keypoints with K
    uv = project(item["keypoints3d"].numpy().astype(np.float64) / 1000, item["K"].numpy().astype(np.float64),
                 np.eye(3), np.zeros(3))
    np.testing.assert_allclose(item["keypoints2d"].numpy(), uv, atol=1e-3)
    assert item["mano_pose"].shape == (2, 48) and item["mano_shape"].shape == (2, 10)
    np.testing.assert_allclose(item["mano_pose"][1].numpy(), table["left_mano_pose"].iloc[0])
    labels, depth = item["mask"].numpy(), item["depth"].numpy()
    assert labels.max() <= 36 and ((labels > 0) == (depth > 0)).mean() > 0.99  # 33-36: forearms, sleeves
    # the depth at a visible keypoint is close to its camera z (mm)
    vis = item["visibility"].numpy().astype(bool)
    u, v = np.clip(np.round(item["keypoints2d"].numpy()[vis]).astype(int), 0, 95).T
    z = item["keypoints3d"].numpy()[vis, 2]
    assert np.median(np.abs(depth[v, u] - z)) < 30


def test_dataset_split_follows_the_distinct_pose_hash(output):
    root, _ = output
    store, prefix = open_store(str(root))
    everything = RenderIHDataset(store, prefix)
    fractions = {"train": 0.5, "val": 0.5}
    parts = {s: RenderIHDataset(store, prefix, split=s, splits=fractions) for s in ("train", "val")}
    assert len(parts["train"]) + len(parts["val"]) == len(everything)
    distinct = dict(zip(_table(root)["image_id"], _table(root)["distinct_pose_id"]))
    for s, ds in parts.items():
        assert all(split_of(distinct[ds.image_id(i)], fractions) == s for i in range(len(ds)))


def test_index_is_memory_mapped_and_workers_share_it(output, tmp_path):
    root, _ = output
    store, prefix = open_store(str(root))
    ds = RenderIHDataset(store, prefix, index_dir=tmp_path)
    assert isinstance(ds._records, np.memmap) and ds._records.flags.writeable is False
    state = pickle.dumps(ds)  # what a spawned worker receives: paths, not the records
    assert len(state) < 4096 + len(pickle.dumps(ds._tar_keys))
    clone = pickle.loads(state)
    assert torch.equal(clone[1]["keypoints3d"], ds[1]["keypoints3d"]) and clone.image_id(1) == ds.image_id(1)
    batches = list(DataLoader(ds, batch_size=len(ds), num_workers=2))  # forked workers map the same file
    assert torch.equal(batches[0]["keypoints2d"], torch.stack([ds[i]["keypoints2d"] for i in range(len(ds))]))
    del ds, clone, batches
    import gc

    gc.collect()
    assert not list(tmp_path.iterdir())  # the builder removed its index files


def test_readme_training_snippet_runs(output, monkeypatch):
    root, _ = output
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Training on the data", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setenv("RENDERIH_DATA", str(root))
    scope: dict = {}
    exec(compile(code, "README.md:training", "exec"), scope)
    assert np.isfinite(scope["loss"].item()) and scope["steps"] >= 1
    assert isinstance(scope["model"], torch.nn.Module)
