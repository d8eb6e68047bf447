"""Calibration against the observed click rate and p_true, in fixed probability bins.

Bins are fixed (log-spaced: click probabilities span orders of magnitude), so a day's bins are sums
that add up over days: the cumulated calibration reads each day's few numbers, never the rows.
"""

from collections.abc import Sequence

import numpy as np

from recdistill_dagster.report.schema import CalibrationBin

# [0, 1e-4], then 16 log-spaced bins up to 1 (four per decade).
BIN_EDGES = np.concatenate([[0.0], np.logspace(-4.0, 0.0, 17)])


def calibration_bins(predicted: np.ndarray, labels: np.ndarray, p_true: np.ndarray | None) -> list[CalibrationBin]:
    """Per fixed bin of the predicted probability (N,): row count and sums of predicted, label, p_true."""
    index = np.clip(np.searchsorted(BIN_EDGES, predicted, side="right") - 1, 0, len(BIN_EDGES) - 2)
    bins = []
    for b in range(len(BIN_EDGES) - 1):
        rows = index == b
        bins.append(CalibrationBin(
            low=float(BIN_EDGES[b]), high=float(BIN_EDGES[b + 1]), n=int(rows.sum()),
            sum_predicted=float(predicted[rows].sum()), sum_label=float(labels[rows].sum()),
            sum_p_true=float(p_true[rows].sum()) if p_true is not None else None,
        ))
    return bins


def combine(days: Sequence[Sequence[CalibrationBin]]) -> list[CalibrationBin]:
    """The bins of several days added up (every day has the same fixed bins)."""
    combined = []
    for same_bin in zip(*days, strict=True):
        first = same_bin[0]
        truth = [b.sum_p_true for b in same_bin]
        combined.append(CalibrationBin(
            low=first.low, high=first.high, n=sum(b.n for b in same_bin),
            sum_predicted=sum(b.sum_predicted for b in same_bin), sum_label=sum(b.sum_label for b in same_bin),
            sum_p_true=None if any(t is None for t in truth) else sum(t for t in truth if t is not None),
        ))
    return combined


def summary(bins: Sequence[CalibrationBin]) -> dict[str, float | None]:
    """Mean predicted vs observed rate (and mean p_true), and the row-weighted mean |gap| over bins (ECE)."""
    n = sum(b.n for b in bins)
    if n == 0:
        return {"mean_predicted": None, "observed_rate": None, "mean_p_true": None, "ece_observed": None,
                "ece_p_true": None}
    filled = [b for b in bins if b.n]
    has_truth = all(b.sum_p_true is not None for b in filled)
    return {
        "mean_predicted": sum(b.sum_predicted for b in filled) / n,
        "observed_rate": sum(b.sum_label for b in filled) / n,
        "mean_p_true": sum(b.sum_p_true or 0.0 for b in filled) / n if has_truth else None,
        "ece_observed": sum(abs(b.sum_predicted - b.sum_label) for b in filled) / n,
        "ece_p_true": sum(abs(b.sum_predicted - (b.sum_p_true or 0.0)) for b in filled) / n if has_truth else None,
    }
