"""Pipeline settings: every field carries its range, bad values are refused before any work."""

from __future__ import annotations

import annotated_types
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from pydantic import ValidationError

from ih_assets.poses import raw_poses
from resources.hand_model import HandModelResource
from resources.settings import PRESETS, PipelineSettings, settings_from_env
from resources.sources import PoseSourceResource
from resources.storage import MemoryStorage, io_manager_for


def test_every_numeric_field_declares_its_range():
    """New fields slot into validation only if they say their bounds; this keeps that true."""
    for name, field in PipelineSettings.model_fields.items():
        if field.annotation in (int, float):
            kinds = {type(m) for m in field.metadata}
            assert kinds & {annotated_types.Ge, annotated_types.Gt}, f"{name} has no lower bound"
            assert kinds & {annotated_types.Le, annotated_types.Lt}, f"{name} has no upper bound"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_within_range_and_recorded_by_name(preset):
    settings = PipelineSettings.from_preset(preset)
    assert settings.record()["preset"] == preset and settings.overridden() == []


def test_overridden_fields_are_recorded_as_custom():
    record = settings_from_env({"IH_PRESET": "test", "IH_N_VIEWS": "5", "IH_IMAGE_SIZE": "128"}).record()
    assert (record["preset"], record["base_preset"], record["overridden"]) == ("custom", "test", ["n_views"])
    assert record["n_views"] == 5


@pytest.mark.parametrize("field, value, words", [
    ("n_views", 0, "greater than or equal to 1"), ("image_size", 100_000, "less than or equal to 8192"),
    ("optimize_batch_size", 0, "greater than or equal to 1"), ("n_environment_maps", 0, "greater than or equal to 1"),
])
def test_direct_construction_names_the_field(field, value, words):
    with pytest.raises(ValidationError) as err:
        PipelineSettings(**{field: value})
    assert field in str(err.value) and words in str(err.value)


def test_launchpad_config_out_of_range_fails_before_any_asset_runs():
    storage = MemoryStorage(name="test-settings-launchpad")
    instance = DagsterInstance.ephemeral()
    with pytest.raises(Exception) as err:
        materialize([raw_poses], instance=instance,
                    resources={"settings": PipelineSettings.configure_at_launch(), "hand_model": HandModelResource(),
                               "pose_source": PoseSourceResource(), "io_manager": io_manager_for(storage)},
                    run_config={"resources": {"settings": {"config": {"preset": "test", "n_views": 0}}}})
    cause = err.value.__cause__  # dagster wraps the resource's own error
    assert isinstance(cause, ValidationError) and "n_views" in str(cause) and "greater than or equal to 1" in str(cause)
    assert instance.get_latest_materialization_event(AssetKey("raw_poses")) is None
