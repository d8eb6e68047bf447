"""An open-ended calendar run by its schedules, ticks evaluated at chosen times.

The `tiny` world with `streaming_days: open` from 2026-01-01 (batch window 01-01..01-02): each tick
is evaluated as the daemon would at that time, and what it requests is executed in the order
requested. Day by day it writes yesterday's data and trains the teacher and every student on it; the
daemon is then down for two days, and the next ticks catch up every missed day in order, in one run
each; ticks after that request nothing twice. The freshness checks flag a student partition that is
late at its deadline, and pass once it exists.
"""

import itertools
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta

import pytest
from dagster import AssetCheckKey, AssetKey, RunRequest, build_schedule_context
from dagster._core.test_utils import freeze_time, instance_for_test

from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.runs import execute_range
from recdistill_dagster.schedules import DATA_SCHEDULE, TRAINING_SCHEDULE
from recdistill_dagster.sensors import RANGE_END_TAG, RANGE_START_TAG
from tests.scenarios.conftest import STUDENTS, Pipeline, failure_text

pytestmark = pytest.mark.scenario

OPEN = "calendar: {streaming_days: open}\n"
STUDENT_KEYS = [AssetKey([s, "student_checkpoint"]) for s in STUDENTS]


def at(day: date, hour: int, minute: int = 30) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _days(request: RunRequest) -> tuple[str, str]:
    if request.partition_key:
        return request.partition_key, request.partition_key
    return request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]


def tick(pipeline: Pipeline, name: str, when: datetime) -> list[tuple[str, str, list[str]]]:
    """Evaluate one schedule at `when`, execute its requests in order; what it requested."""
    defs = pipeline.defs
    schedule = defs.resolve_schedule_def(name)
    with build_schedule_context(instance=pipeline.instance, scheduled_execution_time=when,
                                repository_def=defs.get_repository_def()) as context:
        result = schedule.evaluate_tick(context)
    pipeline.log.append(f"{name} @ {when:%m-%d %H:%M}: {result.skip_message or ''}")
    done = []
    job = SAMPLE_STREAMS_JOB if name == DATA_SCHEDULE else DAILY_TRAINING_JOB
    for request in result.run_requests or []:
        first, last = _days(request)
        selection = list(request.asset_selection) if request.asset_selection else None
        if request.partition_key:  # one day: a plain partitioned run, as the daemon launches it
            run = defs.resolve_job_def(job).execute_in_process(
                partition_key=request.partition_key, instance=pipeline.instance, asset_selection=selection,
                tags={k: v for k, v in request.tags.items() if not k.startswith("dagster/partition")},
                raise_on_error=False)
        else:
            run = execute_range(defs, job, date.fromisoformat(first), date.fromisoformat(last), pipeline.instance,
                                asset_selection=selection, tags=dict(request.tags))
        assert run.success, failure_text(run)
        kind = "data" if name == DATA_SCHEDULE else request.run_key.split("-")[0]  # type: ignore[union-attr]
        done.append((kind, f"{first}..{last}", [k.to_user_string() for k in selection or []]))
    return done


def day_increment(pipeline: Pipeline, today: date) -> list[tuple[str, str]]:
    return [(kind, days) for kind, days, _ in
            tick(pipeline, DATA_SCHEDULE, at(today, 0)) + tick(pipeline, TRAINING_SCHEDULE, at(today, 1))]


def freshness(pipeline: Pipeline, when: datetime) -> dict[str, bool]:
    """Evaluate the student freshness checks as their sensor's run would at `when`."""
    defs = pipeline.defs
    (checks,) = defs.asset_checks
    keys = [AssetCheckKey(key, name) for key in STUDENT_KEYS for name in
            {k.name for k in checks.check_keys}]
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(),
                                                                   asset_check_selection=set(keys))
    with freeze_time(when):
        result = job.execute_in_process(instance=pipeline.instance, raise_on_error=False)
    evaluations = result.get_asset_check_evaluations()
    return {e.asset_key.to_user_string(): e.passed for e in evaluations}


def test_the_schedules_keep_an_open_ended_chain_and_catch_up_in_order(tmp_path) -> None:
    with ExitStack() as stack:
        _scenario(stack, tmp_path)


def _scenario(stack: ExitStack, tmp_path) -> None:
    # A SQLite instance, as a daemon's: schedules read it through an instance reference.
    instance = stack.enter_context(instance_for_test(temp_dir=str(tmp_path)))
    pipeline = Pipeline(home=tmp_path / "home", instance=instance, overrides=OPEN)
    calendar = pipeline.config.calendar
    assert calendar.open_ended and calendar.batch_end == date(2026, 1, 2)
    start = date(2026, 1, 3)  # the first day both batch-window days are complete

    assert day_increment(pipeline, start) == [("data", "2026-01-01..2026-01-02"), ("train", "2026-01-02..2026-01-02")]
    assert day_increment(pipeline, start + timedelta(days=1)) == [
        ("data", "2026-01-03..2026-01-03"), ("train", "2026-01-03..2026-01-03"), ("report", "2026-01-02..2026-01-02")]
    # The daemon is down on 01-05 and 01-06: the tick of 01-07 catches up every missed day, in order.
    caught_up = start + timedelta(days=4)
    assert day_increment(pipeline, caught_up) == [
        ("data", "2026-01-04..2026-01-06"), ("train", "2026-01-04..2026-01-06"),
        ("report", "2026-01-03..2026-01-05")]
    assert day_increment(pipeline, caught_up) == []  # the same ticks again: nothing twice

    registry = SnapshotRegistry(pipeline.store)
    trained = [date(2026, 1, 2) + timedelta(days=i) for i in range(5)]
    for previous, day in itertools.pairwise(trained):  # each day continued from the one before
        (record,) = registry.for_partition(day)
        assert record.parent_snapshot == registry.for_partition(previous)[0].snapshot_id
    for key in STUDENT_KEYS:
        assert pipeline.instance.get_materialized_partitions(key) == {d.isoformat() for d in trained}
        reports = AssetKey([key.path[0], "transferability_report"])
        assert pipeline.instance.get_materialized_partitions(reports) == {d.isoformat() for d in trained[:-1]}

    # Freshness: day D's student is due by 06:00 of D+1.
    assert freshness(pipeline, at(caught_up, 7)) == dict.fromkeys(map(AssetKey.to_user_string, STUDENT_KEYS), True)
    late = freshness(pipeline, at(caught_up + timedelta(days=1), 7))  # 01-07 is over, not trained
    assert late == dict.fromkeys(map(AssetKey.to_user_string, STUDENT_KEYS), False)
    print("\n".join(pipeline.log))
