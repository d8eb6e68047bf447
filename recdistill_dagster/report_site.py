"""Reports people read: PNG plots over days and one self-contained HTML page.

Everything comes from what the pipeline already stores: the report JSON of each day
(`reports/<day>/transferability.json`), the stored predictions (`reports/<day>/predictions.parquet`)
and, for the loss magnitudes, the MLflow run of each day's distilled student (its final task and
distillation losses and the per-step history). The drawing functions take plain data, so they are
tested without Dagster or MLflow; `build_report` gathers the inputs, `write_report` stores the
result and `publish_report` (called by every transferability_report materialization) does both:

    reports/<day>/report.html         the page as of day d (the days up to d), images inlined
    reports/<day>/plots/<name>.png    its plots
    reports/index.html                the page over every report day written so far
"""

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

import numpy as np
import polars as pl

from recdistill_dagster import layout
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.reporting import MODEL_STYLES, fmt, fmt_ci, plt

INDEX_PATH = "reports/index.html"
# Models compared in the calibration plots: column of the predictions table → label.
CALIBRATION_MODELS = {"teacher": "teacher", "student_raw": "baseline student", "student_distill": "distilled student"}
MODEL_COLORS = {"teacher": "C3", "student_raw": "C7", "student_distill": "C0"}


class ArtifactReader(Protocol):
    def exists(self, relative: str) -> bool: ...
    def read_json(self, relative: str, what: str = ...) -> Any: ...
    def read_parquet(self, relative: str, what: str = ...) -> pl.DataFrame: ...
    def write_bytes(self, relative: str, data: bytes) -> str: ...


# --------------------------------------------------------------------------- inputs


@dataclass
class StudentLosses:
    """The distilled student's loss magnitudes for one day (from its MLflow run)."""

    day: str
    alpha: float
    task_loss: float | None = None  # last epoch, main tower's task loss
    distill_loss: float | None = None  # last epoch, distillation loss before α
    steps: list[int] = field(default_factory=list)  # global steps of the logged history
    task_history: list[float] = field(default_factory=list)
    distill_history: list[float] = field(default_factory=list)
    note: str | None = None  # why a value is missing

    @property
    def ratio(self) -> float | None:
        """α·L_distill / L_task: about 1 when the two terms weigh the same (DESIGN: tune α for that)."""
        if self.task_loss is None or self.distill_loss is None or self.task_loss <= 0:
            return None
        return self.alpha * self.distill_loss / self.task_loss


def student_losses(client: Any, history: Sequence[dict[str, Any]], alpha: float) -> list[StudentLosses]:
    """Loss magnitudes of each day's distilled student, read from its MLflow run (`client`: MlflowClient)."""
    out = []
    for report in history:
        run_id = (report.get("mlflow_runs") or {}).get("student")
        record = StudentLosses(day=report["day"], alpha=alpha)
        if client is None or not run_id:
            record.note = "no MLflow run recorded"
            out.append(record)
            continue
        try:
            metrics = client.get_run(run_id).data.metrics
            task = client.get_metric_history(run_id, "train/task_loss")
            distill = {m.step: m.value for m in client.get_metric_history(run_id, "train/distill_loss")}
        except Exception as exc:  # a run deleted or in another store: the page says so
            record.note = f"MLflow run {run_id} unavailable ({type(exc).__name__})"
            out.append(record)
            continue
        record.task_loss = metrics.get("task_loss")
        record.distill_loss = metrics.get("distill_loss")
        if record.distill_loss is None:
            record.note = "no distillation on this day"
        for point in sorted(task, key=lambda m: m.step):
            if point.step in distill:
                record.steps.append(point.step)
                record.task_history.append(point.value)
                record.distill_history.append(distill[point.step])
        out.append(record)
    return out


# --------------------------------------------------------------------------- plots


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _day_axis(ax: Any, days: Sequence[str]) -> None:
    ax.set_xticks(range(len(days)), days, rotation=45, fontsize=7)
    ax.set_xlim(-0.5, len(days) - 0.5)


