"""Launch configuration cannot drift: the launchpad's GraphQL mutation with a partial `settings` config.

The code location is loaded as `dagster dev` loads it (workspace.yaml, a code server process with
RECDISTILL_PROFILE=tiny); runs are launched through the same `launchPipelineExecution` mutation the
launchpad sends, and executed by the instance's run launcher in a run worker process.
"""

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterRunStatus
from dagster._core.test_utils import instance_for_test, wait_for_runs_to_finish
from dagster_graphql.client.query import LAUNCH_PIPELINE_EXECUTION_MUTATION
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql, infer_job_selector

from recdistill_dagster.definitions import SAMPLE_STREAMS_JOB
from tests.e2e.support import REPO

pytestmark = pytest.mark.scenario

DAY = "2026-01-01"  # a data day of both `tiny` and `demo` (their calendars overlap)


def _launch(context, settings: dict) -> str:
    params = {"selector": infer_job_selector(context, SAMPLE_STREAMS_JOB),
              "runConfigData": {"resources": {"settings": {"config": settings}}},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]}}
    result = execute_dagster_graphql(context, LAUNCH_PIPELINE_EXECUTION_MUTATION, {"executionParams": params})
    launched = result.data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def test_launchpad_overrides_never_change_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECDISTILL_PROFILE", "tiny")
    monkeypatch.setenv("RECDISTILL_HOME", str(tmp_path / "state"))
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("eval: {bootstrap_samples: 20}\n")
    # The launchpad's runs go straight to the run launcher here (no daemon to dequeue them).
    immediate = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}}
    with instance_for_test(temp_dir=str(tmp_path), overrides=immediate) as instance, \
            define_out_of_process_context(str(REPO / "workspace.yaml"), None, instance) as context:
        # Only `config_file`: the profile stays the code location's (the schema has no default profile).
        partial = _launch(context, {"config_file": str(overrides)})
        # Another profile named explicitly: refused before any step runs, naming both.
        other = _launch(context, {"profile": "demo"})
        wait_for_runs_to_finish(instance, timeout=240)
        assert instance.get_run_by_id(partial).status == DagsterRunStatus.SUCCESS
        rows = instance.fetch_materializations(AssetKey("eval_samples"), limit=1).records[0]
        assert rows.asset_materialization.metadata["dagster/row_count"].value == 3000  # tiny's day, not demo's
        assert instance.get_run_by_id(other).status == DagsterRunStatus.FAILURE
        events = [e.dagster_event for e in instance.all_logs(other) if e.is_dagster_event]
        errors = [getattr(e.event_specific_data, "error", None) for e in events]
        error = " ".join(info.to_string() for info in errors if info is not None)
        assert "names profile 'demo'" in error and "serves profile 'tiny'" in error, error
        assert not [e for e in events if e.is_step_start]  # refused before any step started
        print("launch override refused:", next(line for line in error.splitlines() if "names profile" in line))
