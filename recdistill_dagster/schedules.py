"""The daily increment, caught up in order whenever ticks were missed.

When day D is over (UTC), at the times of config `schedules`:
1. `daily_sample_streams` writes the data partitions that are missing up to D, in one run in date
   order (usually D alone; after the daemon was down, every day it missed);
2. `daily_training` trains the missing training partitions up to D (teacher, then for every student
   its dataset and both checkpoints), in one run in date order, and then the missing reports: report
   d scores the models after d on day d+1 (progressive validation), so it runs once d+1 has data.

A tick requests only what is neither materialized nor already requested by a queued or running run,
so a tick after an outage of the daemon asks for every missed day and the next tick asks for nothing
twice. Each tick reads the time it was scheduled for, never the wall clock, so ticks evaluated at any
chosen time say what that day would have run. A training day whose data is neither there nor on its
way is left for a later tick, named in the tick's skip reason or log. All runs carry the lane tag and
claim the chain pool, so the run queue starts them one at a time in the order they were requested,
and every step takes the chain lock (`recdistill_dagster.writer`). Schedules start STOPPED.
"""

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from dagster import (
    AssetCheckKey,
    AssetChecksDefinition,
    AssetKey,
    DagsterInstance,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SkipReason,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
    schedule,
)

from recdistill_dagster.calendar import days_of_partition
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.graph import EVAL_SAMPLES, AssetGraph
from recdistill_dagster.sensors import IN_PROGRESS, RANGE_END_TAG, RANGE_START_TAG

TRAINING_LANE_TAG = "recdistill/lane"
DATA_SCHEDULE = "daily_sample_streams"
TRAINING_SCHEDULE = "daily_training"


def tick_day(context: ScheduleEvaluationContext) -> date:
    """The day the tick runs on (UTC): every day before it is complete."""
    return context.scheduled_execution_time.date()


def _days_of_run(tags: dict[str, str]) -> list[date]:
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        day, end = date.fromisoformat(tags[RANGE_START_TAG]), date.fromisoformat(tags[RANGE_END_TAG])
        return [day + timedelta(days=i) for i in range((end - day).days + 1)]
    return [date.fromisoformat(tags["dagster/partition"])] if "dagster/partition" in tags else []


def in_flight(instance: DagsterInstance, job_name: str, keys: Iterable[AssetKey] | None = None) -> set[date]:
    """Days that queued or running runs of `job_name` (selecting any of `keys`, if given) will write."""
    wanted = set(keys) if keys is not None else None
    days: set[date] = set()
    for run in instance.get_runs(filters=RunsFilter(job_name=job_name, statuses=IN_PROGRESS)):
        if wanted is not None and run.asset_selection is not None and not wanted & set(run.asset_selection):
            continue
        days.update(_days_of_run(dict(run.tags)))
    return days


def materialized(instance: DagsterInstance, keys: Iterable[AssetKey]) -> set[date]:
    """Days materialized for every one of `keys`."""
    sets = [{date.fromisoformat(p) for p in instance.get_materialized_partitions(key)} for key in keys]
    return set.intersection(*sets) if sets else set()


def missing_range(wanted: list[date], covered: set[date]) -> tuple[date, date] | None:
    """From the first day not covered to the last wanted one: the chain cannot skip a day, so a gap
    rebuilds everything after it."""
    todo = [d for d in wanted if d not in covered]
    return (todo[0], wanted[-1]) if todo else None


def check_keys(graph: AssetGraph, keys: Iterable[str]) -> list[AssetCheckKey]:
    """The checks a run selecting `keys` evaluates: their own steps' (see `AssetGraph.checks_of`)."""
    return [AssetCheckKey(AssetKey.from_user_string(asset), name) for asset, name in graph.checks_of(keys)]


def range_request(kind: str, first: date, last: date, today: date, graph: AssetGraph,
                  keys: list[str] | None = None) -> RunRequest:
    run_key = f"{kind}-{first}..{last}@{today}"
    assets = [AssetKey.from_user_string(k) for k in keys] if keys else None
    checks = check_keys(graph, keys) if keys else None
    if first == last:
        return RunRequest(run_key=run_key, partition_key=first.isoformat(), asset_selection=assets,
                          asset_check_keys=checks)
    return RunRequest(run_key=run_key, tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
                      asset_selection=assets, asset_check_keys=checks)


FRESHNESS_SENSOR = "student_freshness_sensor"
FRESHNESS_SENSOR_INTERVAL_S = 600  # a late day is flagged within ten minutes of its deadline


@dataclass(frozen=True)
class Freshness:
    """Open-ended calendars: one time-partition freshness check per student checkpoint, and the sensor that
    evaluates them (STOPPED by default, like every automation here)."""

    checks: list[AssetChecksDefinition] = field(default_factory=list)
    sensors: list[SensorDefinition] = field(default_factory=list)


