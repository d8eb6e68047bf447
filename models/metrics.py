"""AUC, LogLoss and the paired bootstrap of teacher gain, distillation gain and η."""

from dataclasses import dataclass

import numpy as np


def auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Rank AUC with ties counted half (the Mann–Whitney statistic), optionally weighted."""
    prepared = _SortedScores(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    return prepared.auc(weights)


class _SortedScores:
    """Scores sorted once, tied groups found once; each AUC is then O(n) for any row weights."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(scores, kind="mergesort")
        self.order = order
        self.labels = labels[order]
        sorted_scores = scores[order]
        new_group = np.empty(sorted_scores.size, dtype=bool)
        if sorted_scores.size:
            new_group[0] = True
            new_group[1:] = sorted_scores[1:] != sorted_scores[:-1]
        self.group = np.cumsum(new_group) - 1
        self.n_groups = int(self.group[-1]) + 1 if sorted_scores.size else 0

    def auc(self, weights: np.ndarray | None = None) -> float:
        w = np.ones_like(self.labels) if weights is None else np.asarray(weights, dtype=np.float64)[self.order]
        pos = np.bincount(self.group, weights=w * self.labels, minlength=self.n_groups)
        neg = np.bincount(self.group, weights=w * (1.0 - self.labels), minlength=self.n_groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        neg_below = np.cumsum(neg) - neg
        return float(np.sum(pos * (neg_below + 0.5 * neg)) / (total_pos * total_neg))


def logloss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass
class TransferabilityEstimate:
    n: int
    teacher_gain: float
    teacher_gain_ci: tuple[float, float]
    distill_gain: float
    distill_gain_ci: tuple[float, float]
    eta: float | None
    eta_ci: tuple[float, float] | None
    significant: bool
    reason: str | None


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_bootstrap_gains(
    labels: np.ndarray, scores: dict[str, np.ndarray], *, teacher: str, student_raw: str, student_distill: str,
    n_boot: int, seed: int, level: float = 0.95,
) -> TransferabilityEstimate:
    """Teacher gain, distillation gain and η = distill gain / teacher gain, with percentile intervals.

    Paired: every replicate re-weights the same rows (Poisson(1) weights) for all three models. η is
    reported only when the teacher gain's interval lies above zero; otherwise it is not measurable.
    """
    labels = np.asarray(labels, dtype=np.float64)
    sorted_scores = {name: _SortedScores(np.asarray(scores[name], dtype=np.float64), labels)
                     for name in (teacher, student_raw, student_distill)}
    point = {name: s.auc() for name, s in sorted_scores.items()}
    teacher_gain = point[teacher] - point[student_raw]
    distill_gain = point[student_distill] - point[student_raw]
    rng = np.random.default_rng(seed)
    gains_t = np.empty(n_boot)
    gains_d = np.empty(n_boot)
    for i in range(n_boot):
        weights = rng.poisson(1.0, size=labels.size).astype(np.float64)
        aucs = {name: s.auc(weights) for name, s in sorted_scores.items()}
        gains_t[i] = aucs[teacher] - aucs[student_raw]
        gains_d[i] = aucs[student_distill] - aucs[student_raw]
    teacher_ci = _interval(gains_t, level)
    distill_ci = _interval(gains_d, level)
    significant = bool(teacher_ci[0] > 0 and teacher_gain > 0)
    if not significant:
        return TransferabilityEstimate(
            labels.size, teacher_gain, teacher_ci, distill_gain, distill_ci, None, None, False,
            f"teacher gain {teacher_gain:.5f} with interval [{teacher_ci[0]:.5f}, {teacher_ci[1]:.5f}] "
            "is not above zero",
        )
    ratios = np.divide(gains_d, gains_t, out=np.full(n_boot, np.nan), where=gains_t > 0)
    return TransferabilityEstimate(
        labels.size, teacher_gain, teacher_ci, distill_gain, distill_ci, distill_gain / teacher_gain,
        _interval(ratios, level), True, None,
    )
