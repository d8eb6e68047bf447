"""The MLflow UI over the session's tracking store: the training runs of the UI-launched partition and
the report's artifacts are listed."""

import re

import pytest

from tests.e2e.conftest import CONFIG, PROFILE, TRAINING_PARTITION, E2EPaths, LaunchedRun, RunningServer

pytestmark = pytest.mark.e2e

PARTITION = TRAINING_PARTITION.isoformat()
STUDENT = CONFIG.active_students[0].name
RUN_NAMES = {"teacher", *(f"{s.name}/{v}" for s in CONFIG.active_students for v in ("distilled", "baseline")),
             *(f"{s.name} report" for s in CONFIG.active_students)}
REPORT_ARTIFACTS = ("report.html", "plots", "transferability.json", "transferability.md")


@pytest.fixture(scope="module")
def tracked_runs(launched_run: LaunchedRun, e2e_paths: E2EPaths) -> tuple[str, dict]:
    """(experiment id, {run name: run}) of the MLflow runs the launched Dagster run opened."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=e2e_paths.mlflow_uri)
    experiment = client.get_experiment_by_name(f"recdistill-{PROFILE}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`dagster.run_id` = '{launched_run.run_id}'")
    by_name = {run.info.run_name: run for run in runs}
    assert set(by_name) == {f"{name} {PARTITION}" for name in RUN_NAMES}
    assert all(run.info.status == "FINISHED" for run in runs)
    return experiment.experiment_id, by_name


def test_mlflow_lists_the_training_runs(tracked_runs, mlflow_ui: RunningServer, page, screenshot) -> None:
    experiment_id, runs = tracked_runs
    # MLflow 3 opens experiments on its GenAI pages; the run table is the "Model training" view.
    page.goto(f"{mlflow_ui.url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    for name in runs:
        page.get_by_text(name, exact=True).first.wait_for()
    screenshot(page, "mlflow-runs")


def test_mlflow_lists_the_report_artifacts(tracked_runs, mlflow_ui: RunningServer, page, screenshot) -> None:
    experiment_id, runs = tracked_runs
    report = runs[f"{STUDENT} report {PARTITION}"]
    page.goto(f"{mlflow_ui.url}/#/experiments/{experiment_id}/runs/{report.info.run_id}/artifacts"
              "?workflowType=machine_learning")
    for artifact in REPORT_ARTIFACTS:
        page.get_by_text(artifact, exact=True).first.wait_for()
    page.get_by_text("plots", exact=True).first.click()
    page.get_by_text("auc_over_days.png", exact=True).first.click()
    page.get_by_text(re.compile(r"Path: .*/auc_over_days\.png$")).wait_for()  # the preview pane
    page.locator("img").last.wait_for()
    screenshot(page, "mlflow-report-artifacts")
