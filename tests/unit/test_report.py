"""The report package on its own (no Dagster, no MLflow): within-day estimates folded over days from
stored aggregates, calibration bins that add up, the typed report's round trip, and the pages."""

import re
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from models.metrics import auc
from recdistill_dagster import layout
from recdistill_dagster.config import load_config
from recdistill_dagster.report.calibration import calibration_bins, combine, summary
from recdistill_dagster.report.estimate import (
    DayEstimate,
    cumulative_estimate,
    day_estimate,
    from_stored,
    replicates_frame,
)
from recdistill_dagster.report.models import BAYES, MODEL_KEYS, REPORT_MODELS
from recdistill_dagster.report.schema import (
    LossSummary,
    Parameters,
    ServingCost,
    TransferabilityReport,
)
from recdistill_dagster.report.site import build_index, build_student_page, publish_report
from recdistill_dagster.report.text import summary_table
from recdistill_dagster.storage import ArtifactStore

CONFIG = load_config("tiny")
EVAL = CONFIG.eval
DAYS = CONFIG.calendar.training_days()


def predictions(seed: int, shift: float = 0.0, rows: int = 2000) -> pl.DataFrame:
    """A day's calibrated predictions: the teacher closest to p_true, the distilled student between
    teacher and baseline. `shift` moves every model's scores of the day by the same factor."""
    rng = np.random.default_rng(seed)
    p_true = rng.beta(1, 20, rows)
    label = (rng.random(rows) < p_true).astype(np.int8)

    def noisy(sigma: float) -> np.ndarray:
        return np.clip(p_true * rng.lognormal(0, sigma, rows) * np.exp(shift), 1e-5, 0.99)

    return pl.DataFrame({"label": label, "p_true": p_true, "teacher": noisy(0.3), "student_raw": noisy(0.9),
                         "student_distill": noisy(0.6), "student_aux": noisy(0.6)})


def estimates(days: int = 3) -> list[DayEstimate]:
    return [day_estimate(predictions(seed, shift=seed - 1.0), DAYS[0].isoformat(), EVAL, seed=seed)
            for seed in range(days)]


def test_cumulated_auc_is_the_mean_of_daily_aucs_not_pooled() -> None:
    days = estimates()
    folded = None
    for day in days:
        folded = cumulative_estimate(folded, day, EVAL)
    assert folded is not None
    for key in MODEL_KEYS:
        assert folded.point[key] == pytest.approx(np.mean([d.point[key] for d in days]), abs=1e-12)
        assert folded.replicates[key] == pytest.approx(np.mean([d.replicates[key] for d in days], axis=0))
    # The days' scores are shifted by different factors: pooling ranks one day's rows against another's
    # and loses ranking quality that every day has; the within-day aggregate does not.
    frames = [predictions(seed, shift=seed - 1.0) for seed in range(3)]
    pooled = pl.concat(frames)
    pooled_teacher = auc(pooled["teacher"].to_numpy(), pooled["label"].to_numpy())
    assert folded.point["teacher"] > pooled_teacher + 0.01
    assert folded.scope.n_eval == sum(d.scope.n_eval for d in days)
    assert folded.scope.gains.teacher_gain == pytest.approx(folded.point["teacher"] - folded.point["student_raw"])


def test_gains_are_significant_and_eta_reads_between_zero_and_one() -> None:
    day = estimates(1)[0]
    gains = day.scope.gains
    assert gains.significant and gains.teacher_gain_ci[0] > 0
    assert gains.eta is not None and 0.0 < gains.eta < 1.0
    assert gains.eta_ci is not None and gains.eta_ci[0] < gains.eta < gains.eta_ci[1]


def test_no_teacher_gain_means_eta_not_measurable() -> None:
    frame = predictions(0).with_columns(teacher=pl.col("student_raw"))
    gains = day_estimate(frame, "d", EVAL, seed=1).scope.gains
    assert gains.eta is None and gains.eta_ci is None and "not measurable" in (gains.note or "")


def test_stored_replicates_round_trip() -> None:
    daily = estimates(1)[0]
    cumulative = cumulative_estimate(None, daily, EVAL)
    frame = replicates_frame(daily, cumulative)
    back = from_stored(cumulative.scope, frame, "cumulative")
    assert back.point == pytest.approx(cumulative.point)
    for key in MODEL_KEYS:
        assert back.replicates[key] == pytest.approx(cumulative.replicates[key])


def test_a_single_tower_student_has_no_aux_column_and_still_reports() -> None:
    frame = predictions(0).with_columns(student_aux=pl.lit(float("nan")))
    day = day_estimate(frame, "d", EVAL, seed=0)
    assert "student_aux" not in day.point and day.scope.auc["student_aux"] is None
    assert day.scope.gains.teacher_gain > 0


def test_calibration_bins_add_up_over_days() -> None:
    frames = [predictions(seed) for seed in range(3)]

    def bins(frame: pl.DataFrame) -> list:
        return calibration_bins(frame["teacher"].to_numpy(), frame["label"].to_numpy().astype(float),
                                frame["p_true"].to_numpy())

    whole = bins(pl.concat(frames))
    combined = combine([bins(f) for f in frames])
    assert [b.n for b in combined] == [b.n for b in whole]
    for field in ("sum_predicted", "sum_label", "sum_p_true"):
        assert [getattr(b, field) for b in combined] == pytest.approx([getattr(b, field) for b in whole])
    stats = summary(whole)
    all_rows = pl.concat(frames)
    assert stats["mean_predicted"] == pytest.approx(all_rows["teacher"].mean())
    assert stats["observed_rate"] == pytest.approx(all_rows["label"].mean())
    assert 0 <= stats["ece_p_true"] < stats["ece_observed"] + 0.1


