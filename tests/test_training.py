"""The training Dataset and the WebDataset shards over a real (tiny) pipeline output, and the
README's training snippet run as written."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from handsynth.cameras import project
from handsynth.exports import split_of
from handsynth.render.raster import decode_png
from handsynth.training import FolderReader, RenderIHDataset, load_annotation_tables, open_source
from tests.pipeline_output import PREFIX, pipeline_output

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def output():
    return pipeline_output()


def test_dataset_items_match_the_annotations_and_images(output):
    root, _ = output
    reader, prefix = open_source(str(root))
    assert prefix == PREFIX
    ds = RenderIHDataset(reader, prefix, with_mask=True, with_depth=True)
    table = load_annotation_tables(FolderReader(root), PREFIX)
    assert len(ds) == len(table) > 0
    item = ds[0]
    assert item["image"].shape == (3, 96, 96) and 0 <= item["image"].min() and item["image"].max() <= 1
    rgb = decode_png((root / table["rgb_key"].iloc[0]).read_bytes())
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy() * 255, rgb, atol=1e-3)
    # keypoints are the projection of the 3D camera-frame keypoints with K
    uv = project(item["keypoints3d"].numpy().astype(np.float64) / 1000, item["K"].numpy().astype(np.float64),
                 np.eye(3), np.zeros(3))
    np.testing.assert_allclose(item["keypoints2d"].numpy(), uv, atol=1e-3)
    assert item["mano_pose"].shape == (2, 48) and item["mano_shape"].shape == (2, 10)
    labels, depth = item["mask"].numpy(), item["depth"].numpy()
    assert labels.max() <= 32 and ((labels > 0) == (depth > 0)).mean() > 0.99
    # the depth at a visible keypoint is close to its camera z (mm)
    vis = item["visibility"].numpy().astype(bool)
    u, v = np.clip(np.round(item["keypoints2d"].numpy()[vis]).astype(int), 0, 95).T
    z = item["keypoints3d"].numpy()[vis, 2]
    assert np.median(np.abs(depth[v, u] - z)) < 30


def test_dataset_split_follows_the_distinct_pose_hash(output):
    root, _ = output
    reader, prefix = open_source(str(root))
    everything = RenderIHDataset(reader, prefix)
    parts = {s: RenderIHDataset(reader, prefix, split=s, splits={"train": 0.5, "val": 0.5}) for s in ("train", "val")}
    assert len(parts["train"]) + len(parts["val"]) == len(everything)
    for s, ds in parts.items():
        assert all(split_of(d, {"train": 0.5, "val": 0.5}) == s for d in ds.table["distinct_pose_id"])


def test_webdataset_tar_per_shard_holds_image_labels_and_targets(output):
    root, instance = output
    table = load_annotation_tables(FolderReader(root), PREFIX)
    tars = sorted((root / PREFIX / "webdataset").glob("*.tar"))
    assert [t.stem for t in tars] == sorted(instance.get_dynamic_partitions("pose_shards"))
    samples = {}
    for path in tars:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)  # WebDataset's key/extension split
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    assert len(samples) == len(table)
    row = table.iloc[0]
    sample = samples[str(row["image_id"]).replace("/", "_").replace(".", "_")]
    assert set(sample) == {"png", "label.png", "depth.png", "json"}
    assert sample["png"] == (root / row["rgb_key"]).read_bytes()
    target = json.loads(sample["json"])
    np.testing.assert_allclose(np.array(target["keypoints2d_px"]).ravel(), row["keypoints2d_px"], atol=1e-4)
    assert target["image_id"] == row["image_id"]


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
