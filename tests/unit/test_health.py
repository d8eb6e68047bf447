"""The teacher health verdict and its held-out rows, as pure math (no Dagster, no model)."""

import numpy as np
import pytest

from models.metrics import auc
from recdistill_dagster.config import HealthConfig, SamplingPolicy
from recdistill_dagster.health import HealthInputs, assess_teacher, holdout_rows

CONFIG = HealthConfig()
RNG = np.random.default_rng(7)
LABELS = (RNG.random(4000) < 0.1).astype(np.float64)
GOOD = LABELS * 1.5 + RNG.normal(0.0, 1.0, LABELS.size) - 2.0  # informative logits


def inputs(**overrides) -> HealthInputs:
    values = dict(recorded_logits=GOOD[:1000], holdout_labels=LABELS, holdout_scores=GOOD, holdout_weights=None,
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


def _sample(labels: np.ndarray, sources: np.ndarray, policy: SamplingPolicy, seed: int) -> np.ndarray:
    """Rows a teacher with this policy trains on (the sampler's rule: keep by label and source)."""
    keep = np.where(labels > 0.5, np.asarray(policy.positive_keep_by_source)[sources], policy.negative_keep)
    return np.flatnonzero(np.random.default_rng(seed).random(labels.size) < keep)


def test_holdout_uses_sources_where_both_classes_are_left_out() -> None:
    sources = RNG.integers(0, 3, LABELS.size)
    policy = SamplingPolicy(negative_keep=0.5, positive_keep_by_source=(1.0, 1.0, 0.5))
    trained = _sample(LABELS, sources, policy, seed=1)
    held_out = holdout_rows(LABELS, sources, trained, policy, min_per_class=20)
    assert not held_out.whole_day and held_out.sources == (2,)
    assert not held_out.rows[trained].any() and (sources[held_out.rows] == 2).all()
    assert held_out.weights is not None and held_out.weights.size == held_out.rows.sum()


def test_holdout_auc_is_not_biased_by_per_source_positive_rates() -> None:
    # Source 1 scores lower for everyone, and keeps 90% of its positives vs 10% for source 0: the
    # raw held-out positives come mostly from source 0, so an unweighted AUC rewards the offset.
    rng = np.random.default_rng(3)
    n = 400_000
    sources = rng.integers(0, 2, n)
    labels = (rng.random(n) < 0.1).astype(np.float64)
    scores = labels * 1.0 + rng.normal(0.0, 1.0, n) - 2.0 * sources
    policy = SamplingPolicy(negative_keep=0.5, positive_keep_by_source=(0.1, 0.9))
    trained = _sample(labels, sources, policy, seed=4)
    held_out = holdout_rows(labels, sources, trained, policy, min_per_class=20)
    assert held_out.sources == (0, 1)
    whole_day = auc(scores, labels)
    rows = held_out.rows
    unweighted = auc(scores[rows], labels[rows])
    weighted = auc(scores[rows], labels[rows], held_out.weights)
    assert abs(unweighted - whole_day) > 0.1  # the bias this guards against is real (about 0.15)
    assert weighted == pytest.approx(whole_day, abs=0.02)  # sampling noise is about 0.004


def test_a_teacher_keeping_every_negative_compares_on_the_whole_day() -> None:
    # Only dropped positives are left out: an AUC needs both classes.
    sources = RNG.integers(0, 3, LABELS.size)
    policy = SamplingPolicy(negative_keep=1.0, positive_keep_by_source=(0.5, 0.5, 0.5))
    trained = _sample(LABELS, sources, policy, seed=2)
    held_out = holdout_rows(LABELS, sources, trained, policy, min_per_class=20)
    assert held_out.whole_day and held_out.rows.all() and held_out.weights is None
    verdict = assess_teacher(inputs(holdout_whole_day=True), CONFIG)
    assert verdict.passed and "whole day" in verdict.description
