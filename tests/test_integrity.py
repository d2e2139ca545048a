"""Every stored object is verifiable: ``ih-pipeline verify`` names each damaged object of a bucket
(pose table, PNG inside a render block, annotation table) or of an export, and exits non-zero;
a re-run of the main job re-makes exactly the damaged shard's assets, after which the bucket
verifies again."""

import hashlib
import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, MetadataValue, asset, instance_for_test, materialize

from handsynth import verify
from handsynth.render.blocks import BlockIndex, BlockWriter, block_key, read_member, sample_name, store_index
from handsynth.storage import IntegrityError, MemoryStore
from ih_assets import versions
from ih_assets.cli import main as cli_main
from resources.io_managers import WRITTEN_OBJECTS, ObjectStoreIOManager, recorded_objects
from tests.s3_fixtures import s3_storage, seaweed_server  # noqa: F401  (fixture)
from tests.test_main_job import ROOT, main_job_env, shard_lines

JPEG = b"\xff\xd8jpeg" * 50
PNGS = {"rgb": b"\x89PNG rgb" * 70, "label": b"labels" * 30, "depth": b"depth" * 200}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _memory_bucket(name: str, blocks: int = 2) -> MemoryStore:
    """A prefix ``p`` holding one shard: ``blocks`` render blocks of two images each and the
    annotation table locating them (the columns the verification reads)."""
    store, rows = MemoryStore(name), []
    for b in range(blocks):
        key = block_key("p", "shard=00000", f"d{b}")
        writer = BlockWriter(store, key)
        block_rows = [{"image_id": f"d{b}/aug00/v{v:02d}", **writer.add(f"d{b}/aug00/v{v:02d}", PNGS, b"{}")} for v in range(2)]
        size, sha = writer.commit()
        store_index(store, BlockIndex(key, size, sha, "digest", 1.0, 2.0, "host:1", block_rows))
        rows += block_rows
    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf)
    store.put_bytes("p/annotations/shard=00000.parquet", buf.getvalue())
    return store


