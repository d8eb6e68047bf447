"""Bad input, end to end through Dagster: each case fails the day's run with a message naming the
partition and the problem, and nothing already materialized is lost (every earlier file and
partition is byte-for-byte intact, and the day runs once the input is fixed)."""

import hashlib
from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetKey

from recdistill_dagster import layout
from recdistill_dagster.definitions import DAILY_TRAINING_JOB
from tests.scenarios.conftest import Pipeline, failure_text

pytestmark = pytest.mark.scenario


def _rewrite_samples(stream: str, change: Callable[[pl.DataFrame], pl.DataFrame]):
    def corrupt(pipeline: Pipeline, day: date) -> None:
        path = pipeline.home / layout.samples_path(stream, day)
        change(pl.read_parquet(path)).write_parquet(path)
    return corrupt


def _corrupt_checkpoint(pipeline: Pipeline, day: date) -> None:
    previous = pipeline.home / layout.teacher_checkpoint_path(date.fromordinal(day.toordinal() - 1))
    previous.write_bytes(b"\x00 truncated by a full disk")


CASES = {
    "schema mismatch": (_rewrite_samples("teacher", lambda f: f.drop("label")), "missing columns ['label']"),
    "NaN features": (_rewrite_samples("teacher", lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("item_popularity"))
        .cast(pl.Float32).alias("item_popularity"))), "null/NaN/inf dense features"),
    "NaN labels": (_rewrite_samples("teacher", lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("label")).cast(pl.Int8).alias("label"))),
        "labels that are null or not 0/1"),
    "duplicate sample ids": (_rewrite_samples("teacher", lambda f: pl.concat([f, f.head(4)])), "duplicate sample_id"),
    "corrupted checkpoint": (_corrupt_checkpoint, "is unreadable"),
}


def _digests(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in ("checkpoints", "reports", "teacher_logits", "students", "registry")
            for p in sorted((home / folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    from dagster import DagsterInstance

    pipeline = Pipeline(home=tmp_path_factory.mktemp("bad") / "home", instance=DagsterInstance.ephemeral())
    calendar = pipeline.config.calendar
    assert pipeline.data_range(calendar.start_date, calendar.last_data_day).success
    for day in calendar.training_days()[:2]:
        assert pipeline.training_day(day).success
    return pipeline


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly_and_loses_nothing(base: Pipeline, case: str) -> None:
    corrupt, expected = CASES[case]
    day = base.config.calendar.training_days()[2]
    inputs = [base.home / layout.samples_path("teacher", day),
              base.home / layout.teacher_checkpoint_path(base.config.calendar.training_days()[1])]
    saved = {path: path.read_bytes() for path in inputs}
    before = _digests(base.home)
    materialized = base.instance.get_materialized_partitions(AssetKey(["ranker", "student_checkpoint"]))
    corrupt(base, day)
    after_corruption = _digests(base.home)
    result = base.training_day(day)
    message = failure_text(result)
    assert not result.success
    assert expected in message, message
    named = [d.isoformat() for d in (day, date.fromordinal(day.toordinal() - 1))]
    assert any(f"partition {d}" in message for d in named), message  # the broken partition is named
    after_run = _digests(base.home)  # the failed run changed no earlier day's file
    earlier = {k: v for k, v in after_corruption.items() if day.isoformat() not in k}
    assert {k: after_run.get(k) for k in earlier} == earlier
    assert base.instance.get_materialized_partitions(AssetKey(["ranker", "student_checkpoint"])) == materialized
    for path, data in saved.items():  # restore the input: every earlier file is as it was
        path.write_bytes(data)
    restored = _digests(base.home)
    assert {k: restored.get(k) for k in before if day.isoformat() not in k} == {
        k: v for k, v in before.items() if day.isoformat() not in k}


def test_unknown_config_key_at_launch_names_the_key(base: Pipeline, tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump({"students": [{"name": "ranker", "distil": {"alpha": 2.0}}]}))
    day = base.config.calendar.training_days()[2]
    before = _digests(base.home)
    result = base.defs.resolve_job_def(DAILY_TRAINING_JOB).execute_in_process(
        partition_key=day.isoformat(), instance=base.instance, raise_on_error=False,
        run_config={"resources": {"settings": {"config": {"profile": "tiny", "config_file": str(bad)}}}},
    )
    assert not result.success
    assert "students.0.distil" in failure_text(result)
    after = _digests(base.home)
    assert {k: after.get(k) for k in before if day.isoformat() not in k} == {
        k: v for k, v in before.items() if day.isoformat() not in k}