def _report(student: str, index: int, previous: DayEstimate | None) -> tuple[TransferabilityReport, DayEstimate]:
    day = DAYS[index]
    frame = predictions(index)
    daily = day_estimate(frame, day.isoformat(), EVAL, seed=index)
    cumulative = cumulative_estimate(previous, daily, EVAL)
    labels = frame["label"].to_numpy().astype(float)
    report = TransferabilityReport(
        version=f"{student}/report@{day}#abc", student=student, role="ranking" if student == "ranker" else "prerank",
        profile="tiny", day=day.isoformat(), eval_day=(day + timedelta(days=1)).isoformat(),
        daily=daily.scope, cumulative=cumulative.scope,
        calibration={key: calibration_bins(frame[key].to_numpy(), labels, frame["p_true"].to_numpy())
                     for key in MODEL_KEYS},
        losses=LossSummary(alpha=3.0, task_loss=0.5, distill_loss=0.05,
                           history=[{"step": 10.0, "task_loss": 0.5, "distill_loss": 0.04}]),
        snapshots={"teacher": f"teacher@{day}#abc", "distilled": f"{student}/distilled@{day}#abc",
                   "baseline": f"{student}/baseline@{day}#abc"},
        mlflow_runs={"teacher": "t" * 32, "distilled": None, "baseline": "b" * 32},
        teacher_snapshots_in_student=[f"teacher@{day}#abc"],
        parameters=Parameters(teacher=4000, student=1000, served=900, served_to_teacher=0.225),
        serving=ServingCost(batch_size=512, student_us=1.0, teacher_us=12.0),
        inputs={}, predictions="p", replicates="r",
    )
    return report, cumulative


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    store = ArtifactStore(str(tmp_path))
    for student in ("ranker", "prerank"):
        previous = None
        for index in range(len(DAYS)):
            report, previous = _report(student, index, previous)
            store.write_json(layout.report_path(student, DAYS[index]), report.model_dump(mode="json"))
    return store


def test_report_json_round_trips_through_the_schema(store: ArtifactStore) -> None:
    stored = store.read_json(layout.report_path("ranker", DAYS[-1]))
    report = TransferabilityReport.model_validate(stored)
    assert report.cumulative.days == [d.isoformat() for d in DAYS]
    assert report.auc_aggregation.startswith("within-day")
    with pytest.raises(ValueError, match="extra"):
        TransferabilityReport.model_validate({**stored, "unexpected": 1})


def test_student_page_is_self_contained_and_leads_with_absolute_gains(store: ArtifactStore) -> None:
    page = build_student_page(CONFIG, store, "ranker", DAYS[-1])
    html = page.html("../index.html")
    assert html.count('src="data:image/png;base64,') == len(page.plots) == 5
    headline = re.search(r'<p class="headline">(.*?)</p>', html, re.S)
    assert headline and headline.group(1).index("teacher gain") < headline.group(1).index("η =")
    assert "Bayes limit" in headline.group(1)
    for model in REPORT_MODELS:
        assert model.label in html
    assert 'href="../index.html"' in html


def test_index_compares_every_student(store: ArtifactStore) -> None:
    html = build_index(CONFIG, store)
    for student in ("ranker", "prerank"):
        assert f'href="{student}/index.html"' in html
    assert html.count("<tr>") == 1 + 2  # header + one row per student
    assert "12× cheaper" in html  # teacher 12 µs vs student 1 µs per prediction


def test_publish_writes_day_page_student_index_and_students_index(store: ArtifactStore, tmp_path) -> None:
    page, urls = publish_report(CONFIG, store, "prerank", DAYS[1])
    assert page.day == DAYS[1].isoformat()
    assert urls["report.html"].endswith(layout.report_path("prerank", DAYS[1], "report.html"))
    student_index = (tmp_path / layout.student_index_path("prerank")).read_text()
    assert DAYS[-1].isoformat() in student_index  # the index covers every day, not just the one published
    assert (tmp_path / layout.INDEX_PATH).exists()
    assert 'href="../../index.html"' in (tmp_path / layout.report_path("prerank", DAYS[1], "report.html")).read_text()


def test_terminal_table_has_every_day_and_the_cumulated_line(store: ArtifactStore) -> None:
    from recdistill_dagster.report.history import report_history

    text = summary_table(report_history(CONFIG, store, "ranker"))
    assert text.startswith("ranker (ranking)")
    for day in DAYS:
        assert day.isoformat() in text
    assert "cumulated (within-day) over 3 report day(s)" in text
    assert BAYES.label.split()[0].lower() in text  # the bayes column


def test_report_history_up_to_a_day(store: ArtifactStore) -> None:
    from recdistill_dagster.report.history import report_history

    assert [r.day for r in report_history(CONFIG, store, "ranker", DAYS[1])] == [d.isoformat() for d in DAYS[:2]]
    assert report_history(CONFIG, store, "nobody") == []
    assert isinstance(date.fromisoformat(report_history(CONFIG, store, "prerank")[-1].day), date)
