"""The HTML report and its plots, from stored report JSONs and predictions (no Dagster, no MLflow)."""

import re
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from recdistill_dagster import layout
from recdistill_dagster.config import load_config
from recdistill_dagster.report_site import (
    INDEX_PATH,
    StudentLosses,
    build_report,
    calibration_bins,
    calibration_summary,
    plot_calibration,
    student_losses,
    write_report,
)
from resources import ArtifactStore

CONFIG = load_config("tiny")
DAYS = CONFIG.calendar.training_days()
PNG = b"\x89PNG"


def fake_report(index: int, eta: float | None) -> dict:
    day = DAYS[index]
    numbers = {"teacher_auc": 0.60 + 0.01 * index, "student_raw_auc": 0.55, "student_distill_auc": 0.57,
               "student_aux_auc": 0.571, "bayes_auc": 0.85, "teacher_gain": 0.05, "teacher_gain_ci": [0.02, 0.08],
               "distill_gain": 0.02, "distill_gain_ci": [0.01, 0.03], "eta": eta,
               "eta_ci": [0.1, 0.7] if eta is not None else None,
               "eta_note": None if eta is not None else "teacher gain not significant", "n_eval": 1000}
    return {"day": day.isoformat(), "eval_day": (day + timedelta(days=1)).isoformat(), **numbers,
            "cumulative": {**numbers, "eta": 0.4, "eta_ci": [0.2, 0.6], "n_eval": 1000 * (index + 1)},
            "snapshots": {"teacher": f"teacher@{day}#abc", "student": f"student@{day}#abc",
                          "student_baseline": f"student_baseline@{day}#abc"},
            "mlflow_runs": {"teacher": "t" * 32, "student": f"student-run-{index}", "student_baseline": "b" * 32},
            "parameters": {"teacher": 4000, "student": 1000, "student_to_teacher": 0.25}}


def fake_predictions(seed: int, with_truth: bool = True) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    p_true = rng.beta(1, 20, 1000)
    label = (rng.random(1000) < p_true).astype(np.int8)
    noisy = np.clip(p_true * rng.lognormal(0, 0.3, 1000), 1e-4, 0.99)
    return pl.DataFrame({"label": label, "p_true": p_true if with_truth else [None] * 1000,
                         "teacher": noisy, "student_raw": noisy * 0.8, "student_distill": noisy * 0.9,
                         "student_aux": noisy})


class FakeMlflow:
    """get_run / get_metric_history like MlflowClient, for two runs; any other id is 'deleted'."""

    def get_run(self, run_id: str):
        if run_id == "student-run-2":
            raise LookupError(run_id)
        return SimpleNamespace(data=SimpleNamespace(metrics={"task_loss": 0.5, "distill_loss": 0.05}))

    def get_metric_history(self, run_id: str, key: str):
        value = 0.5 if key == "train/task_loss" else 0.04
        return [SimpleNamespace(step=step, value=value) for step in (100, 200)]


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    store = ArtifactStore(base_url=str(tmp_path))
    for index, eta in enumerate((0.35, None, 0.5)):
        store.write_json(layout.report_path(DAYS[index]), fake_report(index, eta))
        store.write_parquet(layout.report_path(DAYS[index], "predictions.parquet"), fake_predictions(index))
    return store


def test_page_is_self_contained_and_says_what_matters(store: ArtifactStore) -> None:
    page = build_report(CONFIG, store, DAYS[-1], FakeMlflow())
    assert set(page.plots) == {"auc_over_days", "eta_over_days", "calibration_day", "calibration_cumulative",
                               "loss_magnitudes"}
    assert all(png.startswith(PNG) for png in page.plots.values())
    # Every image inlined, nothing fetched from elsewhere.
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page.html)) == len(page.plots)
    assert not re.search(r'(src|href)="(?!data:)', page.html)
    assert "<b>η = 0.400</b> [0.200, 0.600]" in page.html  # the cumulative headline
    for day in DAYS:
        assert day.isoformat() in page.html
    assert "η not measurable — teacher gain not significant" in page.html
    ratio = CONFIG.student.distill.alpha * 0.05 / 0.5  # α·L_distill / L_task
    assert f"<td>{ratio:.3f}</td>" in page.html
    assert "unavailable (LookupError)" in page.html  # a deleted MLflow run is said, not hidden


def test_write_report_stores_the_day_page_plots_and_index(store: ArtifactStore, tmp_path) -> None:
    page = build_report(CONFIG, store, DAYS[1], None)
    urls = write_report(store, page)
    assert (tmp_path / INDEX_PATH).read_text() == page.html
    assert (tmp_path / layout.report_path(DAYS[1], "report.html")).exists()
    assert (tmp_path / layout.report_path(DAYS[1], "plots/calibration_day.png")).read_bytes().startswith(PNG)
    assert set(urls) >= {"index.html", "report.html", "eta_over_days"}
    assert f"teacher@{DAYS[2]}#abc" not in page.html  # the page as of day 1 knows nothing of day 2


def test_no_report_yet_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="materialize transferability_report"):
        build_report(CONFIG, ArtifactStore(base_url=str(tmp_path)), DAYS[-1])


def test_calibration_bins_are_equal_count_and_exact() -> None:
    predicted = np.array([0.1, 0.2, 0.3, 0.4])
    labels = np.array([0.0, 1.0, 0.0, 1.0])
    rows = calibration_bins(predicted, labels, p_true=predicted, bins=2)
    assert [r["n"] for r in rows] == [2, 2]
    assert rows[0]["predicted"] == pytest.approx(0.15) and rows[0]["observed"] == pytest.approx(0.5)
    assert rows[1]["p_true"] == pytest.approx(0.35)


def test_calibration_without_ground_truth_draws_one_panel() -> None:
    frame = fake_predictions(0, with_truth=False)
    assert plot_calibration(frame, "MovieLens").startswith(PNG)
    summary = calibration_summary(frame)
    assert summary["teacher"]["mean_p_true"] is None and summary["teacher"]["ece_p_true"] is None
    assert summary["student_raw"]["mean_predicted"] == pytest.approx(0.8 * summary["teacher"]["mean_predicted"])


def test_loss_ratio_weighs_the_distill_loss_by_alpha() -> None:
    record = StudentLosses(day="2026-01-02", alpha=5.0, task_loss=0.5, distill_loss=0.01)
    assert record.ratio == pytest.approx(0.1)
    assert StudentLosses(day="2026-01-02", alpha=1.0, task_loss=0.5).ratio is None
    losses = student_losses(FakeMlflow(), [fake_report(0, 0.3)], alpha=2.0)
    assert losses[0].steps == [100, 200] and losses[0].ratio == pytest.approx(0.2)
    assert student_losses(None, [fake_report(0, 0.3)], alpha=1.0)[0].note == "no MLflow run recorded"
