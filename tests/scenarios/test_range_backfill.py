"""A 14-day backfill of the self-dependent chain on the tiny profile: one run, strictly in date
order (each day continues from the checkpoint the same run wrote the day before). The wall time
is printed for the README; speed is a benchmark number, never asserted here."""

import itertools
import time

import pytest
import torch
from dagster import AssetKey

from recdistill_dagster import layout
from tests.scenarios.conftest import failure_text

pytestmark = pytest.mark.scenario


def test_fourteen_day_backfill_is_one_ordered_run(make_pipeline) -> None:
    pipeline = make_pipeline("backfill14", "calendar: {streaming_days: 14}\n")
    calendar = pipeline.config.calendar
    started = time.monotonic()
    data = pipeline.data_range(calendar.start_date, calendar.last_data_day)
    data_seconds = time.monotonic() - started
    assert data.success, failure_text(data)
    started = time.monotonic()
    result = pipeline.training_range(calendar.batch_end, calendar.last_training_day)
    training_seconds = time.monotonic() - started
    assert result.success, failure_text(result)
    days = calendar.training_days()
    print(f"\n14-day backfill (tiny): data {len(calendar.data_days())} days in {data_seconds:.1f}s (1 run), "
          f"training {len(days)} partitions in {training_seconds:.1f}s (1 run) = "
          f"{training_seconds / len(days):.2f}s per day")
    for asset in ("teacher_checkpoint", "ranker/student_checkpoint", "prerank/student_checkpoint",
                  "prerank/transferability_report"):
        assert pipeline.instance.get_materialized_partitions(AssetKey.from_user_string(asset)) == {
            d.isoformat() for d in days}
    records = pipeline.instance.fetch_materializations(AssetKey(["ranker", "student_checkpoint"]), limit=50).records
    runs = {record.run_id for record in records}
    assert runs == {result.run_id}
    parents = []
    for day in days:  # each checkpoint names the one written the day before as its parent
        path = pipeline.home / layout.student_checkpoint_path("ranker", "distilled", day)
        meta = torch.load(path, weights_only=True)["meta"]
        parents.append((meta["parent_snapshot"], meta["snapshot_id"]))
    for (_, previous), (parent, _) in itertools.pairwise(parents):
        assert parent == previous