def plot_auc_over_days(history: Sequence[dict[str, Any]]) -> bytes:
    """AUC of teacher, baseline and distilled student with the Bayes limit: per day and cumulated."""
    days = [r["day"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100, sharey=True)
    for ax, scope in zip(axes, ("day", "cumulative"), strict=True):
        for key, (label, style) in MODEL_STYLES.items():
            values = [(r if scope == "day" else r["cumulative"]).get(key) for r in history]
            if any(v is not None for v in values):
                ax.plot(range(len(days)), [np.nan if v is None else v for v in values], style, label=label)
        _day_axis(ax, days)
        ax.grid(alpha=0.3)
        ax.set_title("AUC per day (on day d+1)" if scope == "day" else "AUC cumulated over report days")
    axes[0].set_ylabel("AUC")
    axes[0].legend(fontsize=8)
    return _png(fig)


def _errorbars(ax: Any, xs: list[float], points: list[dict[str, Any] | None], key: str, ci_key: str,
               color: str, label: str) -> None:
    kept = [(x, p) for x, p in zip(xs, points, strict=True) if p is not None and p.get(key) is not None]
    if not kept:
        return
    values = [p[key] for _, p in kept]
    cis = [p.get(ci_key) or [p[key], p[key]] for _, p in kept]
    ax.errorbar([x for x, _ in kept], values, yerr=[[v - c[0] for v, c in zip(values, cis, strict=True)],
                                                     [c[1] - v for v, c in zip(values, cis, strict=True)]],
                fmt="o", color=color, capsize=3, label=label)


def plot_eta_over_days(history: Sequence[dict[str, Any]]) -> bytes:
    """Teacher and distillation gains, and η per day and cumulated, each with its interval."""
    days = [r["day"] for r in history]
    xs = list(range(len(days)))
    fig, (ax_gain, ax_eta) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    _errorbars(ax_gain, [x - 0.08 for x in xs], list(history), "teacher_gain", "teacher_gain_ci", "C3",
               "teacher gain P_T − P_S_raw")
    _errorbars(ax_gain, [x + 0.08 for x in xs], list(history), "distill_gain", "distill_gain_ci", "C0",
               "distillation gain P_S_distill − P_S_raw")
    ax_gain.axhline(0.0, color="grey", lw=0.8)
    ax_gain.set_title("AUC gains per day with 95% interval")
    ax_gain.legend(fontsize=8)
    _errorbars(ax_eta, [x - 0.08 for x in xs], list(history), "eta", "eta_ci", "C0", "η, day")
    _errorbars(ax_eta, [x + 0.08 for x in xs], [r["cumulative"] for r in history], "eta", "eta_ci", "C2",
               "η, cumulated")
    unmeasured = [x for x, r in zip(xs, history, strict=True) if r.get("eta") is None]
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


def calibration_bins(predicted: np.ndarray, labels: np.ndarray, p_true: np.ndarray | None,
                     bins: int = 10) -> list[dict[str, float]]:
    """Equal-count bins of the predicted probability: mean predicted, observed rate (± s.e.), mean p_true."""
    order = np.argsort(predicted, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(bins, max(len(order), 1))):
        if len(chunk) == 0:
            continue
        observed = float(labels[chunk].mean())
        rows.append({
            "n": len(chunk),
            "predicted": float(predicted[chunk].mean()),
            "observed": observed,
            "observed_se": float(np.sqrt(max(observed * (1 - observed), 1e-12) / len(chunk))),
            "p_true": float(p_true[chunk].mean()) if p_true is not None else float("nan"),
        })
    return rows


def calibration_summary(predictions: pl.DataFrame, bins: int = 10) -> dict[str, dict[str, float | None]]:
    """Per model: mean predicted vs observed rate (and mean p_true), and the bin-weighted mean |gap| (ECE)."""
    labels = predictions["label"].to_numpy().astype(np.float64)
    p_true = _p_true(predictions)
    summary = {}
    for column in CALIBRATION_MODELS:
        predicted = predictions[column].to_numpy().astype(np.float64)
        rows = calibration_bins(predicted, labels, p_true, bins)
        n = sum(r["n"] for r in rows) or 1
        summary[column] = {
            "mean_predicted": float(predicted.mean()) if predicted.size else None,
            "observed_rate": float(labels.mean()) if labels.size else None,
            "mean_p_true": float(p_true.mean()) if p_true is not None else None,
            "ece_observed": sum(r["n"] * abs(r["predicted"] - r["observed"]) for r in rows) / n,
            "ece_p_true": (sum(r["n"] * abs(r["predicted"] - r["p_true"]) for r in rows) / n
                           if p_true is not None else None),
        }
    return summary


def _p_true(predictions: pl.DataFrame) -> np.ndarray | None:
    if "p_true" not in predictions.columns or predictions.height == 0 or predictions["p_true"].null_count():
        return None
    return predictions["p_true"].to_numpy().astype(np.float64)


def plot_calibration(predictions: pl.DataFrame, title: str, bins: int = 10) -> bytes:
    """Reliability diagram: predicted probability (equal-count bins) vs observed click rate and vs p_true."""
    labels = predictions["label"].to_numpy().astype(np.float64)
    p_true = _p_true(predictions)
    panels = 2 if p_true is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), dpi=100, squeeze=False)
    axes = axes[0]
    extent = [1.0, 0.0]
    for column, label in CALIBRATION_MODELS.items():
        rows = calibration_bins(predictions[column].to_numpy().astype(np.float64), labels, p_true, bins)
        xs = [r["predicted"] for r in rows]
        observed = [r["observed"] for r in rows]
        axes[0].errorbar(xs, observed, yerr=[r["observed_se"] for r in rows], fmt="o-", ms=3, capsize=2,
                         color=MODEL_COLORS[column], label=label)
        values = xs + [v for v in observed if v > 0]
        if p_true is not None:
            truth = [r["p_true"] for r in rows]
            axes[1].plot(xs, truth, "o-", ms=3, color=MODEL_COLORS[column], label=label)
            values += truth
        extent = [min(extent[0], *values), max(extent[1], *values)]
    low, high = max(extent[0] * 0.8, 1e-4), min(extent[1] * 1.25, 1.0)
    for ax, what in zip(axes, ("observed click rate", "mean p_true (ground truth)"), strict=False):
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


