"""AUC against its pairwise definition, and the paired bootstrap of the gains and η."""

import math

import numpy as np
import pytest

from models.metrics import SeedRun, auc, logloss, paired_bootstrap_gains, poisson1_weights, pooled_seed_gains


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    w = np.ones_like(scores) if weights is None else weights
    pos, neg = labels == 1, labels == 0
    p, n = scores[pos][:, None], scores[neg][None, :]
    wins = (p > n) + 0.5 * (p == n)
    pair_w = w[pos][:, None] * w[neg][None, :]
    return float((wins * pair_w).sum() / pair_w.sum())


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        scores = rng.integers(0, 6, 300).astype(float)  # many ties
        labels = (rng.random(300) < 0.3).astype(float)
        assert auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels), abs=1e-12)
        continuous = rng.normal(size=300)
        assert auc(continuous, labels) == pytest.approx(_pairwise_auc(continuous, labels), abs=1e-12)


def test_weighted_auc_equals_auc_of_replicated_rows() -> None:
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 8, 400).astype(float)
    labels = (rng.random(400) < 0.4).astype(float)
    counts = rng.poisson(1.0, 400).astype(np.uint8)
    expanded = np.repeat(np.arange(400), counts)
    replicated = _pairwise_auc(scores[expanded], labels[expanded])
    assert auc(scores, labels, counts) == pytest.approx(replicated, abs=1e-12)
    real = rng.random(400)
    assert auc(scores, labels, real) == pytest.approx(_pairwise_auc(scores, labels, real), abs=1e-12)


def test_auc_edge_cases() -> None:
    assert math.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert auc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert logloss(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(np.log(2))
    assert np.isfinite(logloss(np.array([0.0, 1.0]), np.array([1, 0])))  # clipped, not inf


def test_poisson_weights_have_the_poisson_distribution() -> None:
    w = poisson1_weights(np.random.default_rng(0), 1_000_000)
    assert w.dtype == np.uint8
    assert w.mean() == pytest.approx(1.0, abs=0.005) and w.var() == pytest.approx(1.0, abs=0.01)
    freq = np.bincount(w, minlength=5)[:5] / w.size
    expected = [math.exp(-1) / math.factorial(k) for k in range(5)]
    assert np.allclose(freq, expected, atol=0.002)


def _gaussian_scores(rng: np.random.Generator, labels: np.ndarray, separation: float) -> np.ndarray:
    # Class-conditional N(0, 1) vs N(d, 1): AUC = Φ(d / √2).
    return separation * labels + rng.normal(size=labels.size)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_eta_and_its_interval_on_scores_with_known_aucs() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(60_000) < 0.3).astype(float)
    d_raw, d_teacher, d_distill = 0.5, 1.5, 1.0
    scores = {"t": _gaussian_scores(rng, labels, d_teacher), "r": _gaussian_scores(rng, labels, d_raw),
              "d": _gaussian_scores(rng, labels, d_distill)}
    auc_r, auc_t, auc_d = (_phi(d / math.sqrt(2)) for d in (d_raw, d_teacher, d_distill))
    expected_eta = (auc_d - auc_r) / (auc_t - auc_r)  # ≈ 0.56
    est = paired_bootstrap_gains(labels, scores, teacher="t", student_raw="r", student_distill="d",
                                 n_boot=200, seed=0)
    assert est.significant and est.reason is None and est.n == labels.size
    assert est.teacher_gain == pytest.approx(auc_t - auc_r, abs=0.01)
    assert est.eta == pytest.approx(est.distill_gain / est.teacher_gain)
    assert est.eta == pytest.approx(expected_eta, abs=0.06)
    assert est.eta_ci[0] < expected_eta < est.eta_ci[1]
    assert est.teacher_gain_ci[0] < auc_t - auc_r < est.teacher_gain_ci[1]
    assert est.distill_gain_ci[0] < auc_d - auc_r < est.distill_gain_ci[1]
    again = paired_bootstrap_gains(labels, scores, teacher="t", student_raw="r", student_distill="d",
                                   n_boot=200, seed=0)
    assert again == est  # deterministic given the seed