def truncate_member(store, tar_key: str, suffix: str = "png") -> str:
    """Rewrite the tar at ``tar_key`` with its first member of WebDataset suffix ``suffix`` (the
    RGB PNG by default) cut to half its bytes: a valid tar whose PNG is truncated. -> its name."""
    out, cut = io.BytesIO(), None
    with tarfile.open(fileobj=io.BytesIO(store.get_bytes(tar_key))) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if cut is None and member.name.partition(".")[2] == suffix:
                cut, data = member.name, data[: len(data) // 2]
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    assert cut is not None, f"no member *{suffix} in {tar_key}"
    store.put_bytes(tar_key, out.getvalue())
    return cut


def _problems(source: str, records=None) -> list[str]:
    return list(verify.verify_source(source, records, verify.Tally()))


def test_verify_names_the_damaged_image_of_a_block_and_an_unreferenced_block():
    store = _memory_bucket("verify-blocks")
    assert _problems("memory://verify-blocks/p") == []
    tar = block_key("p", "shard=00000", "d1")
    member = truncate_member(store, tar)
    problems = _problems("memory://verify-blocks/p")
    assert problems[0].startswith(f"memory://verify-blocks/{tar}: stored object corrupted: expected ")
    assert any("(rgb image of d1/aug00/v00 at byte" in p and "found" in p for p in problems), problems
    assert member == sample_name("d1/aug00/v00") + ".png"
    # the training reader and the exports read through read_member: the same image is refused
    table = pd.read_parquet(io.BytesIO(store.get_bytes("p/annotations/shard=00000.parquet")))
    with pytest.raises(IntegrityError, match=r"d1\.tar \(rgb image of d1/aug00/v00 at byte \d+\): stored object corrupted"):
        read_member(store, table.iloc[2].to_dict(), "rgb")

    # a tar that ends inside a member: the same one-line error, naming the image
    last = table.iloc[-1].to_dict()
    store.put_bytes(last["tar_key"], store.get_bytes(last["tar_key"])[: last["depth_offset"] + 10])
    with pytest.raises(IntegrityError, match=rf"d1\.tar \(depth image of d1/aug00/v01 at byte \d+\): stored object corrupted: "
                                             rf"expected {len(PNGS['depth'])} bytes sha256 [0-9a-f]{{64}}, found 10 bytes$"):
        read_member(store, last, "depth")

    store.put_bytes(block_key("p", "shard=00000", "extra"), b"left over")
    assert any(p.endswith("extra.tar: a block no image row references (memory://verify-blocks/p/annotations/"
                          "shard=00000.parquet)") for p in _problems("memory://verify-blocks/p"))


def test_the_planner_names_each_damaged_block_of_a_stored_table_once(monkeypatch):
    store = _memory_bucket("planner-blocks")
    data = store.get_bytes("p/annotations/shard=00000.parquet")
    meta = {"key": "p/annotations/shard=00000.parquet", "bytes": len(data), "sha256": sha256(data)}
    assert versions.stored_blocks_problem(store, meta) is None
    for block in ("d0", "d1"):
        truncate_member(store, block_key("p", "shard=00000", block))
    monkeypatch.setattr(versions, "SHOWN_PROBLEMS", 1)
    problem = versions.stored_blocks_problem(store, meta)
    assert problem.startswith("render blocks damaged: memory://planner-blocks/p/render/shard=00000/d0.tar: stored object "
                              "corrupted: expected ") and problem.endswith("; and 1 more blocks"), problem
    assert "image of" not in problem       # the images' problems follow from the tar's


def test_verify_checks_recorded_objects():
    store = _memory_bucket("verify-records", blocks=1)
    data = store.get_bytes("p/annotations/shard=00000.parquet")
    record = verify.Record("annotations[shard=00000]", "p/annotations/shard=00000.parquet", len(data),
                           sha256(data))
    assert _problems("memory://verify-records/p", lambda s, p: [record]) == []
    store.put_bytes(record.key, data[:-10])
    assert _problems("memory://verify-records/p", lambda s, p: [record])[0] == (
        f"memory://verify-records/{record.key}: stored object corrupted: expected {len(data)} bytes sha256 "
        f"{record.sha256}, found {len(data) - 10} bytes (recorded by annotations[shard=00000])")


def test_objects_an_asset_writes_besides_its_output_are_recorded_and_verified(tmp_path):
    """Like the environment-map library: the asset records them, verify and the planner check them."""
    store = MemoryStore("written-objects")

    @asset(io_manager_key="io_manager")
    def library(context) -> dict:
        store.put_bytes("p/library/a.hdr", b"map a" * 100)
        context.add_output_metadata({WRITTEN_OBJECTS: MetadataValue.json(
            {"p/library/a.hdr": {"bytes": 500, "sha256": sha256(b"map a" * 100)}})})
        return {"a": "p/library/a.hdr"}

    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert materialize([library], instance=instance, resources={"io_manager": ObjectStoreIOManager(store, "p")}).success
        records = list(recorded_objects(instance, store))
        assert [(r.what, r.key) for r in records] == [("library", "p/library/all.json"),
                                                       ("library, written besides its output", "p/library/a.hdr")]
        meta = instance.fetch_materializations(AssetKey("library"), limit=1).records[0].asset_materialization.metadata
        assert list(verify.verify_records(store, records, verify.Tally())) == []
        assert versions.stored_object_problem(store, meta) is None
        store.put_bytes("p/library/a.hdr", b"map a" * 50)
        [problem] = verify.verify_records(store, records, verify.Tally())
        assert problem.startswith("memory://written-objects/p/library/a.hdr: stored object corrupted: expected 500 bytes")
        assert problem.endswith("found 250 bytes (recorded by library, written besides its output)")
        assert versions.stored_object_problem(store, meta) == (
            "stored object corrupted (250 bytes, recorded 500: memory://written-objects/p/library/a.hdr)")


def _export(root: Path) -> None:
    """A small export folder as the exports write it: files, then ``SHA256SUMS`` listing them."""
    files = {"annotations/train/data.json": b'{"images": []}', "images/train/image00000.jpg": JPEG,
             "sub dir/name with spaces.txt": b"x"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / verify.SUMS_FILE).write_text("".join(f"{sha256(d)}  {p}\n" for p, d in files.items()))


def test_verify_an_export_folder_against_its_sha256sums(tmp_path, capsys):
    _export(tmp_path / "interhand26m")
    _export(tmp_path / "intaghand")
    assert cli_main(["verify", "--source", str(tmp_path)]) == 0
    assert "checked 6 objects" in capsys.readouterr().out
    if subprocess.run(["sha256sum", "--version"], capture_output=True).returncode == 0:   # the format is sha256sum's
        assert subprocess.run(["sha256sum", "-c", "--quiet", verify.SUMS_FILE], cwd=tmp_path / "intaghand").returncode == 0

    image = tmp_path / "intaghand/images/train/image00000.jpg"
    image.write_bytes(image.read_bytes()[:100])                       # truncated
    (tmp_path / "interhand26m/annotations/train/data.json").unlink()    # missing
    (tmp_path / "interhand26m/planted.txt").write_text("not listed")
    assert cli_main(["verify", "--source", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path}/intaghand/images/train/image00000.jpg: sha256 differs from {tmp_path}/intaghand/" \
                     f"SHA256SUMS: expected {sha256(JPEG)}, found {sha256(JPEG[:100])} (100 bytes)"
    assert out[1].startswith(f"{tmp_path}/interhand26m/annotations/train/data.json: missing (listed in ")
    assert out[2] == f"{tmp_path}/interhand26m: 1 file(s) not listed in {tmp_path}/interhand26m/SHA256SUMS " \
                     "(the folder holds 3 files besides it, 2 of them listed)"
    assert out[3].startswith("checked 6 objects") and out[3].endswith(": 3 problem(s)")

    _export(tmp_path / "intaghand")                                    # a re-export repairs it
    assert cli_main(["verify", "--source", str(tmp_path / "intaghand")]) == 0


def test_verify_an_export_stored_in_a_bucket():
    store = MemoryStore("stored-export")
    files = {"annotations/train/data.json": b"{}", "images/train/image00000.jpg": JPEG}
    for rel, data in files.items():
        store.put_bytes(f"p/exports/ih/{rel}", data)
    store.put_bytes("p/exports/ih/SHA256SUMS", "".join(f"{sha256(d)}  {r}\n" for r, d in files.items()).encode())
    assert _problems("memory://stored-export/p/exports/ih") == []
    store.put_bytes("p/exports/ih/images/train/image00000.jpg", JPEG[:-1])
    assert _problems("memory://stored-export/p/exports/ih") == [
        f"memory://stored-export/p/exports/ih/images/train/image00000.jpg: sha256 differs from memory://stored-export/"
        f"p/exports/ih/SHA256SUMS: expected {sha256(JPEG)}, found {sha256(JPEG[:-1])} ({len(JPEG) - 1} bytes)"]


@pytest.mark.parametrize("line", ["abc  x.jpg", f"{'0' * 64}  ../etc/passwd", f"{'0' * 64}  /etc/passwd", f"{'0' * 64}x.jpg"])
def test_a_bad_sums_line_is_one_problem_naming_the_line(line):
    with pytest.raises(ValueError, match=r"^SUMS line 7: "):
        verify.parse_sums_line(line, "SUMS line 7")


def _cli_verify(capsys, source: str) -> tuple[int, list[str]]:
    """``ih-pipeline verify --source source`` in this process (the test's environment names the
    instance and the server) -> exit code and stdout lines."""
    capsys.readouterr()
    code = cli_main(["verify", "--source", source])
    return code, capsys.readouterr().out.splitlines()


def _main_job(env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", "ih_assets.main_job"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)  # minutes on a loaded machine
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _made_since(home: Path, t0: float) -> dict[tuple[str, str | None], dict]:
    """``(asset, shard) -> metadata`` of every materialization after ``t0``."""
    made = {}
    with DagsterInstance.from_config(str(home)) as instance:
        for key in instance.get_asset_keys():
            for rec in instance.fetch_materializations(AssetRecordsFilter(asset_key=key, after_timestamp=t0),
                                                       limit=100).records:
                made[(key.to_user_string(), rec.partition_key)] = rec.asset_materialization.metadata
    return made


def test_damaged_objects_are_found_and_exactly_their_work_redone(seaweed_server, tmp_path, capsys,  # noqa: F811
                                                                monkeypatch):
    bucket, home = "integrity-test", tmp_path / "home"
    env = main_job_env(seaweed_server, home, bucket)
    for name in ("DAGSTER_HOME", "IH_S3_ENDPOINT", "IH_ENV"):
        monkeypatch.setenv(name, env[name])
    store = s3_storage(seaweed_server).model_copy(update={"bucket": bucket}).object_store()
    source = f"s3://{bucket}/renderih"
    _main_job(env)
    code, lines = _cli_verify(capsys, source)
    assert code == 0 and lines[-1].endswith(": OK"), lines
    shards = sorted({k.split("/")[2] for k in store.list_keys("renderih/render/")})
    assert len(shards) == 3

    # damage one object of each kind, each in its own shard
    pose, tar, table = shards
    [pose_key] = store.list_keys(f"renderih/optimized_poses/{pose}.")
    pose_bytes = store.size(pose_key)
    store.put_bytes(pose_key, store.get_bytes(pose_key)[:-100])
    tar_key = next(k for k in store.list_keys(f"renderih/render/{tar}/") if k.endswith(".tar"))
    member = truncate_member(store, tar_key)
    table_key = f"renderih/annotations/{table}.parquet"
    store.put_bytes(table_key, store.get_bytes(table_key)[: len(store.get_bytes(table_key)) // 2])

    code, lines = _cli_verify(capsys, source)
    assert code == 1 and lines[-1].endswith("problem(s)"), lines
    named = lambda key, text: any(l.startswith(f"s3://{bucket}/{key}") and text in l for l in lines)  # noqa: E731,E741
    assert named(pose_key, "stored object corrupted: expected ") and named(pose_key, f"(recorded by optimized_poses[{pose}])")
    assert named(tar_key, ": stored object corrupted: expected ")
    assert named(tar_key, " (rgb image of ") and member.endswith(".png")
    assert named(table_key, f"(recorded by annotations[{table}])") and named(table_key, "not a readable annotation table")

    t0 = time.time()
    out = _main_job(env)
    assert "unpartitioned assets up to date" in out
    plans = shard_lines(out)
    assert set(plans) == {pose, tar, table}, out
    assert plans[pose].startswith(f"optimized_poses (stored object corrupted ({pose_bytes - 100} bytes, recorded "
                                  f"{pose_bytes}: s3://{bucket}/{pose_key}))"), plans[pose]
    assert "rendered_views (upstream optimized_poses is re-materialized)" in plans[pose], plans[pose]
    assert plans[tar].startswith(f"rendered_views (render blocks damaged: s3://{bucket}/{tar_key}: stored object corrupted")
    assert plans[tar].endswith("annotations (upstream rendered_views is re-materialized)"), plans[tar]
    assert plans[table].startswith("annotations (stored object corrupted (") and "rendered_views" not in plans[table]
    made = _made_since(home, t0)
    assert {k for k in made if k[1] is not None} == {("optimized_poses", pose), ("rendered_views", pose),
                                                     ("annotations", pose), ("rendered_views", tar),
                                                     ("annotations", tar), ("annotations", table)}, sorted(made)
    assert made[("rendered_views", pose)]["blocks_rendered"].value == 0      # same poses: every block still current
    assert made[("rendered_views", tar)]["blocks_rendered"].value == 1       # only the damaged block
    assert made[("rendered_views", tar)]["blocks_skipped"].value == made[("rendered_views", tar)]["blocks"].value - 1

    code, lines = _cli_verify(capsys, source)
    assert code == 0 and lines[-1].endswith(": OK"), lines