def plot_loss_magnitudes(losses: Sequence[StudentLosses]) -> bytes:
    """Task vs α·distill loss of the distilled student: final values per day and their ratio per step."""
    fig, (ax_day, ax_step) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    days = [r.day for r in losses]
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
    for index, record in enumerate(losses):
        if not record.steps:
            continue
        ratio = [record.alpha * d / t if t > 0 else np.nan
                 for t, d in zip(record.task_history, record.distill_history, strict=True)]
        ax_step.plot(record.steps, ratio, "-o", ms=2, color=f"C{index % 10}", lw=1, label=record.day)
        plotted = True
    if plotted:
        ax_step.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax_step.set_yscale("log")
        ax_step.set_xlabel("global training step")
        ax_step.legend(fontsize=7, ncol=2)
        ax_step.grid(alpha=0.3, which="both")
    else:
        ax_step.text(0.5, 0.5, "no per-step loss history logged\n(fewer steps than runtime.log_every_steps)",
                     ha="center", va="center", transform=ax_step.transAxes)
    ax_step.set_title("α·L_distill / L_task per logged step (1 = equal weight)")
    return _png(fig)


# --------------------------------------------------------------------------- the page


@dataclass
class ReportPage:
    day: str  # the last report day the page covers
    html: str
    plots: dict[str, bytes]


