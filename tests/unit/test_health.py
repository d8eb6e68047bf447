"""The teacher health verdict and its held-out rows, as pure math (no Dagster, no model)."""

import numpy as np
import pytest

from recdistill_dagster.config import HealthConfig
from recdistill_dagster.health import HealthInputs, assess_teacher, holdout_rows

CONFIG = HealthConfig()
RNG = np.random.default_rng(7)
LABELS = (RNG.random(4000) < 0.1).astype(np.float64)
GOOD = LABELS * 1.5 + RNG.normal(0.0, 1.0, LABELS.size) - 2.0  # informative logits


def inputs(**overrides) -> HealthInputs:
    values = dict(recorded_logits=GOOD[:1000], holdout_labels=LABELS, holdout_scores=GOOD,
                  reference_holdout_scores=GOOD + RNG.normal(0.0, 0.05, LABELS.size),
                  mean_predicted_rate=0.1, observed_rate=0.1, reference_snapshot="teacher@2026-01-01#aaaa0000")
    values.update(overrides)
    return HealthInputs(**values)


def test_a_healthy_snapshot_passes() -> None:
    verdict = assess_teacher(inputs(), CONFIG)
    assert verdict.passed, verdict.failures
    assert verdict.metrics["auc_drop"] == pytest.approx(0.0, abs=0.01)


def test_each_rule_fails_on_its_own() -> None:
    nan = GOOD[:1000].copy()
    nan[3] = np.nan
    assert "NaN or infinite" in assess_teacher(inputs(recorded_logits=nan), CONFIG).description
    noise = RNG.normal(-2.0, 1.0, LABELS.size)  # an uninformative snapshot with the same spread
    assert "held-out AUC" in assess_teacher(inputs(holdout_scores=noise), CONFIG).description
    assert "relative error" in assess_teacher(inputs(mean_predicted_rate=0.25), CONFIG).description
    shifted = assess_teacher(inputs(holdout_scores=GOOD + 5.0), CONFIG)
    assert not shifted.passed and "logit mean moved" in shifted.description
    assert "spread changed" in assess_teacher(inputs(holdout_scores=GOOD * 10.0), CONFIG).description


def test_holdout_keeps_untrained_rows_when_both_classes_are_there() -> None:
    trained = np.arange(0, LABELS.size, 2)
    holdout, whole_day = holdout_rows(LABELS, trained, min_per_class=20)
    assert not whole_day and not holdout[trained].any() and holdout.sum() == LABELS.size - trained.size


def test_a_one_class_holdout_falls_back_to_the_whole_day() -> None:
    # The teacher kept every negative: only dropped positives are held out, an AUC needs both classes.
    positives = np.flatnonzero(LABELS == 1)
    trained = np.setdiff1d(np.arange(LABELS.size), positives[:50])
    holdout, whole_day = holdout_rows(LABELS, trained, min_per_class=20)
    assert whole_day and holdout.all()
