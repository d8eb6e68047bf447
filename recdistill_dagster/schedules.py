"""The daily streaming increment.

When day D's log is complete (shortly after midnight of D+1):
1. `daily_sample_streams` writes the data partition D;
2. `daily_training` first scores the models after D−1 on day D (every student's report D−1:
   progressive validation, before training on D), then trains the teacher and, for every student, its
   dataset and both checkpoints on D.
Both training runs carry the `recdistill/lane=training` tag; the instance's run queue allows one
run of that lane at a time (see `home.DAGSTER_YAML`), so a scheduled run and a backfill never
train the same chain concurrently. Schedules start STOPPED: turn them on in the UI.
"""

from datetime import date, timedelta

from dagster import (
    AssetKey,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from recdistill_dagster.config import CalendarConfig
from recdistill_dagster.graph import AssetGraph

TRAINING_LANE_TAG = "recdistill/lane"


def _yesterday(context: ScheduleEvaluationContext) -> date:
    return (context.scheduled_execution_time - timedelta(days=1)).date()


def build_schedules(calendar: CalendarConfig, graph: AssetGraph, data_job_name: str,
                    training_job_name: str) -> list[ScheduleDefinition]:
    reports = [AssetKey.from_user_string(key) for key in graph.keys("report")]
    training = [AssetKey.from_user_string(key) for key in graph.training_keys if key not in graph.keys("report")]

    @schedule(job_name=data_job_name, cron_schedule="30 0 * * *", name="daily_sample_streams",
              description="Write yesterday's sample streams (evaluation, teacher, student).")
    def daily_sample_streams(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        day = _yesterday(context)
        if not calendar.start_date <= day <= calendar.last_data_day:
            return SkipReason(f"{day} is outside the data calendar {calendar.start_date}..{calendar.last_data_day}")
        return RunRequest(run_key=f"data-{day}", partition_key=day.isoformat())

    @schedule(job_name=training_job_name, cron_schedule="30 1 * * *", name="daily_training",
              description="Report the models after the day before yesterday on yesterday, then train on yesterday.")
    def daily_training(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        day = _yesterday(context)
        requests = []
        previous = day - timedelta(days=1)
        if calendar.batch_end <= previous <= calendar.last_training_day:
            requests.append(RunRequest(run_key=f"report-{previous}", partition_key=previous.isoformat(),
                                       asset_selection=reports))
        if calendar.batch_end < day <= calendar.last_training_day:
            requests.append(RunRequest(run_key=f"train-{day}", partition_key=day.isoformat(),
                                       asset_selection=training))
        if not requests:
            return SkipReason(f"{day} is not a streaming day of the calendar "
                              f"({calendar.batch_end}..{calendar.last_training_day}); the batch partition is "
                              "launched by hand or by `make run`")
        return requests

    return [daily_sample_streams, daily_training]
