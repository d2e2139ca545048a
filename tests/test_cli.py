"""``ih-pipeline``: export to the loaders' folders (JPEG images, SHA256SUMS, progress, no orphans),
preview, delegation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from handsynth.render.blocks import read_member
from handsynth.render.raster import decode_png
from handsynth.storage import LocalStore
from handsynth.training import iter_annotation_tables
from ih_assets import cli
from tests.pipeline_output import PREFIX, pipeline_output

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def output():
    return pipeline_output()


def test_export_builds_every_layout_with_jpeg_images(output, tmp_path, capsys):
    root, _ = output
    assert cli.main(["export", "--source", str(root), "--to", str(tmp_path), "--splits", "train=0.5,val=0.5"]) == 0
    out, err = capsys.readouterr()
    assert "interhand26m:" in out and "intaghand:" in out
    assert "img/s" in err or "it/s" in err or "s/img" in err  # tqdm's rate (and ETA) on stderr
    ih = tmp_path / "interhand26m"
    assert (ih / "annotations" / "skeleton.txt").is_file()
    store = LocalStore(root)
    rows = {r["image_id"]: r for t in iter_annotation_tables(store, PREFIX) for r in t.to_dict("records")}
    n_images = 0
    for split in ("train", "val", "test"):
        data = json.loads((ih / "annotations" / split / f"InterHand2.6M_{split}_data.json").read_text())
        for img in data["images"]:
            with Image.open(ih / "images" / split / img["file_name"]) as jpeg:
                assert jpeg.format == "JPEG"
                pixels = np.asarray(jpeg, dtype=float)
            rendered = decode_png(read_member(store, rows[img["renderih_source"]], "rgb"))[..., :3]
            # the rendered image at JPEG quality 95 (sensor noise, JPEG's hardest content, makes it
            # ~2.4 grey levels at 96 px; another image would differ by tens)
            assert np.abs(pixels - rendered).mean() < 4.0
            n_images += 1
    assert n_images == len(rows) > 0
    anno = sorted((tmp_path / "intaghand").rglob("anno/*.pkl"))
    assert len(anno) == n_images
    for layout in ("interhand26m", "intaghand"):
        check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=tmp_path / layout)
        assert check.returncode == 0


def test_reexport_with_fewer_images_removes_orphans(output, tmp_path):
    root, _ = output
    out = tmp_path / "exp"
    assert cli.main(["export", "--source", str(root), "--to", str(out), "--formats", "intaghand",
                     "--splits", "train=1.0"]) == 0
    before = len(list((out / "intaghand" / "train" / "anno").glob("*.pkl")))
    stale = out / "intaghand" / "train" / "anno" / f"{before + 5}.pkl"
    stale.write_bytes(b"left by an older export")
    summary = cli.export(str(root), str(out), ["intaghand"], {"train": 1.0, "val": 0.0, "test": 0.0})
    assert summary["intaghand"]["orphans_removed"] == 1 and not stale.exists()
    assert len(list((out / "intaghand" / "train" / "anno").glob("*.pkl"))) == before


def test_preview_writes_a_contact_sheet(output, tmp_path):
    root, _ = output
    sheet = tmp_path / "sheet.png"
    assert cli.main(["preview", "--source", str(root), "--out", str(sheet), "-n", "4"]) == 0
    img = np.asarray(Image.open(sheet))
    assert img.shape == (192, 5 * 192, 3)
    assert (img[:, :4 * 192] != 255).any(axis=-1).mean() > 0.5  # four tiles drawn, the fifth slot blank
    assert (img[:, 4 * 192:] == 255).all()


def test_metrics_and_run_delegate(monkeypatch, tmp_path):
    calls = {}
    monkeypatch.setattr("handsynth.metrics_cli.main", lambda argv: calls.setdefault("metrics", argv) and 0)
    monkeypatch.setattr("ih_assets.main_job.main", lambda argv: calls.setdefault("run", argv) and 0)
    cli.main(["metrics", "--pred", "p.npz", "--gt", "g.npz"])
    cli.main(["run", "--refresh", "--shard", "shard=00000"])
    assert calls == {"metrics": ["--pred", "p.npz", "--gt", "g.npz"], "run": ["--refresh", "--shard", "shard=00000"]}


def test_bad_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--source", "x", "--to", "y", "--formats", "coco"])
    assert "unknown format(s) ['coco']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "--source", "x", "--to", "y", "--splits", "train=0.5"])
    assert "sum to 1" in capsys.readouterr().err


def test_console_script_is_declared():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    module, func = project["project"]["scripts"]["ih-pipeline"].split(":")
    assert module == "ih_assets.cli" and getattr(sys.modules[module], func) is cli.main


def test_intaghand_written_by_several_processes_is_the_very_folder_one_writes(output, tmp_path):
    """``--workers 2`` cuts the tables' row groups into runs whose image numbers start where the
    runs before end (IntagHand numbers 0.. per split): every file and ``SHA256SUMS`` come out
    byte-identical to one process's export. Checked on a copy of the store whose tables hold a
    row group per row (runs inside a table), with all images in one split (each run continues the
    numbers of the one before) and in two; an older export's leftovers are still removed."""
    import shutil

    import pyarrow.parquet as pq

    root, _ = output
    tables = list(iter_annotation_tables(LocalStore(root), PREFIX))
    chunked = tmp_path / "chunked"
    shutil.copytree(root, chunked)
    for path in (chunked / PREFIX / "annotations").glob("*.parquet"):
        pq.write_table(pq.read_table(path), path, row_group_size=1)
    assert sum(pq.ParquetFile(p).num_row_groups for p in (chunked / PREFIX / "annotations").glob("*.parquet")) \
        == sum(len(t) for t in tables) >= 4
    for k, splits in enumerate(("train=1.0", "train=0.5,val=0.5")):
        args = ["export", "--formats", "intaghand", "--splits", splits]
        one, two = tmp_path / f"one{k}", tmp_path / f"two{k}"
        assert cli.main(args + ["--source", str(root), "--to", str(one)]) == 0
        stale = two / "intaghand" / "train" / "anno" / "999.pkl"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"left by an older export")
        assert cli.main(args + ["--source", str(chunked), "--to", str(two), "--workers", "2"]) == 0
        files = [{p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()} for d in (one, two)]
        assert files[0] == files[1]
        assert sum(p.endswith(".pkl") for p in files[0]) == sum(len(t) for t in tables)