def test_eta_is_not_measurable_without_a_teacher_gain() -> None:
    rng = np.random.default_rng(6)
    labels = (rng.random(20_000) < 0.3).astype(float)
    raw = _gaussian_scores(rng, labels, 0.5)
    est = paired_bootstrap_gains(labels, {"t": raw, "r": raw, "d": _gaussian_scores(rng, labels, 1.0)},
                                 teacher="t", student_raw="r", student_distill="d", n_boot=50, seed=0)
    assert est.eta is None and est.eta_ci is None and not est.significant
    assert est.teacher_gain == 0.0 and "not measurable" in est.reason
    assert est.distill_gain > 0  # still reported


def _seed_run(rng: np.random.Generator, n: int, d_raw: float, d_teacher: float, d_distill: float) -> SeedRun:
    labels = (rng.random(n) < 0.3).astype(float)
    return SeedRun(labels, {"t": _gaussian_scores(rng, labels, d_teacher), "r": _gaussian_scores(rng, labels, d_raw),
                            "d": _gaussian_scores(rng, labels, d_distill)})


def test_pooled_eta_is_the_ratio_of_mean_gains_with_per_seed_detail() -> None:
    rng = np.random.default_rng(7)
    runs = [_seed_run(rng, 20_000, 0.5, 1.5, d) for d in (0.8, 1.0, 1.2)]  # seeds that differ
    est = pooled_seed_gains(runs, teacher="t", student_raw="r", student_distill="d", n_boot=100, seed=0)
    per_t = [auc(r.scores["t"], r.labels) - auc(r.scores["r"], r.labels) for r in runs]
    per_d = [auc(r.scores["d"], r.labels) - auc(r.scores["r"], r.labels) for r in runs]
    assert est.n_seeds == 3 and est.n_rows == 60_000 and len(est.per_seed) == 3
    assert est.teacher_gain == pytest.approx(np.mean(per_t)) and est.distill_gain == pytest.approx(np.mean(per_d))
    assert est.eta == pytest.approx(np.mean(per_d) / np.mean(per_t))
    assert [s["eta"] for s in est.per_seed] == pytest.approx([d / t for d, t in zip(per_d, per_t, strict=True)])
    assert est.significant and est.eta_ci[0] < est.eta < est.eta_ci[1]
    # Seed-to-seed spread widens the interval beyond the row noise of any single seed.
    single = pooled_seed_gains(runs[1:2], teacher="t", student_raw="r", student_distill="d", n_boot=100, seed=0)
    assert est.eta_ci[1] - est.eta_ci[0] > single.eta_ci[1] - single.eta_ci[0]
    assert pooled_seed_gains(runs, teacher="t", student_raw="r", student_distill="d", n_boot=100, seed=0) == est


def test_pooled_with_one_seed_is_the_paired_row_bootstrap() -> None:
    rng = np.random.default_rng(8)
    run = _seed_run(rng, 20_000, 0.5, 1.5, 1.0)
    pooled = pooled_seed_gains([run], teacher="t", student_raw="r", student_distill="d", n_boot=60, seed=3)
    paired = paired_bootstrap_gains(run.labels, run.scores, teacher="t", student_raw="r", student_distill="d",
                                    n_boot=60, seed=3)
    assert pooled.eta == pytest.approx(paired.eta) and pooled.eta_ci == pytest.approx(paired.eta_ci)
    assert pooled.teacher_gain_ci == pytest.approx(paired.teacher_gain_ci)


def test_pooled_eta_not_measurable_without_teacher_gain() -> None:
    rng = np.random.default_rng(9)
    runs = [_seed_run(rng, 10_000, 0.5, 0.5, 1.0) for _ in range(2)]
    for run in runs:
        run.scores["t"] = run.scores["r"]
    est = pooled_seed_gains(runs, teacher="t", student_raw="r", student_distill="d", n_boot=40, seed=0)
    assert est.eta is None and est.eta_ci is None and not est.significant and "not measurable" in est.reason
    with pytest.raises(ValueError):
        pooled_seed_gains([], teacher="t", student_raw="r", student_distill="d", n_boot=10, seed=0)
