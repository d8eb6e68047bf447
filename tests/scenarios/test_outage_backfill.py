"""Outage and backfill: a missing day fails fast, nothing trains over the gap, and a backfill of
the gap (data, then the training range in one run, in date order) equals a run without the outage."""

import time
from datetime import timedelta

import pytest
from dagster import AssetKey

from tests.scenarios.conftest import STUDENTS, assert_same_metrics, failure_text

pytestmark = pytest.mark.scenario


def test_outage_then_backfill_equals_a_clean_run(make_pipeline, clean_reference) -> None:
    days = clean_reference.config.calendar.training_days()
    gap = days[2]
    pipeline = make_pipeline("outage", f"faults: {{missing_data_days: [{gap}]}}\n")
    config = pipeline.config
    for day in config.calendar.data_days():
        result = pipeline.data_day(day)
        assert result.success == (day != gap)
        if day == gap:
            assert "have not arrived" in failure_text(result) and gap.isoformat() in failure_text(result)
    eve = gap - timedelta(days=1)  # its report scores on the missing day, so it cannot finish either
    for day in days:
        result = pipeline.training_day(day)
        assert result.success == (day < eve), f"{day}: {failure_text(result)}"
        if day == eve:
            assert f"eval_samples missing for day(s) {gap}" in failure_text(result)
        elif day == gap:
            assert "teacher_samples missing" in failure_text(result)
        elif day > gap:  # never a silent gap: the chain refuses to skip the missing day
            assert "cannot skip a day" in failure_text(result)
    for student in STUDENTS:
        materialized = pipeline.instance.get_materialized_partitions(AssetKey([student, "student_checkpoint"]))
        assert materialized == {d.isoformat() for d in days if d <= eve}

    pipeline.overrides = ""  # the data arrived
    started = time.monotonic()
    assert pipeline.data_range(gap, gap).success
    result = pipeline.training_range(eve, days[-1])
    assert result.success, failure_text(result)
    print(f"backfill of {len(days) - days.index(eve)} training days: {time.monotonic() - started:.1f}s")
    for student in STUDENTS:
        assert pipeline.instance.get_materialized_partitions(AssetKey([student, "transferability_report"])) == {
            d.isoformat() for d in days}
        for day in days:
            assert_same_metrics(pipeline.report(day, student), clean_reference.report(day, student), tolerance=1e-6)
