"""AUC against its pairwise definition; within-day AUC, the hierarchical bootstrap, seed-level intervals."""

import math

import numpy as np
import pytest

from models.metrics import (
    World,
    auc,
    bootstrap_aucs,
    count_distinct_rows,
    fieller_interval,
    gains_from_replicates,
    logloss,
    paired_bootstrap_gains,
    poisson1_weights,
    ratio_estimate,
    replicate_aucs,
    t_interval,
    t_quantile,
)


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


def _run(rng: np.random.Generator, labels: np.ndarray, d_raw: float, d_teacher: float,
         d_distill: float) -> dict[str, np.ndarray]:
    return {"t": _gaussian_scores(rng, labels, d_teacher), "r": _gaussian_scores(rng, labels, d_raw),
            "d": _gaussian_scores(rng, labels, d_distill)}


def _world(rng: np.random.Generator, key: str, n: int, n_days: int, seeds: list[tuple[float, float, float]]) -> World:
    labels = (rng.random(n) < 0.3).astype(float)
    return World(key, labels, rng.integers(0, n_days, n), [_run(rng, labels, *s) for s in seeds])


def _width(ci: tuple[float, float]) -> float:
    return ci[1] - ci[0]


def test_within_day_auc_ignores_day_offsets_that_pooled_auc_punishes() -> None:
    rng = np.random.default_rng(10)
    n = 4000
    labels = (rng.random(n) < 0.3).astype(float)
    days = np.repeat([0, 1], n // 2)
    # Ranks perfectly within each day, but day 1's scores sit 5 below day 0's (a calibration swing).
    scores = labels + rng.uniform(0, 0.5, n) - 5.0 * days
    noisy = labels + rng.normal(0, 1.0, n)
    world = World("w", labels, days, [{"swing": scores, "noisy": noisy}])
    within = bootstrap_aucs([world], ("swing", "noisy"), n_boot=10, seed=0)
    pooled = bootstrap_aucs([world], ("swing", "noisy"), n_boot=10, seed=0, aggregation="pooled_auc")
    assert within.aggregation == "mean_daily_auc" and within.point["swing"] == 1.0
    assert pooled.point["swing"] < 0.8
    daily = [auc(noisy[days == d], labels[days == d]) for d in (0, 1)]
    assert within.point["noisy"] == pytest.approx(np.mean(daily), abs=1e-12)
    assert pooled.point["noisy"] == pytest.approx(auc(noisy, labels), abs=1e-12)


def test_copies_of_one_seed_give_exactly_the_single_seed_interval() -> None:
    """Seeds of one world share rows: three identical seeds carry no more evidence than one.

    (The earlier seed-pooled bootstrap drew independent row weights per drawn seed and returned an
    interval about half as wide here.)"""
    rng = np.random.default_rng(11)
    one = _world(rng, "w", 20_000, 4, [(0.5, 1.5, 1.0)])
    three = World("w", one.labels, one.days, [one.seeds[0]] * 3)
    single = bootstrap_aucs([one], ("t", "r", "d"), n_boot=80, seed=4)
    copies = bootstrap_aucs([three], ("t", "r", "d"), n_boot=80, seed=4)
    for model in ("t", "r", "d"):
        np.testing.assert_allclose(copies.replicates[model], single.replicates[model], rtol=0, atol=1e-12)
    assert copies.difference("d", "r").ci == pytest.approx(single.difference("d", "r").ci, abs=1e-12)
    eta1 = ratio_estimate(single, ("d", "r"), ("t", "r"))
    eta3 = ratio_estimate(copies, ("d", "r"), ("t", "r"))
    assert eta3.ratio_ci == pytest.approx(eta1.ratio_ci, abs=1e-9) and _width(eta3.ratio_ci) > 0
    assert count_distinct_rows([three]) == 20_000


def test_a_world_entered_twice_is_refused() -> None:
    rng = np.random.default_rng(12)
    world = _world(rng, "w", 2000, 2, [(0.5, 1.5, 1.0)])
    with pytest.raises(ValueError, match="repeat a key"):
        bootstrap_aucs([world, world], ("t", "r"), n_boot=5, seed=0)


def test_between_world_spread_widens_the_interval_and_points_are_means_of_means() -> None:
    rng = np.random.default_rng(13)
    same = [_world(rng, f"w{i}", 8000, 3, [(0.5, 1.5, 1.0), (0.5, 1.5, 1.0)]) for i in range(4)]
    spread = [_world(rng, f"w{i}", 8000, 3, [(0.5, 1.5, d), (0.5, 1.5, d)]) for i, d in enumerate((0.6, 0.8, 1.2, 1.4))]
    calm = bootstrap_aucs(same, ("t", "r", "d"), n_boot=100, seed=0)
    wild = bootstrap_aucs(spread, ("t", "r", "d"), n_boot=100, seed=0)
    assert _width(wild.difference("d", "r").ci) > 2 * _width(calm.difference("d", "r").ci)
    per_world = [np.mean([np.mean([auc(s["d"][w.days == day], w.labels[w.days == day]) for day in range(3)])
                          for s in w.seeds]) for w in spread]
    assert wild.point["d"] == pytest.approx(np.mean(per_world), abs=1e-12)
    assert wild.n_distinct_rows == 4 * 8000 and wild.seeds_per_world == [2, 2, 2, 2]


def test_t_quantiles_match_tables() -> None:
    for df, expected in ((1, 12.7062047), (2, 4.3026527), (5, 2.5705818), (10, 2.2281389), (30, 2.0422725)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    assert t_quantile(0.95, 3) == pytest.approx(2.3533634, abs=1e-6)
    units = np.array([0.01, 0.02, 0.015, 0.03])
    low, high = t_interval(units)
    half = 3.1824463 * units.std(ddof=1) / 2
    assert (low, high) == pytest.approx((units.mean() - half, units.mean() + half), abs=1e-9)
    assert t_interval(units[:1]) is None


def test_fieller_interval_is_the_set_of_ratios_not_rejected() -> None:
    rng = np.random.default_rng(14)
    den = 0.03 + rng.normal(0, 0.004, 5)
    num = 0.6 * den + rng.normal(0, 0.002, 5)
    low, high = fieller_interval(num, den)
    t2 = t_quantile(0.975, 4) ** 2
    grid = np.linspace(0.0, 1.5, 30001)
    diff = num[None, :] - grid[:, None] * den[None, :]  # units of ā − ρ·b̄
    accepted = grid[diff.mean(axis=1) ** 2 <= t2 * diff.var(axis=1, ddof=1) / 5]
    assert low == pytest.approx(accepted.min(), abs=1e-4) and high == pytest.approx(accepted.max(), abs=1e-4)
    assert low < num.mean() / den.mean() < high
    # A denominator indistinguishable from zero gives no bounded interval.
    assert fieller_interval(num, np.array([0.01, -0.01, 0.02, -0.015, 0.0])) is None


def test_eta_with_bootstrap_and_seed_level_intervals_over_worlds() -> None:
    rng = np.random.default_rng(15)
    worlds = [_world(rng, f"w{i}", 10_000, 4, [(0.5, 1.5, 1.0), (0.5, 1.5, 1.0)]) for i in range(4)]
    boot = bootstrap_aucs(worlds, ("t", "r", "d"), n_boot=100, seed=1)
    eta = ratio_estimate(boot, ("d", "r"), ("t", "r"))
    auc_r, auc_t, auc_d = (_phi(d / math.sqrt(2)) for d in (0.5, 1.5, 1.0))
    expected = (auc_d - auc_r) / (auc_t - auc_r)
    assert eta.significant and eta.ratio == pytest.approx(eta.numerator.point / eta.denominator.point)
    assert eta.ratio_ci[0] < expected < eta.ratio_ci[1]
    assert eta.ratio_ci_seed_level[0] < expected < eta.ratio_ci_seed_level[1]
    assert eta.seed_level_units == "worlds" and eta.n_units == 4
    units = boot.per_world["t"] - boot.per_world["r"]
    assert eta.denominator_ci_seed_level == pytest.approx(t_interval(units))
    again = ratio_estimate(bootstrap_aucs(worlds, ("t", "r", "d"), n_boot=100, seed=1), ("d", "r"), ("t", "r"))
    assert again == eta  # deterministic given the seed


def test_paired_delta_eta_between_cells_sharing_teacher_baseline_and_rows() -> None:
    rng = np.random.default_rng(16)
    worlds = []
    for i in range(3):
        w = _world(rng, f"w{i}", 20_000, 4, [(0.5, 1.5, 1.0)])
        for scores in w.seeds:
            scores["d_better"] = _gaussian_scores(rng, w.labels, 1.2)
            scores["d_same"] = scores["d"]
        worlds.append(w)
    boot = bootstrap_aucs(worlds, ("t", "r", "d", "d_better", "d_same"), n_boot=100, seed=2)
    delta = ratio_estimate(boot, ("d_better", "d"), ("t", "r"))
    eta_a = ratio_estimate(boot, ("d_better", "r"), ("t", "r")).ratio
    eta_b = ratio_estimate(boot, ("d", "r"), ("t", "r")).ratio
    assert delta.ratio == pytest.approx(eta_a - eta_b)
    assert delta.ratio_ci[0] > 0  # the better cell's advantage is resolved by the pairing
    null = ratio_estimate(boot, ("d_same", "d"), ("t", "r"))
    assert null.ratio == 0.0 and null.ratio_ci == (0.0, 0.0)


def test_ratio_not_measurable_without_a_denominator_gain() -> None:
    rng = np.random.default_rng(17)
    w = _world(rng, "w", 10_000, 2, [(0.5, 0.5, 1.0)])
    w.seeds[0]["t"] = w.seeds[0]["r"]
    est = ratio_estimate(bootstrap_aucs([w], ("t", "r", "d"), n_boot=30, seed=0), ("d", "r"), ("t", "r"))
    assert est.ratio is None and est.ratio_ci is None and not est.significant and "not measurable" in est.reason
    assert est.numerator.point > 0  # still reported


def test_paired_gains_within_day_and_pooled() -> None:
    rng = np.random.default_rng(18)
    labels = (rng.random(20_000) < 0.3).astype(float)
    days = rng.integers(0, 4, labels.size)
    scores = _run(rng, labels, 0.5, 1.5, 1.0)
    est = paired_bootstrap_gains(labels, scores, teacher="t", student_raw="r", student_distill="d", n_boot=40,
                                 seed=0, days=days)
    daily = [auc(scores["t"][days == d], labels[days == d]) - auc(scores["r"][days == d], labels[days == d])
             for d in range(4)]
    assert est.aggregation == "mean_daily_auc" and est.teacher_gain == pytest.approx(np.mean(daily))
    pooled = paired_bootstrap_gains(labels, scores, teacher="t", student_raw="r", student_distill="d", n_boot=40,
                                    seed=0)
    assert pooled.aggregation == "pooled_auc"
    assert pooled.teacher_gain == pytest.approx(auc(scores["t"], labels) - auc(scores["r"], labels))


def test_gains_from_replicates_agrees_with_the_world_bootstrap_of_one_day() -> None:
    """The pipeline's report (per-day replicates) and the benchmark (World bootstrap) read one η rule."""
    rng = np.random.default_rng(21)
    labels = (rng.random(8_000) < 0.3).astype(np.float64)
    scores = {m: _gaussian_scores(rng, labels, d) for m, d in (("t", 1.5), ("r", 0.5), ("d", 1.0))}
    point, replicates = replicate_aucs(labels, scores, n_boot=50, seed=4)
    est = gains_from_replicates(point, replicates, teacher="t", student_raw="r", student_distill="d", level=0.95)
    boot = bootstrap_aucs([World("w", labels, np.zeros(labels.size), [scores])], ("t", "r", "d"), n_boot=50, seed=4)
    ratio = ratio_estimate(boot, ("d", "r"), ("t", "r"))
    assert est.eta == pytest.approx(ratio.ratio) and est.teacher_gain == pytest.approx(ratio.denominator.point)
    assert est.significant and ratio.significant
    assert est.eta_ci is not None and est.eta_ci[0] < est.eta < est.eta_ci[1]
    flat = gains_from_replicates(point, replicates, teacher="r", student_raw="r", student_distill="d", level=0.95)
    assert flat.eta is None and not flat.significant and flat.reason and "not measurable" in flat.reason
