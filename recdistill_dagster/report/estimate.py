"""AUCs, gains and η of one report day, and cumulated over report days from what each day stored.

A day: each model's AUC on the day's unsampled rows, and `n_boot` paired Poisson(1) bootstrap
replicates of it (the same row weights for every model). Cumulated: within-day, the mean over days
of each day's AUC; its replicate i is the mean of the days' replicates i (days are disjoint rows, so
their replicates are independent draws). Cumulating reads only the days' replicates.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from models.metrics import auc, gains_from_replicates, logloss, replicate_aucs
from recdistill_dagster.config import EvalConfig
from recdistill_dagster.report.models import BAYES, DISTILLED, MODEL_KEYS, RAW, TEACHER
from recdistill_dagster.report.schema import Gains, Scope


@dataclass
class DayEstimate:
    """What one day contributes to every later cumulated scope."""

    scope: Scope
    point: dict[str, float]  # AUC per model key on the day
    replicates: dict[str, np.ndarray]  # (n_boot,) per model key


def _finite(values: np.ndarray) -> bool:
    return bool(values.size) and bool(np.isfinite(values).all())


def _gains(point: dict[str, float], replicates: dict[str, np.ndarray], eval_config: EvalConfig) -> Gains:
    est = gains_from_replicates(point, replicates, teacher=TEACHER.key, student_raw=RAW.key,
                                student_distill=DISTILLED.key, level=eval_config.ci_level)
    return Gains(teacher_gain=est.teacher_gain, teacher_gain_ci=est.teacher_gain_ci, distill_gain=est.distill_gain,
                 distill_gain_ci=est.distill_gain_ci, eta=est.eta, eta_ci=est.eta_ci, significant=est.significant,
                 note=est.reason, n_boot=eval_config.bootstrap_samples, level=eval_config.ci_level)


def day_estimate(predictions: pl.DataFrame, day: str, eval_config: EvalConfig, seed: int) -> DayEstimate:
    """The day's scope from its predictions (label, p_true and one calibrated column per model key)."""
    labels = predictions["label"].to_numpy().astype(np.float64)
    scores = {key: predictions[key].to_numpy() for key in MODEL_KEYS}
    # A single-tower student has no aux tower: its column is NaN and it is left out of the estimates.
    scored = {key: values for key, values in scores.items() if _finite(values)}
    point, replicates = replicate_aucs(labels, scored, n_boot=eval_config.bootstrap_samples, seed=seed)
    p_true = predictions["p_true"]
    has_truth = p_true.null_count() == 0 and predictions.height > 0
    auc_by_model: dict[str, float | None] = {key: point.get(key) for key in MODEL_KEYS}
    auc_by_model[BAYES.key] = auc(p_true.to_numpy(), labels) if has_truth else None
    scope = Scope(
        days=[day], n_eval=predictions.height, positives=int(labels.sum()),
        auc=auc_by_model,
        logloss={key: logloss(values, labels) if key in scored else None for key, values in scores.items()},
        mean_predicted={key: float(values.mean()) if key in scored else None for key, values in scores.items()},
        observed_rate=float(labels.mean()) if labels.size else None,
        mean_p_true=float(np.mean(p_true.to_numpy())) if has_truth else None,
        gains=_gains(point, replicates, eval_config),
    )
    return DayEstimate(scope=scope, point=point, replicates=replicates)


def _weighted(values: Sequence[float | None], weights: Sequence[int]) -> float | None:
    if any(v is None for v in values) or not sum(weights):
        return None
    return float(sum(v * w for v, w in zip(values, weights, strict=True) if v is not None) / sum(weights))


def cumulative_estimate(previous: DayEstimate | None, today: DayEstimate, eval_config: EvalConfig) -> DayEstimate:
    """The within-day aggregate over every report day so far, from yesterday's aggregate and today.

    Means of the days' AUCs and of their replicates (index by index), row-weighted means of the rest.
    Reads two small aggregates, whatever the number of days already reported.
    """
    if previous is None:
        return DayEstimate(scope=today.scope.model_copy(), point=dict(today.point),
                           replicates={k: v.copy() for k, v in today.replicates.items()})
    k = len(previous.scope.days)  # days in yesterday's aggregate; today weighs one day

    def mean(old: float, new: float) -> float:
        return (old * k + new) / (k + 1)

    keys = [key for key in MODEL_KEYS if key in previous.point and key in today.point]
    point = {key: mean(previous.point[key], today.point[key]) for key in keys}
    replicates = {key: (previous.replicates[key] * k + today.replicates[key]) / (k + 1) for key in keys}
    prev, day = previous.scope, today.scope
    rows = [prev.n_eval, day.n_eval]
    bayes = (prev.auc.get(BAYES.key), day.auc.get(BAYES.key))
    auc_by_model: dict[str, float | None] = {key: point.get(key) for key in MODEL_KEYS}
    auc_by_model[BAYES.key] = mean(bayes[0], bayes[1]) if bayes[0] is not None and bayes[1] is not None else None
    scope = Scope(
        days=[*prev.days, *day.days], n_eval=sum(rows), positives=prev.positives + day.positives,
        auc=auc_by_model,
        logloss={key: _weighted([prev.logloss.get(key), day.logloss.get(key)], rows) for key in MODEL_KEYS},
        mean_predicted={key: _weighted([prev.mean_predicted.get(key), day.mean_predicted.get(key)], rows)
                        for key in MODEL_KEYS},
        observed_rate=_weighted([prev.observed_rate, day.observed_rate], rows),
        mean_p_true=_weighted([prev.mean_p_true, day.mean_p_true], rows),
        gains=_gains(point, replicates, eval_config),
    )
    return DayEstimate(scope=scope, point=point, replicates=replicates)


def replicates_frame(daily: DayEstimate, cumulative: DayEstimate) -> pl.DataFrame:
    """Both scopes' point AUCs (row 0) and replicates (rows 1…) per scored model, tagged by scope."""
    frames = []
    for scope, estimate in (("daily", daily), ("cumulative", cumulative)):
        columns = {key: np.concatenate([[estimate.point[key]], estimate.replicates[key]]) for key in estimate.point}
        frames.append(pl.DataFrame(columns).with_columns(scope=pl.lit(scope)))
    return pl.concat(frames, how="diagonal")


def from_stored(scope: Scope, replicates: pl.DataFrame, which: str) -> DayEstimate:
    """One stored scope back as an estimate (the inverse of `replicates_frame`)."""
    rows = replicates.filter(pl.col("scope") == which).drop("scope")
    keys = [key for key in rows.columns if rows[key].is_not_null().all()]
    return DayEstimate(scope=scope, point={key: float(rows[key][0]) for key in keys},
                       replicates={key: rows[key].to_numpy()[1:] for key in keys})
