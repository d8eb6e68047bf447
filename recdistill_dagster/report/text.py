"""The report as text: markdown for the Dagster UI, and the terminal tables of `make run`."""

import base64
from collections.abc import Sequence

from recdistill_dagster.report.models import BAYES, DISTILLED, RAW, REPORT_MODELS, TEACHER
from recdistill_dagster.report.schema import Gains, ServedExport, ServingCost, TransferabilityReport


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for people: fixed digits, "n/a" when absent (e.g. η when not measurable)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_ci(ci: Sequence[float] | None, digits: int = 4) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def gains_line(gains: Gains, rows: int, days: int) -> str:
    """Absolute gains first, then η: the order the numbers should be read in."""
    line = (f"over {days} report day(s), {rows:,} evaluation rows: teacher gain {fmt(gains.teacher_gain)} "
            f"{fmt_ci(gains.teacher_gain_ci)}, distillation gain {fmt(gains.distill_gain)} "
            f"{fmt_ci(gains.distill_gain_ci)}, eta {fmt(gains.eta, 3)} {fmt_ci(gains.eta_ci, 3)}")
    return line + (f" ({gains.note})" if gains.note else "")


def _export_phrase(name: str, export: ServedExport, serving: ServingCost) -> str:
    torch_speed, ort_speed = export.torch, export.onnxruntime
    return (f"{name} |Δ| {export.max_abs_diff:.1e} over {export.rows_compared:,} rows; latency (batch "
            f"{serving.latency_batch}) {torch_speed.latency_ms:.3f} ms PyTorch / {ort_speed.latency_ms:.3f} ms "
            f"onnxruntime; throughput (batch {serving.throughput_batch}) {torch_speed.throughput_rows_per_s:,.0f} / "
            f"{ort_speed.throughput_rows_per_s:,.0f} rows/s")


def onnx_line(serving: ServingCost) -> str | None:
    """The ONNX exports' parity with PyTorch and both runtimes' speed, student then teacher (None before ONNX)."""
    parts = [_export_phrase(name, export, serving)
             for name, export in (("student", serving.student), ("teacher", serving.teacher)) if export is not None]
    if not parts:
        return None
    tolerance = f" (tolerance {serving.onnx_tolerance:g})" if serving.onnx_tolerance is not None else ""
    return f"ONNX vs PyTorch{tolerance}: " + "; ".join(parts) + "."


def report_markdown(report: TransferabilityReport, png: bytes | None = None) -> str:
    """One day's report as markdown: per-model AUC (day and cumulated), gains, η, and the plot inline."""
    day, cumulative = report.daily, report.cumulative
    lines = [
        f"### {report.student} ({report.role}): models after {report.day} scored on {report.eval_day}",
        "",
        "| | day | cumulated (within-day) |",
        "|---|---|---|",
    ]
    lines += [f"| {m.label} AUC | {fmt(day.auc.get(m.key))} | {fmt(cumulative.auc.get(m.key))} |"
              for m in (*REPORT_MODELS, BAYES)]
    for label, field, digits in (("teacher gain ΔGain_scale", "teacher_gain", 4),
                                 ("distillation gain ΔGain_distill", "distill_gain", 4), ("**η**", "eta", 3)):
        cells = [f"{fmt(getattr(g, field), digits)} {fmt_ci(getattr(g, field + '_ci'), digits)}"
                 for g in (day.gains, cumulative.gains)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += [f"| evaluation rows | {day.n_eval:,} | {cumulative.n_eval:,} |", ""]
    for scope, gains in (("day", day.gains), ("cumulated", cumulative.gains)):
        if gains.eta is None and gains.note:
            lines.append(f"η ({scope}) not measurable: {gains.note}")
    p = report.parameters
    lines.append(f"Parameters: teacher {p.teacher:,}, student {p.student:,}, served main tower {p.served:,} "
                 f"(1:{1 / p.served_to_teacher:.1f}). Serving: {report.serving.student_us:.2f} µs vs teacher "
                 f"{report.serving.teacher_us:.2f} µs per prediction at batch {report.serving.batch_size}.")
    onnx = onnx_line(report.serving)
    if onnx:
        lines.append(onnx)
    if png is not None:
        lines += ["", f"![transferability](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines)


def summary_table(reports: Sequence[TransferabilityReport]) -> str:
    """One student's report days as a terminal table, then its cumulated gains and η."""
    if not reports:
        return "(no report yet)"
    header = (f"{'day':<10}  {'teacher':>7}  {'raw':>7}  {'distill':>7}  {'aux':>7}  {'bayes':>7}  "
              f"{'T gain':>7}  {'eta':>6}  {'eta CI':<14}  {'cum eta':>7}  {'cum CI':<14}")
    first = reports[-1]
    lines = [f"{first.student} ({first.role}): served {first.parameters.served:,} parameters, 1:"
             f"{1 / first.parameters.served_to_teacher:.1f} of the teacher's; AUC on the next day's unsampled log",
             header, "-" * len(header)]
    for r in reports:
        d, c = r.daily, r.cumulative
        lines.append(
            f"{r.day:<10}  {fmt(d.auc.get(TEACHER.key)):>7}  {fmt(d.auc.get(RAW.key)):>7}  "
            f"{fmt(d.auc.get(DISTILLED.key)):>7}  {fmt(d.auc.get('student_aux')):>7}  {fmt(d.auc.get(BAYES.key)):>7}  "
            f"{fmt(d.gains.teacher_gain):>7}  {fmt(d.gains.eta, 2):>6}  {fmt_ci(d.gains.eta_ci, 2):<14}  "
            f"{fmt(c.gains.eta, 2):>7}  {fmt_ci(c.gains.eta_ci, 2):<14}"
        )
    last = reports[-1].cumulative
    lines += ["", "cumulated (within-day) " + gains_line(last.gains, last.n_eval, len(last.days))]
    return "\n".join(lines)
