"""One streaming day of the real pipeline, two ways: through Dagster (the production jobs, every asset)
and as the same stage functions called from a plain script (no Dagster, no MLflow).

A `PerfPipeline` owns a fresh state folder (artifact store, Dagster instance, MLflow store) for the
`demo` profile with a one-day batch window (one epoch) and one streaming day, so a streaming day can
be re-materialized any number of times on top of the same batch phase, alternately by both paths.
"""

import os
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from recdistill_dagster.config import PipelineConfig, deep_merge

WARNINGS_ONLY = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# The health check runs in full (its cost is measured); its thresholds are opened so that a teacher
# trained for one epoch on a small day, which a speed benchmark produces, is not stopped as unhealthy.
OPEN_HEALTH = {"max_auc_drop": 1.0, "max_calibration_error": 1e6, "max_logit_mean_shift": 1e6,
               "max_logit_std_ratio": 1e6}


def streaming_day_overrides(impressions: int, threads: int) -> dict[str, Any]:
    """One batch day (one epoch), one streaming day; `impressions` a day; explicit torch threads on CPU."""
    one_epoch = {"optim": {"batch_phase_epochs": 1}}
    return {
        "health": OPEN_HEALTH,
        "data": {"impressions_per_day": impressions},
        "calendar": {"batch_days": 1, "streaming_days": 1},
        "teacher": one_epoch,
        "students": [{"name": "ranker", **one_epoch}, {"name": "prerank", **one_epoch}],
        "runtime": {"threads": threads, "device": "cpu"},
    }


def write_overrides(home: Path, overrides: dict[str, Any], threads: int) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "perf-overrides.yaml"
    merged = deep_merge(overrides, {"runtime": {"threads": threads, "device": "cpu"}})
    path.write_text(yaml.safe_dump(merged, sort_keys=True))
    return path


def point_environment_at(home: Path, profile: str) -> None:
    """This process's pipeline state lives in `home` only (never a developer's state folder)."""
    os.environ["RECDISTILL_HOME"] = str(home)
    os.environ["RECDISTILL_PROFILE"] = profile
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ.setdefault("MPLCONFIGDIR", str(home / ".matplotlib"))
    for variable in ("RECDISTILL_STORE_URL", "RECDISTILL_MLFLOW_URI"):
        os.environ.pop(variable, None)


class PerfPipeline:
    def __init__(self, home: Path, profile: str, overrides: dict[str, Any], threads: int) -> None:
        from dagster import DagsterInstance

        from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
        from recdistill_dagster.home import ensure_dagster_home, store_url
        from recdistill_dagster.storage import ArtifactStore
        from resources import PipelineSettings, RecDataSource

        point_environment_at(home, profile)
        ensure_dagster_home(home)
        self.home = home
        config_file = str(write_overrides(home, overrides, threads))
        settings = PipelineSettings(profile=profile, config_file=config_file)
        self.config: PipelineConfig = settings.config()
        self.defs = build_definitions(profile, home, config_file)
        self.instance = DagsterInstance.get()
        self.data_job = self.defs.resolve_job_def(SAMPLE_STREAMS_JOB)
        self.training_job = self.defs.resolve_job_def(DAILY_TRAINING_JOB)
        self.store = ArtifactStore(store_url(home))
        # The same cached source object the Dagster resource hands the assets.
        self.source = RecDataSource(settings=settings).source()

    @property
    def streaming_day(self) -> date:
        return self.config.calendar.training_days()[1]

    def setup(self) -> None:
        """Every data day, then the batch partition, through Dagster (not timed)."""
        for day in self.config.calendar.data_days():
            self._execute(self.data_job, day)
        self._execute(self.training_job, self.config.calendar.batch_end)

    def _execute(self, job: Any, day: date) -> None:
        result = job.execute_in_process(partition_key=day.isoformat(), instance=self.instance,
                                        run_config=WARNINGS_ONLY, raise_on_error=False)
        if not result.success:
            failure = next((e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"), "")
            raise RuntimeError(f"{job.name} {day} failed: {failure}")

    def dagster_day(self, day: date) -> None:
        """The day's sample streams, then the day's training partition: every asset, the production jobs."""
        self._execute(self.data_job, day)
        self._execute(self.training_job, day)

    def script_day(self, day: date) -> None:
        """The same stage functions the assets call, in the same order, from plain Python."""
        from recdistill_dagster.report.site import publish_report
        from recdistill_dagster.stages.context import RunIdentity, StageContext
        from recdistill_dagster.stages.dataset import build_student_dataset
        from recdistill_dagster.stages.evaluation import evaluate_partition
        from recdistill_dagster.stages.samples import materialize_sample_streams
        from recdistill_dagster.stages.student import train_student_partition
        from recdistill_dagster.stages.teacher import train_teacher_partition

        ctx = StageContext(config=self.config, store=self.store, source=self.source,
                           identity=RunIdentity(uuid.uuid4().hex))
        materialize_sample_streams(ctx, day)
        train_teacher_partition(ctx, day)
        for student in self.config.active_students:
            build_student_dataset(ctx, student, day)
            train_student_partition(ctx, student, day, "distilled")
            train_student_partition(ctx, student, day, "baseline")
            evaluate_partition(ctx, student, day)
            publish_report(self.config, self.store, student.name, day)
