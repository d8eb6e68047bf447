"""PNG plots of one student's reports over days (matplotlib, Agg backend; plain data in, bytes out)."""

import io
import os
import tempfile
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "recdistill-mpl"))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from recdistill_dagster.report.models import BAYES, REPORT_MODELS
from recdistill_dagster.report.schema import CalibrationBin, Gains, LossSummary, TransferabilityReport

# Plots are drawn in this order, the Bayes limit first (the ceiling behind the models).
PLOTTED = (BAYES, *REPORT_MODELS)


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _day_axis(ax: Any, days: Sequence[str]) -> None:
    ax.set_xticks(range(len(days)), days, rotation=45, fontsize=7)
    ax.set_xlim(-0.5, len(days) - 0.5)


def plot_auc_over_days(history: Sequence[TransferabilityReport]) -> bytes:
    """AUC of every model with the Bayes limit: per day and cumulated (within-day)."""
    days = [r.day for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100, sharey=True)
    for ax, scope in zip(axes, ("daily", "cumulative"), strict=True):
        for model in PLOTTED:
            values = [getattr(r, scope).auc.get(model.key) for r in history]
            if any(v is not None for v in values):
                ax.plot(range(len(days)), [np.nan if v is None else v for v in values], model.line,
                        color=model.colour, label=model.label)
        _day_axis(ax, days)
        ax.grid(alpha=0.3)
        ax.set_title("AUC per day (on day d+1)" if scope == "daily" else "AUC cumulated (mean of daily AUCs)")
    axes[0].set_ylabel("AUC")
    axes[0].legend(fontsize=8)
    return _png(fig)


def _errorbars(ax: Any, xs: Sequence[float], gains: Sequence[Gains], value: str, interval: str, colour: str,
               label: str) -> None:
    kept = [(x, getattr(g, value), getattr(g, interval)) for x, g in zip(xs, gains, strict=True)
            if getattr(g, value) is not None]
    if not kept:
        return
    ax.errorbar([x for x, _, _ in kept], [v for _, v, _ in kept],
                yerr=[[v - (ci or (v, v))[0] for _, v, ci in kept], [(ci or (v, v))[1] - v for _, v, ci in kept]],
                fmt="o", color=colour, capsize=3, label=label)


def plot_eta_over_days(history: Sequence[TransferabilityReport]) -> bytes:
    """Teacher and distillation gains, and η per day and cumulated, each with its interval."""
    days = [r.day for r in history]
    xs = list(range(len(days)))
    left, right = [x - 0.08 for x in xs], [x + 0.08 for x in xs]
    daily = [r.daily.gains for r in history]
    fig, (ax_gain, ax_eta) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    _errorbars(ax_gain, left, daily, "teacher_gain", "teacher_gain_ci", "C3", "teacher gain P_T − P_S_raw")
    _errorbars(ax_gain, right, daily, "distill_gain", "distill_gain_ci", "C0",
               "distillation gain P_S_distill − P_S_raw")
    ax_gain.axhline(0.0, color="grey", lw=0.8)
    ax_gain.set_title("AUC gains per day with their intervals")
    ax_gain.legend(fontsize=8)
    _errorbars(ax_eta, left, daily, "eta", "eta_ci", "C0", "η, day")
    _errorbars(ax_eta, right, [r.cumulative.gains for r in history], "eta", "eta_ci", "C2", "η, cumulated")
    unmeasured = [x for x, g in zip(xs, daily, strict=True) if g.eta is None]
    if unmeasured:
        ax_eta.plot(unmeasured, [0.0] * len(unmeasured), "x", color="grey",
                    label="η not measurable (teacher gain not significant)")
    ax_eta.axhline(0.0, color="grey", lw=0.8)
    ax_eta.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax_eta.set_title("transferability η = distillation gain / teacher gain")
    ax_eta.legend(fontsize=8)
    for ax in (ax_gain, ax_eta):
        _day_axis(ax, days)
        ax.grid(alpha=0.3)
    return _png(fig)


