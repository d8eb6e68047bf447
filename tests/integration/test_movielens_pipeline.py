"""The same asset graph on real MovieLens data: a short batch window then 2 streaming days."""

import json
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from recdistill_dagster import layout
from recdistill_dagster.config import load_config
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions

pytestmark = [pytest.mark.integration, pytest.mark.movielens]

OVERRIDES = """
calendar: {batch_days: 14, streaming_days: 2}
teacher:
  optim: {batch_phase_epochs: 1}
students:
  - {name: ranker, optim: {batch_phase_epochs: 1}}
  - {name: prerank, optim: {batch_phase_epochs: 1}}
eval: {bootstrap_samples: 30}
"""


def test_movielens_graph_materializes(movielens_path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RECDISTILL_MOVIELENS", str(movielens_path))
    config_file = tmp_path / "short.yaml"
    config_file.write_text(OVERRIDES)
    config = load_config("movielens", config_file)
    home = tmp_path / "home"
    defs = build_definitions("movielens", home, str(config_file))
    instance = DagsterInstance.ephemeral()
    for day in config.calendar.data_days():
        result = defs.resolve_job_def(SAMPLE_STREAMS_JOB).execute_in_process(
            partition_key=day.isoformat(), instance=instance)
        assert result.success
    for day in config.calendar.training_days():
        result = defs.resolve_job_def(DAILY_TRAINING_JOB).execute_in_process(
            partition_key=day.isoformat(), instance=instance)
        assert result.success
    for student in config.active_students:
        done = instance.get_materialized_partitions(AssetKey([student.name, "transferability_report"]))
        assert done == {d.isoformat() for d in config.calendar.training_days()}
        report = json.loads((home / layout.report_path(student.name, config.calendar.last_training_day)).read_text())
        assert report["daily"]["auc"]["bayes"] is None  # no ground truth on real data
        assert 0.0 < report["daily"]["auc"]["teacher"] < 1.0 and report["daily"]["n_eval"] > 0
        assert set(report["cumulative"]["days"]) == {d.isoformat() for d in config.calendar.training_days()}
