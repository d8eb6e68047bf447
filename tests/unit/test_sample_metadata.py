"""A sample stream's materialization metadata for a day its sampler left empty (MovieLens has days with a
single rating: a student keeping a quarter of the negatives can get none of it)."""

from datetime import date

from assets.samples import _outcome
from recdistill_dagster.config import load_config


def test_an_empty_stream_day_has_no_label_rate_and_says_so() -> None:
    outcome = _outcome(load_config("tiny"), "prerank/student_samples", "prerank", date(2026, 1, 2), rows=0,
                       positives=0, url="memory:///x.parquet", base_rate=0.0, bayes_auc=None)
    assert outcome.metadata["dagster/row_count"] == 0
    assert outcome.metadata["label_rate"] is None
    assert "| label rate | n/a |" in outcome.metadata["summary"].value


def test_a_stream_day_with_rows_reports_its_label_rate() -> None:
    outcome = _outcome(load_config("tiny"), "teacher_samples", "teacher", date(2026, 1, 2), rows=8,
                       positives=2, url="memory:///x.parquet", base_rate=0.1, bayes_auc=0.8)
    assert outcome.metadata["label_rate"].value == 0.25
