"""AUC, LogLoss, and the intervals of teacher gain, distillation gain and η (DESIGN.md §1, §4).

- AUC per report day, aggregated as the mean over days (`WITHIN_DAY`), or pooled (secondary).
- `bootstrap_aucs`: a hierarchical paired bootstrap. Independent units are worlds (distinct
  evaluation rows); every model seed of a world scored the same rows, so a replicate draws worlds
  with replacement and one row-weight vector per drawn world, shared by all its models and seeds.
- Seed-level intervals beside it: Student t on the gains and Fieller on ratios (η, Δη, ρ), over
  the independent units.
- `ratio_estimate`: η, a paired Δη between two cells sharing teacher, baseline and rows, or the
  ceiling ratio ρ, all as (AUC(a) − AUC(b)) / (AUC(c) − AUC(d)).

The bootstrap re-weights rows instead of re-sampling them: a replicate draws one Poisson(1) count
per row and each model's AUC is a weighted Mann–Whitney statistic over its scores, sorted once up
front. One replicate then costs a few O(n) passes per model, with no sort.
"""

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

# Poisson(1) by inversion on 32-bit uniforms: the count is how many CDF thresholds u reaches. Exact
# to 2^-32 per count probability (numpy's own Poisson sampler is ~4× slower, and it dominated the
# bootstrap's run time); counts ≥ 12 (probability ~1e-9) are capped at 12.
_POISSON1_THRESHOLDS = np.array(
    [round(sum(math.exp(-1) / math.factorial(j) for j in range(k + 1)) * 2**32) for k in range(12)],
    dtype=np.uint64,
).clip(max=2**32 - 1).astype(np.uint32)


def poisson1_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    """n iid Poisson(1) counts as uint8: one bootstrap replicate's row weights."""
    uniform = rng.integers(0, 2**32, size=n, dtype=np.uint32)
    counts = np.zeros(n, dtype=np.uint8)
    for threshold in _POISSON1_THRESHOLDS:
        counts += uniform >= threshold
    return counts


def auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Rank AUC with tied scores counted half (Mann–Whitney), optionally with row weights; O(n log n).

    NaN when there is no positive or no negative (weight).
    """
    return RankedScores(scores, labels).auc(weights)


class RankedScores:
    """One model's scores, ranked once; `auc(weights)` is then O(n) for any row weights.

    For every positive row we precompute where its score falls among the negatives sorted by score:
    `below` negatives score strictly lower, `not_above` score lower or equal. With cumulative
    negative weights C (in that sorted order) the weighted count of negatives a positive beats is
    C[below] + ½·(C[not_above] − C[below]), ties counting half.
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels)
        if scores.shape != labels.shape or scores.ndim != 1:
            raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-d shapes")
        positive = labels > 0.5
        self.n = scores.size
        self.positive_idx = np.flatnonzero(positive)  # (P,)
        negative_idx = np.flatnonzero(~positive)
        order = np.argsort(scores[negative_idx], kind="stable")
        self.negative_sorted_idx = negative_idx[order]  # (N,) row ids of negatives, ascending score
        negative_scores = scores[self.negative_sorted_idx]
        positive_scores = scores[self.positive_idx]
        self.below = np.searchsorted(negative_scores, positive_scores, side="left")  # (P,)
        self.not_above = np.searchsorted(negative_scores, positive_scores, side="right")  # (P,)

    def auc(self, weights: np.ndarray | None = None) -> float:
        if weights is None:
            n_pos, n_neg = self.positive_idx.size, self.negative_sorted_idx.size
            if n_pos == 0 or n_neg == 0:
                return float("nan")
            # Unit weights: C[k] = k, so the count is below + ½·(not_above − below).
            wins2 = float(np.sum(self.below + self.not_above, dtype=np.float64))
            return wins2 / (2.0 * n_pos * n_neg)
        weights = np.asarray(weights)
        if weights.shape != (self.n,):
            raise ValueError(f"weights must have shape ({self.n},), got {weights.shape}")
        # Integer weights (bootstrap counts) accumulate exactly and several times faster in int64.
        accumulate = np.int64 if np.issubdtype(weights.dtype, np.integer) else np.float64
        negative_w = weights[self.negative_sorted_idx]
        cumulative = np.zeros(negative_w.size + 1, dtype=accumulate)
        np.cumsum(negative_w, dtype=accumulate, out=cumulative[1:])
        total_neg = float(cumulative[-1])
        positive_w = weights[self.positive_idx].astype(np.float64)
        total_pos = float(positive_w.sum())
        if total_pos <= 0 or total_neg <= 0:
            return float("nan")
        weighted_wins2 = positive_w @ (cumulative[self.below] + cumulative[self.not_above]).astype(np.float64)
        return float(weighted_wins2 / (2.0 * total_pos * total_neg))


