"""Teacher snapshot health: the verdict of the blocking `teacher_health` check, as pure math.

Inputs are plain arrays (the steps layer gathers them), so every rule is testable without Dagster
or a trained model. A snapshot is unhealthy when any rule fails:
- non-finite logits recorded in the training forward pass;
- held-out AUC more than `max_auc_drop` below the last good snapshot on the same held-out rows;
- calibration drift: the debiased mean prediction far from the day's observed click rate;
- logit distribution shift against the last good snapshot, on the same held-out rows.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.metrics import auc
from recdistill_dagster.config import HealthConfig, SamplingPolicy


@dataclass
class HealthInputs:
    recorded_logits: np.ndarray  # every logit recorded while training this snapshot
    holdout_labels: np.ndarray  # the day's impressions the teacher did not train on
    holdout_scores: np.ndarray  # this snapshot's scores on them
    holdout_weights: np.ndarray | None  # see `holdout_rows`; None = unit weights
    reference_holdout_scores: np.ndarray | None  # the last good snapshot's scores on the same rows
    mean_predicted_rate: float  # debiased to the unsampled scale, over the day's full log
    observed_rate: float  # the day's unsampled click rate
    reference_snapshot: str | None = None
    holdout_sources: tuple[int, ...] = ()  # traffic sources the held-out rows come from
    holdout_whole_day: bool = False  # too few rows were left out: the whole day is compared


@dataclass
class HealthVerdict:
    passed: bool
    failures: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        if self.passed:
            return "healthy" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return "unhealthy: " + "; ".join(self.failures)


def _finite_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> float:
    return auc(scores, labels, weights) if np.isfinite(scores).all() else math.nan


@dataclass
class Holdout:
    """The day's rows the teacher did not train on that give an unbiased held-out AUC."""

    rows: np.ndarray  # bool mask over the day's rows
    weights: np.ndarray | None  # per selected row: 1 / P(held out | label, source); None = unit weights
    sources: tuple[int, ...]  # traffic sources represented (all of them on the whole-day fallback)
    whole_day: bool


def holdout_rows(labels: np.ndarray, sources: np.ndarray, trained_rows: np.ndarray, policy: SamplingPolicy,
                 min_per_class: int) -> Holdout:
    """Held-out rows and their weights, so that the held-out AUC estimates the AUC on the whole day.

    The teacher's sampler keeps a row with a probability set by its label and traffic source, so the
    rows it left out are a biased sample: with positives kept at different rates per source, the
    held-out positives all come from a few sources and the AUC mostly measures source offsets. Only
    sources where both classes can be left out are used, each row weighted by the inverse of its
    probability of being left out (within one source that weighting changes nothing; across sources it
    undoes the mix). With fewer than `min_per_class` held-out positives or negatives there (a teacher
    keeping every negative leaves none out) the whole day is used: the comparison then favours the
    new snapshot, which still exposes a broken one.
    """
    holdout = np.ones(labels.size, dtype=bool)
    holdout[trained_rows] = False
    n_sources = len(policy.positive_keep_by_source)
    usable = tuple(s for s in range(n_sources) if policy.negative_keep < 1.0 and policy.p_x(s) < 1.0)
    rows = holdout & np.isin(sources, usable)
    positives = int(labels[rows].sum())
    if min(positives, int(rows.sum()) - positives) < min_per_class:
        return Holdout(np.ones(labels.size, dtype=bool), None, tuple(range(n_sources)), True)
    positive_keep = np.asarray(policy.positive_keep_by_source)[sources[rows]]
    keep = np.where(labels[rows] > 0.5, positive_keep, policy.negative_keep)
    return Holdout(rows, 1.0 / (1.0 - keep), usable, False)