def build_report(config: PipelineConfig, store: ArtifactReader, up_to: date, mlflow_client: Any = None,
                 bins: int = 10) -> ReportPage:
    """The report over every report day up to `up_to` (its plots and the HTML page)."""
    history = [store.read_json(layout.report_path(d)) for d in config.calendar.training_days()
               if d <= up_to and store.exists(layout.report_path(d))]
    if not history:
        raise ValueError(f"no transferability report up to {up_to}: materialize transferability_report first")
    frames = [store.read_parquet(layout.report_path(date.fromisoformat(r["day"]), "predictions.parquet"))
              for r in history]
    day_frame, cumulative_frame = frames[-1], pl.concat(frames, how="vertical_relaxed")
    losses = student_losses(mlflow_client, history, config.student.distill.alpha)
    last = history[-1]["day"]
    plots = {
        "auc_over_days": plot_auc_over_days(history),
        "eta_over_days": plot_eta_over_days(history),
        "calibration_day": plot_calibration(day_frame, f"{last} (eval {history[-1]['eval_day']})", bins),
        "calibration_cumulative": plot_calibration(cumulative_frame, f"{len(history)} day(s) cumulated", bins),
        "loss_magnitudes": plot_loss_magnitudes(losses),
    }
    calibration = {"day": calibration_summary(day_frame, bins), "cumulative": calibration_summary(cumulative_frame,
                                                                                                 bins)}
    page = render_html(config.profile, history, plots, calibration, losses)
    return ReportPage(day=last, html=page, plots=plots)


def write_report(store: ArtifactReader, page: ReportPage, index: bool = True) -> dict[str, str]:
    """Store the page and its plots; with `index`, also as reports/index.html. Returns name → URL."""
    day = date.fromisoformat(page.day)
    urls = {name: store.write_bytes(layout.report_path(day, f"plots/{name}.png"), png)
            for name, png in page.plots.items()}
    urls["report.html"] = store.write_bytes(layout.report_path(day, "report.html"), page.html.encode())
    if index:
        urls["index.html"] = store.write_bytes(INDEX_PATH, page.html.encode())
    return urls


def publish_report(config: PipelineConfig, store: ArtifactReader, day: date,
                   mlflow_client: Any = None) -> tuple[ReportPage, dict[str, str]]:
    """Write the page as of `day` and regenerate reports/index.html over every report day written so far."""
    page = build_report(config, store, day, mlflow_client)
    latest = max(d for d in config.calendar.training_days() if store.exists(layout.report_path(d)))
    urls = write_report(store, page, index=latest == day)
    if latest != day:  # an earlier day re-materialized: the index still covers every day
        urls["index.html"] = store.write_bytes(INDEX_PATH, build_report(config, store, latest, mlflow_client)
                                               .html.encode())
    return page, urls


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


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, png: bytes, alt: str) -> str:
    return (f'<img id="{name}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def render_html(profile: str, history: Sequence[dict[str, Any]], plots: dict[str, bytes],
                calibration: dict[str, dict[str, dict[str, float | None]]],
                losses: Sequence[StudentLosses]) -> str:
    """One self-contained page (no external file: images are inlined as data URIs)."""
    last = history[-1]
    cumulative = last["cumulative"]
    esc = html.escape
    headline = (
        f"Cumulated over {len(history)} report day(s) ({history[0]['day']} … {last['day']}, "
        f"{cumulative['n_eval']:,} evaluation rows): <b>η = {fmt(cumulative['eta'], 3)}</b> "
        f"{fmt_ci(cumulative['eta_ci'], 3)}; teacher gain {fmt(cumulative['teacher_gain'])} "
        f"{fmt_ci(cumulative['teacher_gain_ci'])}, distillation gain {fmt(cumulative['distill_gain'])} "
        f"{fmt_ci(cumulative['distill_gain_ci'])}."
    )
    if cumulative.get("eta") is None and cumulative.get("eta_note"):
        headline += f' <span class="note">η not measurable: {esc(cumulative["eta_note"])}</span>'
    per_day = _table(
        ["day", "eval day", "teacher", "baseline", "distilled", "aux", "Bayes", "teacher gain", "distill gain",
         "η", "η 95% CI", "cum. η", "cum. η CI", "rows"],
        [[r["day"], r["eval_day"], fmt(r["teacher_auc"]), fmt(r["student_raw_auc"]), fmt(r["student_distill_auc"]),
          fmt(r.get("student_aux_auc")), fmt(r.get("bayes_auc")), fmt(r["teacher_gain"]), fmt(r["distill_gain"]),
          fmt(r["eta"], 3), fmt_ci(r["eta_ci"], 2), fmt(r["cumulative"]["eta"], 3),
          fmt_ci(r["cumulative"]["eta_ci"], 2), f"{r['n_eval']:,}"] for r in history],
    )
    notes = "".join(f'<li class="note">{esc(r["day"])}: η not measurable — {esc(r["eta_note"])}</li>'
                    for r in history if r.get("eta") is None and r.get("eta_note"))
    calibration_tables = "".join(
        f"<h3>{'day ' + esc(last['day']) if scope == 'day' else 'cumulated'}</h3>" + _table(
            ["model", "mean predicted", "observed rate", "mean p_true", "ECE vs observed", "ECE vs p_true"],
            [[CALIBRATION_MODELS[m], fmt(v["mean_predicted"]), fmt(v["observed_rate"]), fmt(v["mean_p_true"]),
              fmt(v["ece_observed"]), fmt(v["ece_p_true"])] for m, v in calibration[scope].items()],
        )
        for scope in ("day", "cumulative")
    )
    loss_table = _table(
        ["day", "L_task", "L_distill", "α", "α·L_distill / L_task", "note"],
        [[r.day, fmt(r.task_loss), fmt(r.distill_loss), f"{r.alpha:g}", fmt(r.ratio, 3), r.note or ""]
         for r in losses],
    )
    roles = ("teacher", "student", "student_baseline")
    provenance = _table(
        ["day", "teacher snapshot", "student snapshot", "baseline snapshot",
         "MLflow runs (teacher / student / baseline)"],
        [[r["day"], *(r["snapshots"].get(role, "?") for role in roles),
          " / ".join(((r.get("mlflow_runs") or {}).get(role) or "?")[:8] for role in roles)] for r in history],
    )
    params = last.get("parameters") or {}
    size = (f" Parameters: teacher {params['teacher']:,}, student {params['student']:,}."
            if params.get("teacher") else "")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Rec-Distill report · {esc(profile)} · up to {esc(last['day'])}</title>