def logloss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities, clipped to [eps, 1 − eps]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# --------------------------------------------------------------------------- within-day AUC

AucAggregation = Literal["mean_daily_auc", "pooled_auc"]
# The headline aggregation. Progressive validation scores day d+1 with the models after day d, a
# different model state each day; pooling the days would pit one day's positives against another
# day's negatives and reward day-to-day calibration instead of ranking. The mean of the daily AUCs
# compares only rows scored by the same model state and weights every report day alike (what a
# daily dashboard shows); its bootstrap needs nothing beyond the per-day AUCs.
WITHIN_DAY: AucAggregation = "mean_daily_auc"


class _DailyRanks:
    """One model's scores on one world's rows, ranked per report day: (weights (n,)) → aggregated AUC."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray, groups: list[np.ndarray]) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != labels.shape:
            raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ")
        if not np.isfinite(scores).all():
            raise ValueError("scores must be finite (leave a model out rather than pass NaN)")
        self.groups = groups
        self.ranked = [RankedScores(scores[idx], labels[idx]) for idx in groups]

    def auc(self, weights: np.ndarray | None = None) -> float:
        if weights is None:
            return float(np.mean([r.auc() for r in self.ranked]))
        return float(np.mean([r.auc(weights[idx]) for r, idx in zip(self.ranked, self.groups, strict=True)]))


@dataclass
class World:
    """One independent set of evaluation rows and every model seed's scores on exactly those rows.

    `key` names the rows (in the benchmark: the synthetic world's data seed). Runs that scored the
    same rows must be seeds of one World, never separate Worlds: the bootstrap resamples Worlds as
    independent units and shares one row-weight vector across a World's seeds.
    """

    key: str
    labels: np.ndarray  # (n,) 0/1
    days: np.ndarray  # (n,) report day of each row (any sortable ids)
    seeds: list[dict[str, np.ndarray]]  # one per model seed: model name → (n,) scores

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        self.days = np.asarray(self.days)
        if self.labels.ndim != 1 or self.days.shape != self.labels.shape:
            raise ValueError(f"world {self.key}: labels {self.labels.shape} and days {self.days.shape} "
                             "must be equal 1-d shapes")
        if not self.seeds:
            raise ValueError(f"world {self.key} has no model seed")

    @property
    def n_rows(self) -> int:
        return int(self.labels.size)


def count_distinct_rows(worlds: list[World]) -> int:
    """Evaluation rows that are different rows: each World's rows once, however many seeds scored them."""
    _check_distinct(worlds)
    return sum(w.n_rows for w in worlds)


def _check_distinct(worlds: list[World]) -> None:
    keys = [w.key for w in worlds]
    if len(set(keys)) != len(keys):
        raise ValueError(f"worlds {keys} repeat a key: seeds that scored the same rows belong to one World")


@dataclass
class Interval:
    point: float
    ci: tuple[float, float]


@dataclass
class AucBootstrap:
    """Within-day (or pooled) AUC of every model: point, per-world values and bootstrap replicates.

    A model's value is the mean over worlds of the mean over that world's model seeds. Replicate b
    draws the worlds with replacement and, for each drawn world, ONE Poisson(1) row-weight vector
    that every model and every model seed of that world uses, so all differences are paired.
    """

    models: tuple[str, ...]
    aggregation: AucAggregation
    point: dict[str, float]
    per_world: dict[str, np.ndarray]  # (k,) mean over the world's seeds
    per_run: dict[str, list[list[float]]]  # [world][seed]
    replicates: dict[str, np.ndarray]  # (n_boot,)
    world_keys: list[str]
    seeds_per_world: list[int]
    n_distinct_rows: int
    n_boot: int
    level: float

    def difference(self, model: str, reference: str) -> Interval:
        """AUC(model) − AUC(reference) with its percentile interval."""
        reps = self.replicates[model] - self.replicates[reference]
        return Interval(self.point[model] - self.point[reference], _interval(reps, self.level))

    def units(self, model: str, reference: str) -> tuple[np.ndarray, str]:
        """Independent units of AUC(model) − AUC(reference) for the seed-level interval.

        The worlds when there are several (each world's seeds averaged); with one world, its model
        seeds, whose rows are shared, so the spread is training noise only.
        """
        if len(self.world_keys) > 1:
            return self.per_world[model] - self.per_world[reference], "worlds"
        runs = np.asarray(self.per_run[model][0]) - np.asarray(self.per_run[reference][0])
        return runs, "model seeds of one world (shared rows: training noise only)"


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    if not np.isfinite(values).any():
        return math.nan, math.nan
    low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_aucs(worlds: list[World], models: tuple[str, ...] | list[str], *, n_boot: int, seed: int,
                   level: float = 0.95, aggregation: AucAggregation = WITHIN_DAY) -> AucBootstrap:
    """Hierarchical paired bootstrap of each model's AUC over independent worlds (see AucBootstrap)."""
    if not worlds:
        raise ValueError("bootstrap_aucs needs at least one world")
    _check_distinct(worlds)
    models = tuple(models)
    ranks: list[list[dict[str, _DailyRanks]]] = []
    for world in worlds:
        day_ids = world.days if aggregation == "mean_daily_auc" else np.zeros(world.n_rows, dtype=np.int8)
        groups = [np.flatnonzero(day_ids == d) for d in np.unique(day_ids)]
        cache: dict[int, _DailyRanks] = {}  # an array shared by several seeds (e.g. p_true) is ranked once
        seeds = []
        for scores in world.seeds:
            missing = [m for m in models if m not in scores]
            if missing:
                raise ValueError(f"world {world.key}: a seed has no scores for {missing}")
            seeds.append({m: cache.setdefault(id(scores[m]), _DailyRanks(scores[m], world.labels, groups))
                          for m in models})
        ranks.append(seeds)
    per_run = {m: [[r[m].auc() for r in seeds] for seeds in ranks] for m in models}
    per_world = {m: np.array([np.mean(v) for v in per_run[m]]) for m in models}
    point = {m: float(per_world[m].mean()) for m in models}
    rng = np.random.default_rng(seed)
    k = len(worlds)
    replicates = {m: np.empty(n_boot) for m in models}
    for b in range(n_boot):
        drawn = rng.integers(0, k, size=k) if k > 1 else np.zeros(1, dtype=np.int64)
        sums = dict.fromkeys(models, 0.0)
        for j in drawn:
            weights = poisson1_weights(rng, worlds[j].n_rows)  # one vector for every seed of world j
            for m in models:
                sums[m] += float(np.mean([r[m].auc(weights) for r in ranks[j]]))
        for m in models:
            replicates[m][b] = sums[m] / k
    return AucBootstrap(
        models=models, aggregation=aggregation, point=point, per_world=per_world, per_run=per_run,
        replicates=replicates, world_keys=[w.key for w in worlds], seeds_per_world=[len(w.seeds) for w in worlds],
        n_distinct_rows=count_distinct_rows(worlds), n_boot=n_boot, level=level,
    )


# --------------------------------------------------------------------------- seed-level intervals


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with integer df ≥ 1 (closed-form CDF, bisection); p in (0, 1)."""
    if df < 1 or not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs df ≥ 1 and 0 < p < 1, got df={df}, p={p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 2.0 * p - 1.0  # P(|T| < t)
    low, high = 0.0, 1.0
    while _t_central(high, df) < target:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _t_central(mid, df) < target else (low, mid)
    return 0.5 * (low + high)


def _t_central(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df (the classical finite series in θ = atan(t/√df))."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        for j in range(1, (df - 1) // 2 + 1):  # c + (2/3)c³ + (2·4)/(3·5)c⁵ + …
            total += term
            term *= c * c * (2 * j) / (2 * j + 1)
        return 2.0 / math.pi * (theta + s * total) if df > 1 else 2.0 * theta / math.pi
    total, term = 0.0, 1.0
    for j in range(1, df // 2 + 1):  # 1 + (1/2)c² + (1·3)/(2·4)c⁴ + …
        total += term
        term *= c * c * (2 * j - 1) / (2 * j)
    return s * total


def t_interval(units: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Student t interval of the mean of k ≥ 2 independent units (k,); None with fewer."""
    units = np.asarray(units, dtype=np.float64)
    k = units.size
    if k < 2:
        return None
    half = t_quantile(0.5 + level / 2.0, k - 1) * units.std(ddof=1) / math.sqrt(k)
    return float(units.mean() - half), float(units.mean() + half)


def fieller_interval(numerator: np.ndarray, denominator: np.ndarray,
                     level: float = 0.95) -> tuple[float, float] | None:
    """Fieller interval of mean(numerator) / mean(denominator) from k ≥ 2 paired units (k,), (k,).

    The set of ρ with (ā − ρ·b̄)² ≤ t²·Var(ā − ρ·b̄), a quadratic in ρ. None when it is not a
    bounded interval (the denominator's mean is not distinguishable from 0 at this level).
    """
    a_units = np.asarray(numerator, dtype=np.float64)
    b_units = np.asarray(denominator, dtype=np.float64)
    k = a_units.size
    if k < 2 or b_units.size != k:
        return None
    a, b = a_units.mean(), b_units.mean()
    cov = np.cov(a_units, b_units, ddof=1) / k  # covariance of the two means
    t2 = t_quantile(0.5 + level / 2.0, k - 1) ** 2
    qa = b * b - t2 * cov[1, 1]
    qb = a * b - t2 * cov[0, 1]
    qc = a * a - t2 * cov[0, 0]
    if qa <= 0:
        return None
    root = math.sqrt(max(qb * qb - qa * qc, 0.0))
    return float((qb - root) / qa), float((qb + root) / qa)


# --------------------------------------------------------------------------- gains and ratios


@dataclass
class RatioEstimate:
    """(AUC(a) − AUC(b)) / (AUC(c) − AUC(d)) with both bootstrap and seed-level intervals.

    η: (distilled − raw) / (teacher − raw); Δη between two cells sharing teacher, baseline and rows:
    (distilled_A − distilled_B) / (teacher − raw); ρ: (distilled − raw) / (oracle − raw).
    """

    numerator: Interval
    denominator: Interval
    ratio: float | None  # None when the denominator's bootstrap interval is not above 0
    ratio_ci: tuple[float, float] | None  # percentile interval of the per-replicate ratios
    numerator_ci_seed_level: tuple[float, float] | None  # t interval over the independent units
    denominator_ci_seed_level: tuple[float, float] | None
    ratio_ci_seed_level: tuple[float, float] | None  # Fieller over the same units
    seed_level_units: str
    n_units: int
    significant: bool
    reason: str | None


def _ratio(num: Interval, den: Interval, reps_num: np.ndarray, reps_den: np.ndarray, level: float,
           what: str) -> tuple[float | None, tuple[float, float] | None, str | None]:
    """num / den with the percentile interval of the per-replicate ratios (n_boot,), (n_boot,), or,
    when the denominator's interval does not lie above zero, (None, None, why not)."""
    if not (den.point > 0 and den.ci[0] > 0):
        return None, None, (f"not measurable: {what} {den.point:+.5f} AUC with {level:.0%} interval "
                            f"[{den.ci[0]:+.5f}, {den.ci[1]:+.5f}] is not above zero")
    ratios = np.divide(reps_num, reps_den, out=np.full(reps_den.size, np.nan), where=reps_den > 0)
    return num.point / den.point, _interval(ratios, level), None


def ratio_estimate(boot: AucBootstrap, numerator: tuple[str, str], denominator: tuple[str, str]) -> RatioEstimate:
    """See RatioEstimate; the ratio exists only when the denominator's interval lies above zero."""
    num = boot.difference(*numerator)
    den = boot.difference(*denominator)
    num_units, label = boot.units(*numerator)
    den_units, _ = boot.units(*denominator)
    ratio, ratio_ci, reason = _ratio(
        num, den, boot.replicates[numerator[0]] - boot.replicates[numerator[1]],
        boot.replicates[denominator[0]] - boot.replicates[denominator[1]], boot.level,
        f"{denominator[0]} − {denominator[1]} =")
    return RatioEstimate(
        num, den, ratio, ratio_ci,
        numerator_ci_seed_level=t_interval(num_units, boot.level),
        denominator_ci_seed_level=t_interval(den_units, boot.level),
        ratio_ci_seed_level=fieller_interval(num_units, den_units, boot.level) if reason is None else None,
        seed_level_units=label, n_units=int(num_units.size), significant=reason is None, reason=reason,
    )


@dataclass
class TransferabilityEstimate:
    n: int  # distinct evaluation rows
    teacher_gain: float  # AUC_T − AUC_S_raw
    teacher_gain_ci: tuple[float, float]
    distill_gain: float  # AUC_S_distill − AUC_S_raw
    distill_gain_ci: tuple[float, float]
    eta: float | None  # distill_gain / teacher_gain, None when not measurable
    eta_ci: tuple[float, float] | None
    significant: bool  # the teacher gain's interval lies above zero
    reason: str | None  # why η is not measurable
    n_boot: int = 0
    level: float = 0.95
    aggregation: AucAggregation = WITHIN_DAY


def paired_bootstrap_gains(
    labels: np.ndarray, scores: dict[str, np.ndarray], *, teacher: str, student_raw: str,
    student_distill: str, n_boot: int, seed: int, level: float = 0.95, days: np.ndarray | None = None,
) -> TransferabilityEstimate:
    """Teacher gain, distillation gain and η of one run (one world, one seed), paired row bootstrap.

    With `days` (n,) the AUCs are within-day (mean over days of each day's AUC); without, pooled
    over every row. Every replicate applies the same Poisson(1) row weights to all three models.
    """
    labels = np.asarray(labels)
    pooled = days is None
    world = World("run", labels, np.zeros(labels.size, dtype=np.int8) if pooled else np.asarray(days),
                  [{name: scores[name] for name in (teacher, student_raw, student_distill)}])
    boot = bootstrap_aucs([world], (teacher, student_raw, student_distill), n_boot=n_boot, seed=seed, level=level,
                          aggregation="pooled_auc" if pooled else WITHIN_DAY)
    eta = ratio_estimate(boot, (student_distill, student_raw), (teacher, student_raw))
    return TransferabilityEstimate(
        n=boot.n_distinct_rows, teacher_gain=eta.denominator.point, teacher_gain_ci=eta.denominator.ci,
        distill_gain=eta.numerator.point, distill_gain_ci=eta.numerator.ci, eta=eta.ratio, eta_ci=eta.ratio_ci,
        significant=eta.significant, reason=eta.reason, n_boot=n_boot, level=level, aggregation=boot.aggregation,
    )


def replicate_aucs(labels: np.ndarray, scores: dict[str, np.ndarray], *, n_boot: int,
                   seed: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Each model's AUC on the rows (point) and under `n_boot` Poisson(1) row re-weightings (n_boot,).

    Replicate i applies the same row weights to every model, so gains taken replicate by replicate are
    paired. Replicates of independent row sets (different days) combine index by index: the mean of
    day replicates i is a replicate of the mean of the days' AUCs (the within-day aggregate).
    """
    ranked = {name: RankedScores(values, labels) for name, values in scores.items()}
    point = {name: r.auc() for name, r in ranked.items()}
    replicates = {name: np.empty(n_boot) for name in ranked}
    rng = np.random.default_rng(seed)
    for i in range(n_boot):
        weights = poisson1_weights(rng, np.asarray(labels).size)
        for name, r in ranked.items():
            replicates[name][i] = r.auc(weights)
    return point, replicates


@dataclass
class GainEstimate:
    """Teacher gain, distillation gain and η from point AUCs and their paired replicates."""

    teacher_gain: float
    teacher_gain_ci: tuple[float, float]
    distill_gain: float
    distill_gain_ci: tuple[float, float]
    eta: float | None  # None when the teacher gain's interval is not above zero
    eta_ci: tuple[float, float] | None
    significant: bool
    reason: str | None  # why η is not measurable


def gains_from_replicates(point: dict[str, float], replicates: dict[str, np.ndarray], *, teacher: str,
                          student_raw: str, student_distill: str, level: float) -> GainEstimate:
    """Gains = AUC differences against `student_raw`, with percentile intervals over the replicates."""
    reps_t = replicates[teacher] - replicates[student_raw]
    reps_d = replicates[student_distill] - replicates[student_raw]
    teacher_gain = Interval(point[teacher] - point[student_raw], _interval(reps_t, level))
    distill_gain = Interval(point[student_distill] - point[student_raw], _interval(reps_d, level))
    eta, eta_ci, reason = _ratio(distill_gain, teacher_gain, reps_d, reps_t, level, "teacher gain")
    return GainEstimate(teacher_gain=float(teacher_gain.point), teacher_gain_ci=teacher_gain.ci,
                        distill_gain=float(distill_gain.point), distill_gain_ci=distill_gain.ci, eta=eta,
                        eta_ci=eta_ci, significant=reason is None, reason=reason)
