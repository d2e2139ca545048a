"""Correct re-runs: a settings change re-makes exactly the assets that depend on it (and what is
downstream), the manifest describes what was made, fewer shards leave no orphans; and the
planner's rules (failed blocking check, code version, upstream data version) on a toy graph."""

import json
import re
import subprocess
import sys

import pytest
from dagster import (AssetCheckResult, AssetKey, DagsterInstance, DataVersion, Definitions, Output, asset, asset_check,
                     instance_for_test, materialize)

from ih_assets import versions
from handsynth.training import iter_annotation_tables
from resources.removed_shards import live_materialization
from resources.settings import PRESETS, PipelineSettings
from tests.s3_fixtures import s3_storage, seaweed_server  # noqa: F401  (fixture)
from tests.test_main_job import ROOT, main_job_env, shard_lines


def _run(env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", "ih_assets.main_job"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)  # minutes on a loaded machine
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _images(store) -> int:
    """Images stored: the rows of every shard's annotation table (each locates its render block member)."""
    return sum(len(t) for t in iter_annotation_tables(store, "renderih"))


def _manifest(store) -> dict:
    return json.loads(store.get_bytes(next(k for k in store.list_keys("renderih/dataset_manifest/"))))


def test_settings_change_rerenders_exactly_the_affected_assets(seaweed_server, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    store = s3_storage(seaweed_server).model_copy(update={"bucket": "rerun-test"}).object_store()
    _run(main_job_env(seaweed_server, home, "rerun-test"))
    one_view = _images(store)
    assert one_view > 0 and _manifest(store)["settings"]["n_views"] == 1 and _manifest(store)["images"] == one_view

    out = _run(main_job_env(seaweed_server, home, "rerun-test", IH_N_VIEWS="2"))
    assert "unpartitioned assets up to date" in out
    plans = shard_lines(out)
    assert len(plans) == 3
    for line in plans.values():
        assert "rendered_views (settings changed: n_views 1 -> 2)" in line, line
        assert "annotations (upstream rendered_views is re-materialized)" in line, line
        assert "optimized_poses" not in line and "augmented_poses" not in line, line
    two_views = _images(store)
    assert two_views == 2 * one_view
    manifest = _manifest(store)
    assert manifest["settings"]["n_views"] == 2 and manifest["images"] == two_views

    # fewer poses: fewer shards; the objects and partitions of the vanished shards are deleted
    out = _run(main_job_env(seaweed_server, home, "rerun-test", IH_N_VIEWS="2", IH_N_PROCEDURAL_POSES="3"))
    assert "raw_poses (settings changed: n_procedural_poses 6 -> 3)" in out
    assert re.search(r"removed \d+ objects of shards that no longer exist", out)
    shards = set(_manifest(store)["images_per_shard"])
    assert 0 < len(shards) < 3
    named = {m for k in store.list_keys("renderih/") for m in re.findall(r"shard=\d+", k)}
    assert named == shards, f"orphans of {sorted(named - shards)}"
    assert _images(store) == _manifest(store)["images"]
    with DagsterInstance.from_config(str(home)) as instance:   # Dagster's records follow the deletion
        for key in (AssetKey("augmented_poses"), AssetKey("annotations")):
            live = {s for s in instance.get_materialized_partitions(key) if live_materialization(instance, key, s)}
            assert live == shards, (key, live)


def test_every_setting_is_declared_by_an_asset():
    """A new settings field must say which assets it changes, or re-runs would miss it."""
    declared = {f for name, pats in versions.SETTINGS_FIELDS.items() if name != "dataset_manifest"
                for f in PipelineSettings.model_fields if any(re.fullmatch(p.replace("*", ".*"), f) for p in pats)}
    undeclared = set(PipelineSettings.model_fields) - declared - set(versions.UNVERSIONED_SETTINGS)
    assert undeclared == set()


def test_relevant_settings_and_digest():
    demo, other = PipelineSettings.from_preset("demo"), PipelineSettings.from_preset("demo", n_views=PRESETS["demo"]["n_views"] + 1)
    assert versions.relevant_settings(demo, "rendered_views")["n_views"] == PRESETS["demo"]["n_views"]
    assert "n_views" not in versions.relevant_settings(demo, "optimized_poses")
    digest = lambda s, a: versions.settings_digest(versions.relevant_settings(s, a))  # noqa: E731
    assert digest(demo, "rendered_views") != digest(other, "rendered_views")
    assert digest(demo, "optimized_poses") == digest(other, "optimized_poses")


STATE = {"value": 1, "passes": True}


def _toy(code_version_b: str = "1"):
    @asset(code_version="1")
    def a():
        return Output(STATE["value"], data_version=DataVersion(str(STATE["value"])))

    @asset_check(asset=a, blocking=True)
    def a_is_positive():
        return AssetCheckResult(passed=STATE["passes"])

    @asset(code_version=code_version_b)
    def b(a):
        return a + 1

    return [a, b], [a_is_positive]


def _plan(instance, code_version_b: str = "1") -> dict[str, list[str]]:
    assets, checks = _toy(code_version_b)
    graph = Definitions(assets=assets, asset_checks=checks).resolve_asset_graph()
    plan = versions.reasons_to_materialize(instance, graph, [AssetKey("b"), AssetKey("a")], None, None)
    return {k.to_user_string(): v for k, v in plan.items()}


@pytest.mark.parametrize("case", ["failed_check", "code_version", "upstream_data"])
def test_planner_rules_on_a_toy_graph(case, tmp_path):
    STATE.update(value=1, passes=True)
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert _plan(instance) == {"a": ["never materialized"], "b": ["never materialized"]}
        assets, checks = _toy()
        assert materialize([*assets, *checks], instance=instance).success
        assert _plan(instance) == {}
        if case == "failed_check":
            STATE["passes"] = False
            assert not materialize([*assets, *checks], instance=instance, raise_on_error=False).success
            assert _plan(instance) == {"a": ["blocking check a_is_positive did not pass"],
                                       "b": ["upstream a is re-materialized"]}
        elif case == "code_version":
            assert _plan(instance, code_version_b="2") == {"b": ["code version 1 -> 2"]}
        else:
            assert materialize([assets[0], *checks], instance=instance, selection=["a"]).success
            assert _plan(instance) == {}      # same content, same data version: b is not stale
            STATE["value"] = 5
            assert materialize([assets[0], *checks], instance=instance, selection=["a"]).success
            assert _plan(instance) == {"b": ["upstream a changed"]}


def test_dagster_stale_status_misses_settings_changes(tmp_path):
    """Why the main job plans with :mod:`ih_assets.versions`: Dagster's own stale status sees code
    and data versions but not a changed resource setting, so it calls an outdated render fresh."""
    from dagster import AssetExecutionContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    @asset(code_version="1", name="rendered_views")
    def toy_render(context: AssetExecutionContext, settings: PipelineSettings) -> dict:
        made = {"n_views": settings.n_views}
        versions.record(context, made, settings)
        return made

    before, after = PipelineSettings.from_preset("test"), PipelineSettings.from_preset("test", n_views=3)
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert materialize([toy_render], instance=instance, resources={"settings": before}).success
        graph = Definitions(assets=[toy_render], resources={"settings": after}).resolve_asset_graph()
        key = AssetKey("rendered_views")
        assert CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance)).get_status(key) == StaleStatus.FRESH
        plan = versions.reasons_to_materialize(instance, graph, [key], None, after)
        assert plan == {key: [f"settings changed: n_views {before.n_views} -> 3"]}
        assert versions.recorded_settings(instance, key, [None])[None]["n_views"] == before.n_views
