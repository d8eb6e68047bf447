"""The daily increment: which partitions the schedules request, and the training lane tag."""

from datetime import UTC, datetime

from dagster import AssetKey, build_schedule_context

from recdistill_dagster.definitions import DAILY_TRAINING_JOB, build_definitions
from recdistill_dagster.schedules import TRAINING_LANE_TAG


def _requests(defs, name: str, when: datetime):
    schedule = defs.resolve_schedule_def(name)
    context = build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context)


def test_daily_training_reports_then_trains_yesterday(tmp_path) -> None:
    defs = build_definitions("tiny", tmp_path)  # batch partition 2026-01-02, streaming 01-03..01-04
    data = _requests(defs, "daily_sample_streams", datetime(2026, 1, 4, 0, 30, tzinfo=UTC))
    assert [r.partition_key for r in data.run_requests] == ["2026-01-03"]
    tick = _requests(defs, "daily_training", datetime(2026, 1, 4, 1, 30, tzinfo=UTC))
    report, train = tick.run_requests
    reports = [AssetKey(["ranker", "transferability_report"]), AssetKey(["prerank", "transferability_report"])]
    assert (report.partition_key, report.asset_selection) == ("2026-01-02", reports)
    assert train.partition_key == "2026-01-03"
    assert not set(reports) & set(train.asset_selection)
    assert {AssetKey("teacher_checkpoint"), AssetKey(["ranker", "student_checkpoint"]),
            AssetKey(["prerank", "baseline_checkpoint"])} <= set(train.asset_selection)


def test_schedule_skips_outside_the_calendar(tmp_path) -> None:
    defs = build_definitions("tiny", tmp_path)
    batch_day = _requests(defs, "daily_training", datetime(2026, 1, 3, 1, 30, tzinfo=UTC))
    assert not batch_day.run_requests and "batch partition" in batch_day.skip_message
    late = _requests(defs, "daily_sample_streams", datetime(2026, 3, 1, 0, 30, tzinfo=UTC))
    assert not late.run_requests and "outside the data calendar" in late.skip_message


def test_training_runs_carry_the_lane_tag(tmp_path) -> None:
    defs = build_definitions("tiny", tmp_path)
    assert defs.resolve_job_def(DAILY_TRAINING_JOB).tags[TRAINING_LANE_TAG] == "training"