def build_freshness(config: PipelineConfig, graph: AssetGraph) -> Freshness:
    if not config.calendar.open_ended:
        return Freshness()  # a fixed calendar is not fed every day: nothing is ever "late"
    keys = [AssetKey.from_user_string(graph.student(name).distilled) for name in graph.students]
    # Per partition, not per asset: the check expects the partition of the last day that ended before the
    # latest deadline tick (day D by 06:00 of D+1), whatever else was materialized. Dagster 1.13 calls these
    # factories superseded by `FreshnessPolicy`, which judges an asset as a whole (its latest update), so
    # a daily chain that wrote any day recently would pass with yesterday missing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        checks = list(build_time_partition_freshness_checks(
            assets=keys, deadline_cron=config.schedules.freshness_deadline_cron, timezone="UTC"))
        sensor = build_sensor_for_freshness_checks(freshness_checks=checks, name=FRESHNESS_SENSOR,
                                                   minimum_interval_seconds=FRESHNESS_SENSOR_INTERVAL_S)
    return Freshness(checks, [sensor])


def build_schedules(config: PipelineConfig, graph: AssetGraph, data_job_name: str,
                    training_job_name: str) -> list[ScheduleDefinition]:
    calendar, times = config.calendar, config.schedules
    report_keys = graph.keys("report")
    training_keys = [key for key in graph.training_keys if key not in report_keys]
    reports = [AssetKey.from_user_string(key) for key in report_keys]
    training = [AssetKey.from_user_string(key) for key in training_keys]
    data_keys = [AssetKey.from_user_string(key) for key in graph.data_keys]

    @schedule(job_name=data_job_name, cron_schedule=times.data_cron, execution_timezone="UTC", name=DATA_SCHEDULE,
              description="Write the sample streams of every complete day not written yet (yesterday's, and any "
                          "day a stopped daemon missed), in one run in date order.")
    def daily_sample_streams(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        today = tick_day(context)
        wanted = [d for d in calendar.data_days(today) if d < today]
        if not wanted:
            return SkipReason(f"no data day of the calendar is complete on {today} (the calendar starts "
                              f"{calendar.start_date})")
        covered = materialized(context.instance, data_keys) | in_flight(context.instance, data_job_name)
        missing = missing_range(wanted, covered)
        if missing is None:
            return SkipReason(f"up to date: every data day through {wanted[-1]} is written or on its way")
        context.log.info(f"sample streams {missing[0]}..{missing[1]}")
        return range_request("data", *missing, today, graph)

    @schedule(job_name=training_job_name, cron_schedule=times.training_cron, execution_timezone="UTC",
              name=TRAINING_SCHEDULE,
              description="Train every student (and the teacher) on every complete day not trained yet, in one run "
                          "in date order, then write the reports that became possible (report d scores the models "
                          "after d on day d+1).")
    def daily_training(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        today = tick_day(context)
        instance = context.instance
        days = [d for d in calendar.training_days(today) if d < today]
        data = (materialized(instance, [AssetKey.from_user_string(EVAL_SAMPLES)])
                | in_flight(instance, data_job_name))
        # Only days whose data is there or on its way (a data run queued earlier runs first).
        ready = [d for d in days if all(x in data for x in days_of_partition(calendar, d))]
        waiting = [d for d in days if d not in ready]
        notes = [f"training waits for the data of {waiting[0]} (not written, no run on its way): the "
                 f"{DATA_SCHEDULE} tick writes it; a later tick trains it"] if waiting else []
        ready = [d for d in ready if not waiting or d < waiting[0]]
        requests, said = [], []
        trained = materialized(instance, training) | in_flight(instance, training_job_name, training)
        missing = missing_range(ready, trained) if ready else None
        if missing:
            requests.append(range_request("train", *missing, today, graph, training_keys))
            said.append(f"train {missing[0]}..{missing[1]}")
            trained |= {d for d in ready if d >= missing[0]}
        # Report d needs the models after d and the data of d+1.
        reportable = [d for d in ready if d in trained and d + timedelta(days=1) in data]
        reported = materialized(instance, reports) | in_flight(instance, training_job_name, reports)
        missing_reports = missing_range(reportable, reported) if reportable else None
        if missing_reports:
            requests.append(range_request("report", *missing_reports, today, graph, report_keys))
            said.append(f"report {missing_reports[0]}..{missing_reports[1]}")
        for note in notes:
            context.log.warning(note)
        if requests:
            context.log.info("; ".join(said))
            return requests
        if not days:
            return SkipReason(f"no training day is complete on {today} (the batch partition is {calendar.batch_end})")
        status = f"up to date on {today}: trained through {max(trained, default=None)}, reports through " \
                 f"{max(reported, default=None)} (report d runs once day d+1 has data)"
        return SkipReason("; ".join([status, *notes]))

    return [daily_sample_streams, daily_training]
