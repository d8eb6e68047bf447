"""A small operations harness: the tiny pipeline driven day by day the way production runs it.

`Pipeline` wraps one state folder and one Dagster instance: daily data and training runs (what the
schedules launch), range runs (what backfills and the sensor launch), and sensor ticks evaluated
with `build_sensor_context` whose run requests are executed in-process on the same instance.
"""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, SensorResult, build_sensor_context

from recdistill_dagster import layout
from recdistill_dagster.config import PipelineConfig, load_config
from recdistill_dagster.definitions import (
    DAILY_TRAINING_JOB,
    ROLLBACK_REPAIR_JOB,
    SAMPLE_STREAMS_JOB,
    build_definitions,
)
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.runs import execute_range
from recdistill_dagster.sensors import RANGE_END_TAG, RANGE_START_TAG, ROLLBACK_SENSOR
from recdistill_dagster.storage import ArtifactStore

STREAMING_DAYS = 5  # the issue asks for a bad teacher inside a run of at least 5 streaming days
BASE = f"calendar: {{streaming_days: {STREAMING_DAYS}}}\neval: {{bootstrap_samples: 20}}\n"


def failure_text(result: ExecuteInProcessResult) -> str:
    """Every failed step with its error (and causes), or the run's own failure when it failed before any
    step (a resource refusing the launch configuration), for assertions and messages."""
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" or (
                event.event_type_value in ("PIPELINE_FAILURE", "RUN_FAILURE") and not messages):
            error = getattr(event.event_specific_data, "error", None)
            messages.append(f"{event.step_key or 'run'}: {error.to_string() if error else event.message}")
    return " | ".join(messages)


@dataclass
class Pipeline:
    home: Path
    instance: DagsterInstance
    overrides: str = ""
    sensor_cursor: str | None = None
    log: list[str] = field(default_factory=list)
    runs: list[ExecuteInProcessResult] = field(default_factory=list)  # the sensor's repair runs

    @property
    def config_file(self) -> Path:
        # One file per content: configs are cached per (profile, file) as in a running code location.
        digest = hashlib.sha256(self.overrides.encode()).hexdigest()[:8]
        path = self.home.parent / f"{self.home.name}-{digest}.yaml"
        path.write_text(BASE + self.overrides)
        return path

    @property
    def config(self) -> PipelineConfig:
        return load_config("tiny", self.config_file)

    @property
    def defs(self) -> Definitions:
        return build_definitions("tiny", self.home, str(self.config_file))

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(str(self.home))

    @property
    def registry(self) -> SnapshotRegistry:
        return SnapshotRegistry(self.store)

    def data_day(self, day: date) -> ExecuteInProcessResult:
        return self.defs.resolve_job_def(SAMPLE_STREAMS_JOB).execute_in_process(
            partition_key=day.isoformat(), instance=self.instance, raise_on_error=False)

    def training_day(self, day: date) -> ExecuteInProcessResult:
        result = self.defs.resolve_job_def(DAILY_TRAINING_JOB).execute_in_process(
            partition_key=day.isoformat(), instance=self.instance, raise_on_error=False)
        self.log.append(f"training {day}: {'ok' if result.success else 'FAILED'}")
        return result

    def data_range(self, start: date, end: date) -> ExecuteInProcessResult:
        return execute_range(self.defs, SAMPLE_STREAMS_JOB, start, end, self.instance)

    def training_range(self, start: date, end: date) -> ExecuteInProcessResult:
        return execute_range(self.defs, DAILY_TRAINING_JOB, start, end, self.instance)

    def tick(self, expect_success: bool = True) -> SensorResult:
        """Evaluate the rollback sensor once and execute what it requests (as the daemon would)."""
        defs = self.defs
        sensor = defs.get_sensor_def(ROLLBACK_SENSOR)
        with build_sensor_context(instance=self.instance, cursor=self.sensor_cursor, definitions=defs) as context:
            result = sensor.evaluate_tick(context)
        self.sensor_cursor = result.cursor
        self.log.append(f"sensor: {result.skip_message or ''} {[r.tags for r in result.run_requests or []]}")
        for request in result.run_requests or []:
            run = execute_range(defs, ROLLBACK_REPAIR_JOB, date.fromisoformat(request.tags[RANGE_START_TAG]),
                                date.fromisoformat(request.tags[RANGE_END_TAG]), self.instance,
                                asset_selection=request.asset_selection, tags=request.tags)
            self.log.append(f"repair run {request.tags[RANGE_START_TAG]}..{request.tags[RANGE_END_TAG]} "
                            f"{'ok' if run.success else 'FAILED: ' + failure_text(run)}")
            self.runs.append(run)
            assert run.success == expect_success, failure_text(run)
        return result

    def report(self, day: date, student: str = "ranker") -> dict[str, Any]:
        report: dict[str, Any] = json.loads((self.home / layout.report_path(student, day)).read_text())
        return report


@pytest.fixture
def make_pipeline(tmp_path: Path):
    def make(name: str, overrides: str = "") -> Pipeline:
        return Pipeline(home=tmp_path / name, instance=DagsterInstance.ephemeral(), overrides=overrides)

    return make


@pytest.fixture(scope="module")
def clean_reference(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The pipeline with no fault: every data day, then every training day, one run per day."""
    pipeline = Pipeline(home=tmp_path_factory.mktemp("clean") / "home", instance=DagsterInstance.ephemeral())
    config = pipeline.config
    assert pipeline.data_range(config.calendar.start_date, config.calendar.last_data_day).success
    for day in config.calendar.training_days():
        assert pipeline.training_day(day).success
    return pipeline


STUDENTS = ("ranker", "prerank")
AUC_MODELS = ("teacher", "student_raw", "student_distill", "student_aux")
GAINS = ("teacher_gain", "distill_gain", "eta")


def assert_same_metrics(report: dict[str, Any], reference: dict[str, Any], tolerance: float) -> None:
    for scope in ("daily", "cumulative"):
        section, ref = report[scope], reference[scope]
        for name in AUC_MODELS:
            assert section["auc"][name] == pytest.approx(ref["auc"][name], abs=tolerance), f"{scope} {name}"
        for name in GAINS:
            if ref["gains"][name] is None:
                assert section["gains"][name] is None, f"{scope} {name}"
            else:
                assert section["gains"][name] == pytest.approx(ref["gains"][name], abs=tolerance), f"{scope} {name}"
