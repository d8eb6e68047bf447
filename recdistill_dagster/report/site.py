"""The HTML reports: one page per student over its report days, and an index comparing the students.

Everything comes from the stored report JSONs (small: scopes, calibration bins, losses), never from
the predictions, so a page costs the same whatever the days' sizes:

    reports/<student>/<day>/report.html        the student's page as of day d, images inlined
    reports/<student>/<day>/plots/<name>.png   its plots
    reports/<student>/index.html               the student's page over every report day so far
    reports/index.html                         the students side by side (latest cumulated numbers)
"""

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from recdistill_dagster import layout
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.report.calibration import combine, summary
from recdistill_dagster.report.history import report_history
from recdistill_dagster.report.models import BAYES, DISTILLED, RAW, REPORT_MODELS, TEACHER
from recdistill_dagster.report.plots import (
    plot_auc_over_days,
    plot_calibration,
    plot_eta_over_days,
    plot_loss_magnitudes,
    plot_students,
)
from recdistill_dagster.report.schema import TransferabilityReport
from recdistill_dagster.report.text import fmt, fmt_ci, onnx_line
from recdistill_dagster.storage import Store

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 1180px;
       color: #1f2328; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.3rem; }
.meta { color: #59636e; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
.headline { font-size: 1.15rem; background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px;
            padding: 0.8rem 1rem; }
img { max-width: 100%; border: 1px solid #eaeef2; }
.note { color: #9a6700; } code { font-size: 0.85em; }
"""
PLOT_NAMES = ("auc_over_days", "eta_over_days", "calibration_day", "calibration_cumulative", "loss_magnitudes")


INDEX_LINK = "__students_index__"  # replaced by the relative link from where the page is written


@dataclass
class ReportPage:
    student: str
    day: str  # the last report day the page covers
    template: str  # the page, with INDEX_LINK where the link to the students' index goes
    plots: dict[str, bytes]

    def html(self, index_href: str) -> str:
        return self.template.replace(INDEX_LINK, index_href)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, png: bytes, alt: str) -> str:
    return (f'<img id="{name}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def _page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _headline(report: TransferabilityReport) -> str:
    """Absolute gains and the ceiling first, then η."""
    c = report.cumulative
    g = c.gains
    ceiling = c.auc.get(BAYES.key)
    text = (f"Cumulated over {len(c.days)} report day(s) ({c.days[0]} … {c.days[-1]}, {c.n_eval:,} evaluation "
            f"rows; AUC = mean of the daily AUCs): teacher gain <b>{fmt(g.teacher_gain)}</b> "
            f"{fmt_ci(g.teacher_gain_ci)}, distillation gain <b>{fmt(g.distill_gain)}</b> "
            f"{fmt_ci(g.distill_gain_ci)} over the baseline's {fmt(c.auc.get(RAW.key))}"
            + (f" (Bayes limit {fmt(ceiling)})" if ceiling is not None else "")
            + f"; <b>η = {fmt(g.eta, 3)}</b> {fmt_ci(g.eta_ci, 3)}.")
    if g.eta is None and g.note:
        text += f' <span class="note">η not measurable: {html.escape(g.note)}</span>'
    return text


def build_student_page(config: PipelineConfig, store: Store, student: str, up_to: date) -> ReportPage:
    """One student's page over every report day up to `up_to` (its plots and the HTML)."""
    history = report_history(config, store, student, up_to)
    if not history:
        raise ValueError(f"no transferability report of {student} up to {up_to}: materialize it first")
    last = history[-1]
    keys = sorted({key for r in history for key in r.calibration} & {m.key for m in REPORT_MODELS},
                  key=[m.key for m in REPORT_MODELS].index)
    cumulated_bins = {key: combine([r.calibration[key] for r in history if key in r.calibration]) for key in keys}
    plots = {
        "auc_over_days": plot_auc_over_days(history),
        "eta_over_days": plot_eta_over_days(history),
        "calibration_day": plot_calibration(last.calibration, f"{last.day} (eval {last.eval_day})"),
        "calibration_cumulative": plot_calibration(cumulated_bins, f"{len(history)} day(s) cumulated"),
        "loss_magnitudes": plot_loss_magnitudes([r.day for r in history], [r.losses for r in history]),
    }
    per_day = _table(
        ["day", "eval day", "teacher", "baseline", "distilled", "aux", "Bayes", "teacher gain", "distill gain",
         "η", "η CI", "cum. η", "cum. η CI", "rows"],
        [[r.day, r.eval_day, *(fmt(r.daily.auc.get(m.key)) for m in (*REPORT_MODELS, BAYES)),
          fmt(r.daily.gains.teacher_gain), fmt(r.daily.gains.distill_gain), fmt(r.daily.gains.eta, 3),
          fmt_ci(r.daily.gains.eta_ci, 2), fmt(r.cumulative.gains.eta, 3), fmt_ci(r.cumulative.gains.eta_ci, 2),
          f"{r.daily.n_eval:,}"] for r in history],
    )
    notes = "".join(f'<li class="note">{html.escape(r.day)}: η not measurable — {html.escape(r.daily.gains.note)}</li>'
                    for r in history if r.daily.gains.eta is None and r.daily.gains.note)
    calibration = "".join(
        f"<h3>{html.escape(title)}</h3>" + _table(
            ["model", "mean predicted", "observed rate", "mean p_true", "ECE vs observed", "ECE vs p_true"],
            [[m.label, *(fmt(v) for v in summary(bins[m.key]).values())] for m in REPORT_MODELS if m.key in bins])
        for title, bins in ((f"day {last.day}", last.calibration), ("cumulated", cumulated_bins))
    )
    losses = _table(
        ["day", "L_task", "L_distill", "α", "α·L_distill / L_task"],
        [[r.day, fmt(r.losses.task_loss), fmt(r.losses.distill_loss), f"{r.losses.alpha:g}",
          fmt(r.losses.alpha * r.losses.distill_loss / r.losses.task_loss, 3)
          if r.losses.distill_loss is not None and r.losses.task_loss else "n/a"] for r in history],
    )
    roles = ("teacher", "distilled", "baseline")
    provenance = _table(
        ["day", "teacher snapshot", "distilled snapshot", "baseline snapshot",
         "MLflow runs (teacher / distilled / baseline)"],
        [[r.day, *(r.snapshots.get(role, "?") for role in roles),
          " / ".join((r.mlflow_runs.get(role) or "?")[:8] for role in roles)] for r in history],
    )
    p, serving = last.parameters, last.serving
    esc = html.escape
    body = f"""<h1>Rec-Distill transferability report: {esc(student)} ({esc(last.role)})</h1>
<p class="meta">profile <code>{esc(config.profile)}</code> · report days {esc(history[0].day)} … {esc(last.day)} ·
generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} · <a href="{INDEX_LINK}">all students</a>. Progressive validation:
the models after day d are scored on day d+1's full, unsampled log. Parameters: teacher {p.teacher:,}, student
{p.student:,}, served main tower {p.served:,} (1:{1 / p.served_to_teacher:.1f}); serving {serving.student_us:.2f} µs
vs teacher {serving.teacher_us:.2f} µs per prediction at batch {serving.batch_size}.</p>
{f'<p class="meta">{esc(onnx)}</p>' if (onnx := onnx_line(serving)) else ""}
<p class="headline">{_headline(last)}</p>

<h2>Per day</h2>
{per_day}
<ul>{notes}</ul>

<h2>AUC over days</h2>
<p>Teacher, baseline student (same architecture and data, no teacher signal) and distilled student, with the Bayes
limit (AUC of the true click probability, which no model can beat). Cumulated AUC is the mean of the daily AUCs
(within-day: a model state is only ever ranked against rows of its own evaluation day).</p>
{_img("auc_over_days", plots["auc_over_days"], "AUC over days")}

<h2>Gains and transferability η</h2>
<p>η = distillation gain / teacher gain, with paired-bootstrap intervals; it is only measurable when the teacher
gain is significantly above zero.</p>
{_img("eta_over_days", plots["eta_over_days"], "gains and eta over days")}

<h2>Calibration</h2>
<p>Predicted click probability (fixed log-spaced bins, unsampled scale) against the observed click rate (± one
standard error) and against the mean ground-truth probability <code>p_true</code>.</p>
{_img("calibration_day", plots["calibration_day"], "calibration, last day")}
{_img("calibration_cumulative", plots["calibration_cumulative"], "calibration, cumulated")}
{calibration}

<h2>Loss magnitudes: task vs distillation</h2>
<p>The distilled student's task loss and α-weighted distillation loss; α is meant to bring the two to comparable
size (ratio near 1).</p>
{_img("loss_magnitudes", plots["loss_magnitudes"], "loss magnitudes")}
{losses}

<h2>Provenance</h2>
{provenance}"""
    title = f"Rec-Distill · {student} · up to {last.day}"
    return ReportPage(student=student, day=last.day, template=_page(title, body),
                      plots=plots)


def build_index(config: PipelineConfig, store: Store) -> str:
    """The students side by side: each one's latest cumulated AUCs, gains, η, size and serving cost."""
    latest = [history[-1] for s in config.active_students if (history := report_history(config, store, s.name))]
    if not latest:
        return _page("Rec-Distill reports", "<h1>Rec-Distill reports</h1><p>No report yet.</p>")
    rows = []
    for r in latest:
        c, g = r.cumulative, r.cumulative.gains
        rows.append([r.student, r.role, f"{r.day} ({len(c.days)} d)", fmt(c.auc.get(TEACHER.key)),
                     fmt(c.auc.get(RAW.key)), fmt(c.auc.get(DISTILLED.key)), fmt(c.auc.get(BAYES.key)),
                     f"{fmt(g.teacher_gain)} {fmt_ci(g.teacher_gain_ci)}",
                     f"{fmt(g.distill_gain)} {fmt_ci(g.distill_gain_ci)}", f"{fmt(g.eta, 3)} {fmt_ci(g.eta_ci, 3)}",
                     f"{r.parameters.served:,} (1:{1 / r.parameters.served_to_teacher:.1f})",
                     f"{r.serving.student_us:.2f} µs ({r.serving.teacher_us / r.serving.student_us:.0f}× cheaper)"])
    table = _table(["student", "stage", "up to", "teacher AUC", "baseline AUC", "distilled AUC", "Bayes",
                    "teacher gain", "distillation gain", "η", "served parameters", "serving cost / prediction"],
                   rows)
    links = "".join(f'<li><a href="{html.escape(r.student)}/index.html">{html.escape(r.student)}</a>: every report '
                    "day, calibration, losses, provenance</li>" for r in latest)
    body = f"""<h1>Rec-Distill: one teacher, {len(latest)} student(s)</h1>
<p class="meta">profile <code>{html.escape(config.profile)}</code> · generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.
Every student is distilled from the same teacher's recorded logits, moved into the student's own sampling space.
Numbers are cumulated over each student's report days (AUC = mean of the daily AUCs on the next day's unsampled
log).</p>
{table}
{_img("students", plot_students(latest), "students side by side")}
<ul>{links}</ul>"""
    return _page("Rec-Distill reports", body)


def publish_report(config: PipelineConfig, store: Store, student: str, day: date) -> tuple[ReportPage, dict[str, str]]:
    """Write the student's page as of `day`, its index over every day so far, and the students' index."""
    page = build_student_page(config, store, student, day)
    urls = {name: store.write_bytes(layout.report_path(student, day, f"plots/{name}.png"), png)
            for name, png in page.plots.items()}
    urls["report.html"] = store.write_bytes(layout.report_path(student, day, "report.html"),
                                            page.html("../../index.html").encode())
    latest = report_history(config, store, student)[-1].day
    index_page = page if latest == page.day else build_student_page(config, store, student, date.fromisoformat(latest))
    urls["student_index.html"] = store.write_bytes(layout.student_index_path(student),
                                                   index_page.html("../index.html").encode())
    urls["index.html"] = store.write_bytes(layout.INDEX_PATH, build_index(config, store).encode())
    return page, urls
