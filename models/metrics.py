"""AUC, LogLoss and the paired bootstrap of teacher gain, distillation gain and η (DESIGN.md §1, §4).

The bootstrap re-weights rows instead of re-sampling them: a replicate draws one Poisson(1) count
per row (the same counts for every model, so the comparison is paired) and each model's AUC is a
weighted Mann–Whitney statistic over its scores, sorted once up front. One replicate then costs a
few O(n) passes per model, with no sort.
"""

import math
from dataclasses import dataclass

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


@dataclass
class TransferabilityEstimate:
    n: int
    teacher_gain: float  # AUC_T − AUC_S_raw on the full data
    teacher_gain_ci: tuple[float, float]
    distill_gain: float  # AUC_S_distill − AUC_S_raw
    distill_gain_ci: tuple[float, float]
    eta: float | None  # distill_gain / teacher_gain, None when not measurable
    eta_ci: tuple[float, float] | None
    significant: bool  # the teacher gain's interval lies above zero
    reason: str | None  # why η is not measurable
    n_boot: int = 0
    level: float = 0.95


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass
class _GainIntervals:
    teacher_gain_ci: tuple[float, float]
    distill_gain_ci: tuple[float, float]
    significant: bool
    eta: float | None
    eta_ci: tuple[float, float] | None
    reason: str | None


def _gain_intervals(teacher_gain: float, distill_gain: float, gains_t: np.ndarray, gains_d: np.ndarray,
                    level: float) -> _GainIntervals:
    """Percentile intervals of the replicated gains; η (ratio of the point gains, interval of the
    per-replicate ratios) only when the teacher gain's interval lies above zero."""
    teacher_ci = _interval(gains_t, level)
    distill_ci = _interval(gains_d, level)
    if not (teacher_gain > 0 and teacher_ci[0] > 0):
        reason = (f"not measurable: teacher gain {teacher_gain:+.5f} AUC with {level:.0%} interval "
                  f"[{teacher_ci[0]:+.5f}, {teacher_ci[1]:+.5f}] is not above zero")
        return _GainIntervals(teacher_ci, distill_ci, False, None, None, reason)
    ratios = np.divide(gains_d, gains_t, out=np.full(gains_t.size, np.nan), where=gains_t > 0)
    return _GainIntervals(teacher_ci, distill_ci, True, float(distill_gain / teacher_gain),
                          _interval(ratios, level), None)


def paired_bootstrap_gains(
    labels: np.ndarray, scores: dict[str, np.ndarray], *, teacher: str, student_raw: str,
    student_distill: str, n_boot: int, seed: int, level: float = 0.95,
) -> TransferabilityEstimate:
    """Teacher gain, distillation gain and η = distill gain / teacher gain, with percentile intervals.

    Paired: every replicate applies the same Poisson(1) row weights to all three models. The point
    estimates are on the full data; the η interval is the percentile interval of per-replicate
    ratios (replicates whose teacher gain is ≤ 0 have no ratio and are left out). η is reported only
    when the teacher gain's interval lies above zero; otherwise it is "not measurable".
    """
    labels = np.asarray(labels)
    names = (teacher, student_raw, student_distill)
    ranked = {name: RankedScores(scores[name], labels) for name in names}
    point = {name: r.auc() for name, r in ranked.items()}
    teacher_gain = point[teacher] - point[student_raw]
    distill_gain = point[student_distill] - point[student_raw]
    rng = np.random.default_rng(seed)
    gains_t = np.empty(n_boot)
    gains_d = np.empty(n_boot)
    for i in range(n_boot):
        weights = poisson1_weights(rng, labels.size)
        aucs = {name: r.auc(weights) for name, r in ranked.items()}
        gains_t[i] = aucs[teacher] - aucs[student_raw]
        gains_d[i] = aucs[student_distill] - aucs[student_raw]
    est = _gain_intervals(teacher_gain, distill_gain, gains_t, gains_d, level)
    return TransferabilityEstimate(
        n=int(labels.size), teacher_gain=float(teacher_gain), teacher_gain_ci=est.teacher_gain_ci,
        distill_gain=float(distill_gain), distill_gain_ci=est.distill_gain_ci, eta=est.eta, eta_ci=est.eta_ci,
        significant=est.significant, reason=est.reason, n_boot=n_boot, level=level,
    )