def assess_teacher(inputs: HealthInputs, config: HealthConfig) -> HealthVerdict:
    failures: list[str] = []
    notes: list[str] = []
    logits = inputs.recorded_logits
    nonfinite = int((~np.isfinite(logits)).sum())
    metrics: dict[str, Any] = {"recorded_logits": int(logits.size), "nonfinite_logits": nonfinite,
                               "reference_snapshot": inputs.reference_snapshot}
    if nonfinite:
        failures.append(f"{nonfinite:,} of {logits.size:,} recorded logits are NaN or infinite")

    positives = int(inputs.holdout_labels.sum())
    metrics.update(holdout_rows=int(inputs.holdout_labels.size), holdout_positives=positives,
                   holdout_sources=", ".join(map(str, inputs.holdout_sources)),
                   holdout_whole_day=inputs.holdout_whole_day)
    if inputs.holdout_whole_day:
        notes.append("too few rows left out of training: held-out AUC compared on the whole day")
    finite_scores = bool(np.isfinite(inputs.holdout_scores).all())
    holdout_auc = _finite_auc(inputs.holdout_scores, inputs.holdout_labels, inputs.holdout_weights)
    metrics["holdout_auc"] = holdout_auc
    if not finite_scores:
        failures.append("held-out scores are not finite")
    elif math.isnan(holdout_auc):
        notes.append(f"held-out AUC undefined ({inputs.holdout_labels.size} rows, {positives} positives)")
    elif inputs.reference_holdout_scores is None:
        notes.append("no earlier good snapshot to compare held-out AUC with")
    elif positives < config.min_holdout_positives:
        notes.append(f"held-out AUC comparison skipped: {positives} positives < {config.min_holdout_positives}")
    else:
        reference_auc = _finite_auc(inputs.reference_holdout_scores, inputs.holdout_labels, inputs.holdout_weights)
        drop = reference_auc - holdout_auc
        metrics.update(reference_holdout_auc=reference_auc, auc_drop=drop)
        if drop > config.max_auc_drop:
            failures.append(f"held-out AUC {holdout_auc:.4f} is {drop:.4f} below the last good snapshot's "
                            f"{reference_auc:.4f} (tolerance {config.max_auc_drop})")

    predicted, observed = inputs.mean_predicted_rate, inputs.observed_rate
    calibration_error = abs(predicted / observed - 1.0) if observed > 0 and math.isfinite(predicted) else math.inf
    metrics.update(mean_predicted_rate=predicted, observed_rate=observed, calibration_error=calibration_error)
    if not calibration_error <= config.max_calibration_error:
        failures.append(f"debiased mean prediction {predicted:.4g} vs observed click rate {observed:.4g} "
                        f"(relative error {calibration_error:.2f} > {config.max_calibration_error})")

    # Distribution shift: this snapshot's logits vs the last good one's, on the same held-out rows.
    scores, reference = inputs.holdout_scores, inputs.reference_holdout_scores
    if reference is not None and finite_scores and np.isfinite(reference).all():
        mean, std = float(scores.mean()), float(scores.std())
        ref_mean, ref_std = float(reference.mean()), float(reference.std())
        metrics.update(logit_mean=mean, logit_std=std, reference_logit_mean=ref_mean, reference_logit_std=ref_std)
        if scores.size < config.min_logits_for_shift:
            notes.append(f"logit shift test skipped ({scores.size} held-out rows)")
        else:
            floor = config.logit_std_floor
            shift = abs(mean - ref_mean) / max(ref_std, floor)
            ratio = max(std, floor) / max(ref_std, floor)
            ratio = max(ratio, 1.0 / ratio)
            metrics.update(logit_mean_shift=shift, logit_std_ratio=ratio)
            if shift > config.max_logit_mean_shift:
                failures.append(f"held-out logit mean moved {shift:.2f} reference std "
                                f"(> {config.max_logit_mean_shift}) from the last good snapshot")
            if ratio > config.max_logit_std_ratio:
                failures.append(f"held-out logit spread changed {ratio:.2f}× (> {config.max_logit_std_ratio}×) "
                                "against the last good snapshot")
    return HealthVerdict(passed=not failures, failures=failures, metrics=metrics, notes=notes)
