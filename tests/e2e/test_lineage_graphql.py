"""The lineage audit through the running webserver's GraphQL API, with the standard library only."""

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import CONFIG, TRAINING_PARTITION, E2EPaths, LaunchedRun, RunningServer
from tests.e2e.support import REPO

pytestmark = pytest.mark.e2e

REPORT = f"{CONFIG.active_students[0].name}/transferability_report"
STUDENT = f"{CONFIG.active_students[-1].name}/student_checkpoint"  # the cross-stage prerank student


def graphql_audit(url: str, *args: str) -> subprocess.CompletedProcess:
    # -S: no site-packages, so neither Dagster nor anything else of the code location's environment.
    return subprocess.run(
        [sys.executable, "-S", "-m", "recdistill_dagster.lineage_graphql", *args, "--graphql-url", f"{url}/graphql"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_graphql_lineage_equals_the_local_audit(launched_run: LaunchedRun, dagster_ui: RunningServer,
                                                e2e_paths: E2EPaths) -> None:
    from dagster import DagsterInstance

    from recdistill_dagster.lineage import trace

    done = graphql_audit(dagster_ui.url, REPORT, TRAINING_PARTITION.isoformat(), "--json")
    assert done.returncode == 0, done.stderr
    remote = json.loads(done.stdout)
    with DagsterInstance.from_config(str(e2e_paths.dagster_home)) as instance:
        local = trace(instance, CONFIG, REPORT, TRAINING_PARTITION)
    by_key = {f"{n['asset']}[{n['partition']}]": n for n in remote["nodes"]}
    assert set(by_key) == {node.key for node in local}
    for node in local:
        other = by_key[node.key]
        assert other["materialized"] and other["run_id"] == node.run_id, node.key
        assert sorted(other["upstream"]) == sorted(node.upstream), node.key
        for key in ("version", "inputs", "teacher_snapshot", "snapshot_id", "mlflow_run_id", "teacher_snapshots"):
            assert other["metadata"].get(key) == node.metadata.get(key), (node.key, key)
    assert remote["complete"] is True
    assert remote["nodes"][0]["run_id"] == launched_run.run_id
    (snapshot,) = remote["teacher_snapshots"]
    assert remote["snapshot_health"][snapshot]["status"] == "passed"


def test_graphql_lineage_from_the_cli_and_its_errors(launched_run: LaunchedRun, dagster_ui: RunningServer) -> None:
    day = TRAINING_PARTITION.isoformat()
    cli = subprocess.run(
        [sys.executable, "-m", "recdistill_dagster", "lineage", STUDENT, day,
         "--graphql-url", f"{dagster_ui.url}/graphql"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith(f"lineage of {STUDENT}[{day}] via {dagster_ui.url}/graphql")
    assert f"run {launched_run.run_id[:8]}" in cli.stdout and "passed" in cli.stdout
    outside = graphql_audit(dagster_ui.url, STUDENT, "1999-01-01")
    assert outside.returncode == 2 and f"not a partition of {STUDENT}" in outside.stderr
    unknown = graphql_audit(dagster_ui.url, "no_such_asset", day)
    assert unknown.returncode == 2 and "unknown asset 'no_such_asset'" in unknown.stderr