@dataclass
class SeedRun:
    """One seed's evaluation rows: labels and each model's scores on the same rows."""

    labels: np.ndarray
    scores: dict[str, np.ndarray]


@dataclass
class PooledEstimate:
    """Teacher gain, distillation gain and η pooled over seeds, with a two-level bootstrap interval."""

    n_seeds: int
    n_rows: int  # summed over seeds
    teacher_gain: float  # mean over seeds of AUC_T − AUC_S_raw
    teacher_gain_ci: tuple[float, float]
    distill_gain: float  # mean over seeds of AUC_S_distill − AUC_S_raw
    distill_gain_ci: tuple[float, float]
    eta: float | None  # mean distill gain / mean teacher gain
    eta_ci: tuple[float, float] | None
    significant: bool
    reason: str | None
    per_seed: list[dict[str, float | None]]  # each seed's AUCs, gains and η (None when its teacher gain ≤ 0)
    n_boot: int = 0
    level: float = 0.95


def pooled_seed_gains(
    runs: list[SeedRun], *, teacher: str, student_raw: str, student_distill: str, n_boot: int, seed: int,
    level: float = 0.95,
) -> PooledEstimate:
    """η over several training seeds: η = mean distill gain / mean teacher gain (ratio of means).

    Interval: a two-level bootstrap. Each replicate draws the seeds with replacement (so the spread
    between training runs counts) and, within every drawn seed, Poisson(1) row weights shared by the
    three models (paired, as in `paired_bootstrap_gains`); the replicate's gains are the means over
    the drawn seeds and its η their ratio. With one seed this is exactly the paired row bootstrap.
    η is reported only when the teacher gain's interval lies above zero.
    """
    if not runs:
        raise ValueError("pooled_seed_gains needs at least one seed")
    names = (teacher, student_raw, student_distill)
    ranked = [{name: RankedScores(run.scores[name], run.labels) for name in names} for run in runs]
    per_seed = []
    for run, models in zip(runs, ranked, strict=True):
        aucs = {name: r.auc() for name, r in models.items()}
        gain_t, gain_d = aucs[teacher] - aucs[student_raw], aucs[student_distill] - aucs[student_raw]
        per_seed.append({"n": int(run.labels.size), **{f"auc_{name}": aucs[name] for name in names},
                         "teacher_gain": gain_t, "distill_gain": gain_d,
                         "eta": gain_d / gain_t if gain_t > 0 else None})
    teacher_gain = float(np.mean([s["teacher_gain"] for s in per_seed]))
    distill_gain = float(np.mean([s["distill_gain"] for s in per_seed]))
    rng = np.random.default_rng(seed)
    k = len(runs)
    gains_t = np.empty(n_boot)
    gains_d = np.empty(n_boot)
    for i in range(n_boot):
        drawn = rng.integers(0, k, size=k) if k > 1 else np.zeros(1, dtype=np.int64)
        sum_t = sum_d = 0.0
        for s in drawn:
            weights = poisson1_weights(rng, runs[s].labels.size)
            aucs = {name: r.auc(weights) for name, r in ranked[s].items()}
            sum_t += aucs[teacher] - aucs[student_raw]
            sum_d += aucs[student_distill] - aucs[student_raw]
        gains_t[i], gains_d[i] = sum_t / k, sum_d / k
    est = _gain_intervals(teacher_gain, distill_gain, gains_t, gains_d, level)
    return PooledEstimate(
        n_seeds=k, n_rows=int(sum(run.labels.size for run in runs)), teacher_gain=teacher_gain,
        teacher_gain_ci=est.teacher_gain_ci, distill_gain=distill_gain, distill_gain_ci=est.distill_gain_ci,
        eta=est.eta, eta_ci=est.eta_ci, significant=est.significant, reason=est.reason, per_seed=per_seed,
        n_boot=n_boot, level=level,
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
    teacher_gain = point[teacher] - point[student_raw]
    distill_gain = point[student_distill] - point[student_raw]
    est = _gain_intervals(teacher_gain, distill_gain, replicates[teacher] - replicates[student_raw],
                          replicates[student_distill] - replicates[student_raw], level)
    return GainEstimate(teacher_gain=float(teacher_gain), teacher_gain_ci=est.teacher_gain_ci,
                        distill_gain=float(distill_gain), distill_gain_ci=est.distill_gain_ci, eta=est.eta,
                        eta_ci=est.eta_ci, significant=est.significant, reason=est.reason)