<style>{STYLE}</style></head>
<body>
<h1>Rec-Distill transferability report</h1>
<p class="meta">profile <code>{esc(profile)}</code> · report days {esc(history[0]['day'])} … {esc(last['day'])} ·
generated {generated}. Progressive validation: the models after day d are scored on day d+1's full, unsampled
log.{esc(size)}</p>
<p class="headline">{headline}</p>

<h2>Per day</h2>
{per_day}
<ul>{notes}</ul>

<h2>AUC over days</h2>
<p>Teacher, baseline student (same architecture and data, no teacher signal) and distilled student, with the
Bayes limit (AUC of the true click probability, which no model can beat). Left: each day; right: cumulated
over all report days so far.</p>
{_img("auc_over_days", plots["auc_over_days"], "AUC over days")}

<h2>Transferability η</h2>
<p>η = distillation gain / teacher gain, with paired-bootstrap 95% intervals; it is only measurable when the
teacher gain is significantly above zero.</p>
{_img("eta_over_days", plots["eta_over_days"], "eta over days")}

<h2>Calibration</h2>
<p>Predicted click probability (equal-count bins, on the unsampled scale) against the observed click rate
(± one standard error) and against the mean ground-truth probability <code>p_true</code>. On the diagonal is
perfect calibration.</p>
{_img("calibration_day", plots["calibration_day"], "calibration, last day")}
{_img("calibration_cumulative", plots["calibration_cumulative"], "calibration, cumulated")}
{calibration_tables}

<h2>Loss magnitudes: task vs distillation</h2>
<p>The distilled student's task loss and α-weighted distillation loss. The distillation loss can be orders of
magnitude smaller than the task loss; α is meant to bring the two to comparable size (ratio near 1).</p>
{_img("loss_magnitudes", plots["loss_magnitudes"], "loss magnitudes")}
{loss_table}

<h2>Provenance</h2>
{provenance}
</body></html>
"""