def plot_calibration(bins: dict[str, list[CalibrationBin]], title: str) -> bytes:
    """Reliability diagram over fixed bins: mean predicted vs observed click rate (± s.e.) and vs mean p_true."""
    has_truth = any(b.sum_p_true is not None for model_bins in bins.values() for b in model_bins)
    panels = 2 if has_truth else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), dpi=100, squeeze=False)
    row = axes[0]
    extent = [1.0, 0.0]
    for model in REPORT_MODELS:
        if not model.calibrated_plot or model.key not in bins:
            continue
        filled = [b for b in bins[model.key] if b.n]
        xs = [b.sum_predicted / b.n for b in filled]
        observed = [b.sum_label / b.n for b in filled]
        errors = [np.sqrt(max(o * (1 - o), 1e-12) / b.n) for o, b in zip(observed, filled, strict=True)]
        row[0].errorbar(xs, observed, yerr=errors, fmt="o-", ms=3, capsize=2, color=model.colour, label=model.label)
        values = xs + [v for v in observed if v > 0]
        if has_truth:
            truth = [(b.sum_p_true or 0.0) / b.n for b in filled]
            row[1].plot(xs, truth, "o-", ms=3, color=model.colour, label=model.label)
            values += truth
        if values:
            extent = [min(extent[0], *values), max(extent[1], *values)]
    low, high = max(extent[0] * 0.8, 1e-4), min(extent[1] * 1.25, 1.0)
    for ax, what in zip(row, ("observed click rate", "mean p_true (ground truth)"), strict=False):
        ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--", label="perfect calibration")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("mean predicted probability (bin)")
        ax.set_ylabel(what)
        ax.set_title(f"{title}: predicted vs {what.split(' (')[0]}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _png(fig)


def plot_loss_magnitudes(days: Sequence[str], losses: Sequence[LossSummary]) -> bytes:
    """Task vs α·distill loss of the distilled student: final values per day and their ratio per step."""
    fig, (ax_day, ax_step) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    task = [np.nan if r.task_loss is None else r.task_loss for r in losses]
    weighted = [np.nan if r.distill_loss is None else r.alpha * r.distill_loss for r in losses]
    ax_day.plot(range(len(days)), task, "C3-o", label="task loss L_task (main tower)")
    ax_day.plot(range(len(days)), weighted, "C0-o", label="α·L_distill (aux tower)")
    ax_day.set_yscale("log")
    ax_day.set_title("loss magnitudes, last epoch of each day")
    _day_axis(ax_day, days)
    ax_day.legend(fontsize=8)
    ax_day.grid(alpha=0.3, which="both")
    plotted = False
    for index, (day, record) in enumerate(zip(days, losses, strict=True)):
        points = [(h["step"], record.alpha * h["distill_loss"] / h["task_loss"]) for h in record.history
                  if h.get("distill_loss") is not None and h.get("task_loss")]
        if points:
            ax_step.plot([p[0] for p in points], [p[1] for p in points], "-o", ms=2, color=f"C{index % 10}", lw=1,
                         label=day)
            plotted = True
    if plotted:
        ax_step.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax_step.set_yscale("log")
        ax_step.set_xlabel("global training step")
        ax_step.legend(fontsize=7, ncol=2)
        ax_step.grid(alpha=0.3, which="both")
    else:
        ax_step.text(0.5, 0.5, "no per-step distillation loss logged\n(no distillation, or fewer steps than "
                     "runtime.log_every_steps)", ha="center", va="center", transform=ax_step.transAxes)
    ax_step.set_title("α·L_distill / L_task per logged step (1 = equal weight)")
    return _png(fig)


def plot_students(latest: Sequence[TransferabilityReport]) -> bytes:
    """Students side by side (latest cumulated scope): AUC of teacher, baseline, distilled; η with its interval."""
    names = [r.student for r in latest]
    fig, (ax_auc, ax_eta) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    width = 0.8 / len(REPORT_MODELS)
    for offset, model in enumerate(REPORT_MODELS):
        values = [r.cumulative.auc.get(model.key) for r in latest]
        ax_auc.bar([i + (offset - 1.5) * width for i in range(len(names))],
                   [np.nan if v is None else v for v in values], width, color=model.colour, label=model.label,
                   alpha=0.5 if model.line == ":" else 1.0)
    bayes = [r.cumulative.auc.get(BAYES.key) for r in latest]
    if all(b is not None for b in bayes):
        ax_auc.plot(range(len(names)), bayes, "k_", ms=30, label=BAYES.label)
    scored = [v for r in latest for v in r.cumulative.auc.values() if v is not None]
    if scored:
        ax_auc.set_ylim(min(scored) - 0.01, max(scored) + 0.01)
    ax_auc.set_xticks(range(len(names)), names)
    ax_auc.set_title("AUC cumulated, per student")
    ax_auc.legend(fontsize=7)
    _errorbars(ax_eta, list(range(len(names))), [r.cumulative.gains for r in latest], "eta", "eta_ci", "C0", "η")
    ax_eta.axhline(0.0, color="grey", lw=0.8)
    ax_eta.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax_eta.set_xticks(range(len(names)), names)
    ax_eta.set_xlim(-0.5, len(names) - 0.5)
    ax_eta.set_title("transferability η (cumulated) with its interval")
    return _png(fig)

