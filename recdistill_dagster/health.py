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
from recdistill_dagster.config import HealthConfig


@dataclass
class HealthInputs:
    recorded_logits: np.ndarray  # every logit recorded while training this snapshot
    holdout_labels: np.ndarray  # the day's impressions the teacher did not train on
    holdout_scores: np.ndarray  # this snapshot's scores on them
    reference_holdout_scores: np.ndarray | None  # the last good snapshot's scores on the same rows
    mean_predicted_rate: float  # debiased to the unsampled scale, over the day's full log
    observed_rate: float  # the day's unsampled click rate
    reference_snapshot: str | None = None


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


def _finite_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    return auc(scores, labels) if np.isfinite(scores).all() else math.nan


def holdout_rows(labels: np.ndarray, trained_rows: np.ndarray, min_per_class: int) -> tuple[np.ndarray, bool]:
    """Mask of the day's rows the teacher did not train on, and whether it fell back to the whole day.

    A teacher that keeps every negative leaves only dropped positives out: a one-class held-out set
    has no AUC, so with fewer than `min_per_class` positives or negatives the whole day is used (the
    comparison then favours the new snapshot, which still exposes a broken one).
    """
    holdout = np.ones(labels.size, dtype=bool)
    holdout[trained_rows] = False
    positives = int(labels[holdout].sum())
    negatives = int(holdout.sum()) - positives
    if min(positives, negatives) < min_per_class:
        return np.ones(labels.size, dtype=bool), True
    return holdout, False


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
    metrics.update(holdout_rows=int(inputs.holdout_labels.size), holdout_positives=positives)
    finite_scores = bool(np.isfinite(inputs.holdout_scores).all())
    holdout_auc = auc(inputs.holdout_scores, inputs.holdout_labels) if finite_scores else math.nan
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
        reference_auc = _finite_auc(inputs.reference_holdout_scores, inputs.holdout_labels)
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
