"""The Kubernetes deployment on paper, checked by Dagster's own schemas (no cluster on this machine).

`deploy/k8s/dagster.yaml` must load as a Dagster instance config, its run launcher section must validate
against `K8sRunLauncher`'s schema, and `deploy/k8s/run_config.yaml` against `k8s_job_executor`'s; a typo
in either is refused. The instance keeps the embedded instance's run-queue and pool rules.
"""

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher, k8s_job_executor

from recdistill_dagster.deploy import embedded_instance_settings
from tests.integrations.conftest import Report

pytestmark = pytest.mark.integrations

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


def _executor_errors(config: dict[str, Any]) -> list[str]:
    result = validate_config(k8s_job_executor.config_schema.config_type, config)
    return [error.message for error in result.errors or []]


def _launcher_errors(config: dict[str, Any]) -> list[str]:
    result = validate_config(K8sRunLauncher.config_type(), config)
    return [error.message for error in result.errors or []]


def test_instance_and_run_launcher_validate(tmp_path: Path, report: Report) -> None:
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    settings, _ = dagster_instance_config(str(tmp_path))
    assert settings["run_launcher"]["class"] == "K8sRunLauncher"
    assert "postgres" in settings["storage"]
    launcher = _load("dagster.yaml")["run_launcher"]["config"]
    assert _launcher_errors(launcher) == []
    assert _launcher_errors({**launcher, "job_namspace": "x"}), "a misspelt key must be refused"
    assert _load("dagster.yaml")["concurrency"] == embedded_instance_settings()["concurrency"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text().replace("postgres_db:", "postgres_dbx:"))
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(broken))
    report("k8s", "deploy/k8s/dagster.yaml loads as a Dagster instance (Postgres storage, K8sRunLauncher config "
                  "valid against its schema, the embedded run-queue and pool rules); a misspelt key is refused")


def test_executor_run_config_validates(report: Report) -> None:
    execution = _load("run_config.yaml")["execution"]["config"]
    assert _executor_errors(execution) == []
    assert "teacher_training" in execution["per_step_k8s_config"]
    assert _executor_errors({**execution, "max_concurent": 2}), "a misspelt key must be refused"
    report("k8s", f"deploy/k8s/run_config.yaml valid against k8s_job_executor's schema (max_concurrent "
                  f"{execution['max_concurrent']}, per-step resources for teacher_training)")
