"""The daily increment's ticks at chosen times: what they request (and why not), the lane tag, and the
open-ended calendar's partitions. `tests/scenarios/test_open_ended.py` executes what the ticks request."""

from datetime import UTC, date, datetime
from pathlib import Path

from dagster import AssetCheckKey, AssetKey, DagsterRunStatus, build_schedule_context
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.test_utils import create_run_for_test, instance_for_test

from recdistill_dagster.config import load_config
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.partitions import build_partitions
from recdistill_dagster.schedules import DATA_SCHEDULE, TRAINING_LANE_TAG, TRAINING_SCHEDULE
from recdistill_dagster.sensors import RANGE_END_TAG, RANGE_START_TAG

OPEN = "calendar: {streaming_days: open}\n"


def _tick(defs, instance, name: str, when: datetime):
    with build_schedule_context(instance=instance, scheduled_execution_time=when,
                                repository_def=defs.get_repository_def()) as context:
        return defs.resolve_schedule_def(name).evaluate_tick(context)


def _span(request) -> str:
    if request.partition_key:
        return request.partition_key
    return f"{request.tags[RANGE_START_TAG]}..{request.tags[RANGE_END_TAG]}"


def test_a_tick_asks_for_every_missing_day_in_order(tmp_path: Path) -> None:
    defs = build_definitions("tiny", tmp_path / "home")  # batch partition 2026-01-02, streaming 01-03, 01-04
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        (data,) = _tick(defs, instance, DATA_SCHEDULE, datetime(2026, 1, 4, 0, 30, tzinfo=UTC)).run_requests
        assert _span(data) == "2026-01-01..2026-01-03"  # nothing written yet: every complete day
        # That run is under way: the training tick counts its days as on their way (the queue runs it first).
        create_run_for_test(instance, job_name=SAMPLE_STREAMS_JOB, status=DagsterRunStatus.STARTED, tags=data.tags)
        train, report = _tick(defs, instance, TRAINING_SCHEDULE, datetime(2026, 1, 4, 1, 30, tzinfo=UTC)).run_requests
        assert _span(train) == "2026-01-02..2026-01-03" and _span(report) == "2026-01-02"
        reports = {AssetKey(["ranker", "transferability_report"]), AssetKey(["prerank", "transferability_report"])}
        assert set(report.asset_selection) == reports and not reports & set(train.asset_selection)
        assert {AssetKey("teacher_checkpoint"), AssetKey(["ranker", "student_checkpoint"]),
                AssetKey(["prerank", "baseline_checkpoint"])} <= set(train.asset_selection)
        # The checks of its own steps, and no others.
        assert set(train.asset_check_keys) == {
            AssetCheckKey(AssetKey("teacher_checkpoint"), "teacher_health"),
            *(AssetCheckKey(AssetKey([s, "student_dataset"]), "join_coverage") for s in ("ranker", "prerank"))}
        # Asked again with those runs under way: nothing twice.
        create_run_for_test(instance, job_name=DAILY_TRAINING_JOB, status=DagsterRunStatus.STARTED, tags=train.tags,
                            asset_selection=frozenset(train.asset_selection))
        create_run_for_test(instance, job_name=DAILY_TRAINING_JOB, status=DagsterRunStatus.STARTED,
                            tags=report.tags, asset_selection=frozenset(report.asset_selection))
        again = _tick(defs, instance, TRAINING_SCHEDULE, datetime(2026, 1, 4, 1, 30, tzinfo=UTC))
        assert not again.run_requests and "up to date on 2026-01-04" in again.skip_message


def test_training_waits_for_data_that_is_not_on_its_way(tmp_path: Path) -> None:
    defs = build_definitions("tiny", tmp_path / "home")
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        tick = _tick(defs, instance, TRAINING_SCHEDULE, datetime(2026, 1, 4, 1, 30, tzinfo=UTC))
        assert not tick.run_requests
        assert "training waits for the data of 2026-01-02" in tick.skip_message
        early = _tick(defs, instance, TRAINING_SCHEDULE, datetime(2026, 1, 2, 1, 30, tzinfo=UTC))
        assert "no training day is complete on 2026-01-02" in early.skip_message


def test_training_runs_carry_the_lane_tag(tmp_path: Path) -> None:
    defs = build_definitions("tiny", tmp_path)
    assert defs.resolve_job_def(DAILY_TRAINING_JOB).tags[TRAINING_LANE_TAG] == "training"


def test_an_open_calendar_ends_at_the_last_complete_day(tmp_path: Path) -> None:
    overrides = tmp_path / "open.yaml"
    overrides.write_text(OPEN)
    calendar = load_config("tiny", overrides).calendar
    today = date(2026, 3, 10)
    assert calendar.training_days(today)[-1] == calendar.data_days(today)[-1] == date(2026, 3, 9)
    partitions = build_partitions(calendar)
    with partition_loading_context(datetime(2026, 3, 10, 12, tzinfo=UTC)):
        assert partitions.training.get_last_partition_key() == partitions.data.get_last_partition_key() == \
            "2026-03-09"
    defs = build_definitions("tiny", tmp_path / "home", str(overrides))
    (checks,) = defs.asset_checks  # one freshness check per student checkpoint, evaluated by their sensor only
    assert {key.asset_key for key in checks.check_keys} == {
        AssetKey(["ranker", "student_checkpoint"]), AssetKey(["prerank", "student_checkpoint"])}
    assert "student_freshness_sensor" in {s.name for s in defs.sensors}
    job = defs.resolve_job_def(DAILY_TRAINING_JOB)
    assert not set(checks.check_keys) & set(job.asset_layer.asset_graph.asset_check_keys)
    assert not build_definitions("tiny", tmp_path / "fixed").asset_checks  # a fixed calendar is never late
