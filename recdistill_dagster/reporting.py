"""Transferability reports for people: a plot over days and a markdown summary."""

import base64
import io
import os
import tempfile
from typing import Any

os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "recdistill-mpl"))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPORT_KEYS = ("teacher_auc", "student_raw_auc", "student_distill_auc", "student_aux_auc", "bayes_auc")
# How each model's AUC is drawn in every plot over days: report key → (legend, matplotlib style).
MODEL_STYLES = {
    "bayes_auc": ("Bayes limit (p_true)", "k--"),
    "teacher_auc": ("teacher", "C3-o"),
    "student_distill_auc": ("distilled student (main)", "C0-o"),
    "student_aux_auc": ("distilled student (aux)", "C0:"),
    "student_raw_auc": ("baseline student", "C7-o"),
}


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for people: fixed digits, "n/a" when absent (e.g. η when not measurable)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_ci(ci: list[float] | tuple[float, float] | None, digits: int = 4) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def plot_transferability(history: list[dict[str, Any]]) -> bytes:
    """PNG: AUC of each model per report day (with the Bayes limit) and η per day with its CI."""
    days = [r["day"] for r in history]
    fig, (ax_auc, ax_eta) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for key, (label, style) in MODEL_STYLES.items():
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            ax_auc.plot(days, [v if v is not None else float("nan") for v in values], style, label=label)
    ax_auc.set_title("AUC on the next day (progressive validation)")
    ax_auc.set_ylabel("AUC")
    ax_auc.legend(fontsize=8)
    ax_auc.tick_params(axis="x", rotation=45, labelsize=7)
    for series, color, label in (("day", "C0", "η, day"), ("cumulative", "C2", "η, cumulative")):
        points = [(i, (r if series == "day" else r["cumulative"])) for i, r in enumerate(history)]
        xs = [i + (0.1 if series == "cumulative" else 0.0) for i, r in points if r.get("eta") is not None]
        ys = [r["eta"] for _, r in points if r.get("eta") is not None]
        lows = [r["eta"] - r["eta_ci"][0] for _, r in points if r.get("eta") is not None]
        highs = [r["eta_ci"][1] - r["eta"] for _, r in points if r.get("eta") is not None]
        if xs:
            ax_eta.errorbar(xs, ys, yerr=[lows, highs], fmt="o", color=color, capsize=3, label=label)
    ax_eta.axhline(0.0, color="grey", lw=0.8)
    ax_eta.set_xticks(range(len(days)), days, rotation=45, fontsize=7)
    ax_eta.set_title("transferability η with 95% interval")
    if ax_eta.get_legend_handles_labels()[0]:
        ax_eta.legend(fontsize=8)
    else:
        ax_eta.text(0.5, 0.5, "η not measurable yet\n(teacher gain not significant)", ha="center",
                    va="center", transform=ax_eta.transAxes)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def report_markdown(report: dict[str, Any], png: bytes | None = None) -> str:
    """The report as markdown: per-day and cumulative tables, and the plot inline."""
    cumulative = report["cumulative"]
    rows = [
        ("teacher AUC", "teacher_auc"),
        ("baseline student AUC (P_S_raw)", "student_raw_auc"),
        ("distilled student AUC, main tower", "student_distill_auc"),
        ("distilled student AUC, aux tower", "student_aux_auc"),
        ("Bayes-limit AUC (p_true)", "bayes_auc"),
    ]
    lines = [
        f"### Transferability, models after {report['day']} scored on {report['eval_day']}",
        "",
        "| | day | cumulative |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {fmt(report.get(key))} | {fmt(cumulative.get(key))} |" for label, key in rows]
    lines += [
        f"| teacher gain ΔGain_scale | {fmt(report['teacher_gain'])} {fmt_ci(report['teacher_gain_ci'])} "
        f"| {fmt(cumulative['teacher_gain'])} {fmt_ci(cumulative['teacher_gain_ci'])} |",
        f"| distillation gain ΔGain_distill | {fmt(report['distill_gain'])} {fmt_ci(report['distill_gain_ci'])} "
        f"| {fmt(cumulative['distill_gain'])} {fmt_ci(cumulative['distill_gain_ci'])} |",
        f"| **η** | **{fmt(report['eta'], 3)}** {fmt_ci(report['eta_ci'], 3)} "
        f"| **{fmt(cumulative['eta'], 3)}** {fmt_ci(cumulative['eta_ci'], 3)} |",
        f"| evaluation rows | {report['n_eval']:,} | {cumulative['n_eval']:,} |",
        "",
    ]
    for scope, payload in (("day", report), ("cumulative", cumulative)):
        if payload.get("eta") is None and payload.get("eta_note"):
            lines.append(f"η ({scope}) not measurable: {payload['eta_note']}")
    params = report.get("parameters", {})
    if params:
        lines.append(
            f"Parameters: teacher {params['teacher']:,}, student {params['student']:,} "
            f"(ratio 1:{1 / params['student_to_teacher']:.1f})."
        )
    if png is not None:
        lines += ["", f"![transferability](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines)
