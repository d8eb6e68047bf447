"""The settings resource: the profile is the deployment's whatever a launch configuration leaves out."""

from pathlib import Path

import pytest
from dagster import AssetExecutionContext, DagsterInstance, Definitions, asset, define_asset_job

from recdistill_dagster.config import ConfigError
from resources import PipelineSettings

SEEN: dict[str, object] = {}


@asset
def probe(context: AssetExecutionContext, settings: PipelineSettings) -> None:
    config = settings.config()
    SEEN.update(profile=config.profile, bootstrap=config.eval.bootstrap_samples)


def _run(settings: PipelineSettings, run_config: dict | None = None):
    defs = Definitions(assets=[probe], jobs=[define_asset_job("probe_job", [probe])], resources={"settings": settings})
    SEEN.clear()
    return defs.resolve_job_def("probe_job").execute_in_process(
        instance=DagsterInstance.ephemeral(), run_config=run_config, raise_on_error=False)


def _settings_config(**fields: object) -> dict:
    return {"resources": {"settings": {"config": fields}}}


def test_a_partial_launch_config_keeps_the_deployment_profile(tmp_path: Path) -> None:
    overrides = tmp_path / "o.yaml"
    overrides.write_text("eval: {bootstrap_samples: 20}\n")
    settings = PipelineSettings.for_deployment("tiny")
    assert _run(settings, _settings_config(config_file=str(overrides))).success
    assert SEEN == {"profile": "tiny", "bootstrap": 20}
    assert _run(settings).success and SEEN == {"profile": "tiny", "bootstrap": 50}


def test_the_deployment_file_stays_under_a_launch_override(tmp_path: Path) -> None:
    deployment, launch = tmp_path / "deployment.yaml", tmp_path / "launch.yaml"
    deployment.write_text("eval: {bootstrap_samples: 30}\n")
    launch.write_text("join: {coverage_warn: 0.9}\n")
    settings = PipelineSettings.for_deployment("tiny", str(deployment))
    assert _run(settings, _settings_config(config_file=str(launch))).success
    assert SEEN == {"profile": "tiny", "bootstrap": 30}
    assert _run(settings, _settings_config(config_file=str(deployment))).success  # the same file once


def test_another_profile_is_an_error_naming_both() -> None:
    result = _run(PipelineSettings.for_deployment("tiny"), _settings_config(profile="demo"))
    assert not result.success and not SEEN
    with pytest.raises(ConfigError, match=r"names profile 'demo'.*serves profile 'tiny'"):
        PipelineSettings.for_deployment("tiny").model_copy(update={"profile": "demo"}).config()


def test_an_override_cannot_reshape_the_code_location(tmp_path: Path) -> None:
    reshaping = tmp_path / "calendar.yaml"
    reshaping.write_text("calendar: {streaming_days: 3}\n")
    settings = PipelineSettings.for_deployment("tiny").model_copy(update={"config_file": str(reshaping)})
    with pytest.raises(ConfigError, match="changes the calendar or the set of students"):
        settings.config()
