"""Partial joins: lost teacher logits are masked in training, reported, and checked."""

import math
from pathlib import Path

import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance

from recdistill_dagster.config import load_config
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions

STUDENTS = ("ranker", "prerank")

pytestmark = [pytest.mark.integration, pytest.mark.scenario]


def _run(tmp_path: Path, overrides: str):
    config_file = tmp_path / "faults.yaml"
    config_file.write_text(overrides)
    config = load_config("tiny", config_file)
    defs = build_definitions("tiny", tmp_path / "home", str(config_file))
    instance = DagsterInstance.ephemeral()
    batch, first_streaming = config.calendar.training_days()[:2]
    for day in config.calendar.data_days()[:4]:
        assert defs.resolve_job_def(SAMPLE_STREAMS_JOB).execute_in_process(
            partition_key=day.isoformat(), instance=instance).success
    assert defs.resolve_job_def(DAILY_TRAINING_JOB).execute_in_process(
        partition_key=batch.isoformat(), instance=instance).success
    result = defs.resolve_job_def(DAILY_TRAINING_JOB).execute_in_process(
        partition_key=first_streaming.isoformat(), instance=instance, raise_on_error=False)
    return instance, first_streaming, result


def _check(result, asset: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations()
                     if e.check_name == "join_coverage" and e.asset_key == AssetKey.from_user_string(asset)]
    return evaluation


def _latest_metadata(instance: DagsterInstance, asset: str, partition: str) -> dict:
    for record in instance.fetch_materializations(AssetKey.from_user_string(asset), limit=50).records:
        mat = record.asset_materialization
        if mat is not None and mat.partition == partition:
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} {partition} not materialized")


def test_dropped_logits_warn_and_train_on_task_loss_only(tmp_path: Path) -> None:
    overrides = "faults: {drop_logit_fraction: 0.3, drop_logit_days: [2026-01-03]}\n"
    instance, day, result = _run(tmp_path, overrides)
    assert result.success
    for student in STUDENTS:  # the same lost records reach every student's join
        evaluation = _check(result, f"{student}/student_dataset")
        assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
        dataset = _latest_metadata(instance, f"{student}/student_dataset", day.isoformat())
        # The teacher lost exactly 30% of its records; a student's rows are a random subset of the
        # teacher's, so its coverage is 0.7 within binomial noise (4 standard errors).
        rows = dataset["dagster/row_count"]
        assert dataset["join_coverage"] == pytest.approx(0.7, abs=4 * math.sqrt(0.21 / rows))
        assert dataset["unmatched_label_rate"] is not None  # rows kept, not dropped
        assert dataset["dagster/row_count"] > dataset["matched_rows"]
        trained = _latest_metadata(instance, f"{student}/student_checkpoint", day.isoformat())
        assert trained["train_samples"] == dataset["dagster/row_count"]  # every row trained (task loss)
        assert trained["distill_matched_fraction"] == pytest.approx(dataset["join_coverage"], abs=1e-4)


def test_coverage_below_the_floor_blocks_the_student(tmp_path: Path) -> None:
    overrides = ("faults: {drop_logit_fraction: 0.6, drop_logit_days: [2026-01-03]}\n"
                 "join: {coverage_warn: 0.95, coverage_floor: 0.5}\n")
    instance, day, result = _run(tmp_path, overrides)
    assert not result.success
    for student in STUDENTS:
        evaluation = _check(result, f"{student}/student_dataset")
        assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
        assert day.isoformat() in instance.get_materialized_partitions(AssetKey([student, "student_dataset"]))
        assert day.isoformat() not in instance.get_materialized_partitions(AssetKey([student, "student_checkpoint"]))
        # The baseline does not depend on the join and still trained.
        assert day.isoformat() in instance.get_materialized_partitions(AssetKey([student, "baseline_checkpoint"]))
    assert day.isoformat() in instance.get_materialized_partitions(AssetKey("teacher_checkpoint"))
