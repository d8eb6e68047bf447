"""Stage: one student's transferability report for one training partition (progressive validation).

The teacher, the distilled student and its baseline after day d are scored on day d+1's unsampled
log; the day's AUCs, gains and η come with paired-bootstrap intervals, and the cumulated scope is
folded from the previous report day's stored aggregate (so it costs the same on every day).
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
import torch

from models.debias import calibrated_probability
from models.export import LATENCY_BATCH, THROUGHPUT_BATCH
from models.features import FeatureTensors, frame_to_tensors
from models.inference import predict_tensors
from recdistill_dagster import layout
from recdistill_dagster.calendar import previous_partition, require_training_partition
from recdistill_dagster.config import StudentConfig
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.graph import TEACHER_CHECKPOINT, StudentKeys, partition_ref
from recdistill_dagster.registry import parse_snapshot_id
from recdistill_dagster.report.calibration import calibration_bins
from recdistill_dagster.report.estimate import (
    DayEstimate,
    cumulative_estimate,
    day_estimate,
    from_stored,
    replicates_frame,
)
from recdistill_dagster.report.models import AUX, DISTILLED, RAW, TEACHER
from recdistill_dagster.report.schema import (
    LossSummary,
    Parameters,
    ServedExport,
    ServingCost,
    TransferabilityReport,
)
from recdistill_dagster.stages.chain import LoadedCheckpoint, Provenance, load_checkpoint, snapshot_id
from recdistill_dagster.stages.context import StageContext
from recdistill_dagster.stages.inputs import load_samples, require_files
from recdistill_dagster.stages.promotion import served_module_auc
from recdistill_dagster.stages.serving import check_and_measure, serving_inputs, student_onnx_relative, teacher_onnx
from recdistill_dagster.stages.student import chain_of, load_student
from recdistill_dagster.stages.teacher import TEACHER as TEACHER_CHAIN
from recdistill_dagster.stages.teacher import cached_eval_scores, eval_scores_path, load_teacher

# Given the day's distilled snapshot id: the served module to compare it with (the registry's champion),
# or None when there is nothing to compare (no champion yet, the day's own version, a decision on record).
ChampionLoader = Callable[[str], torch.nn.Module | None]


@dataclass(frozen=True)
class ChampionScore:
    """The champion's AUC on the report's evaluation rows; None with the reason when it could not be scored
    (e.g. the configured architecture changed, so its inputs no longer fit)."""

    auc: float | None
    error: str | None = None


@dataclass
class ReportResult:
    report: TransferabilityReport
    provenance: Provenance
    report_url: str
    champion: ChampionScore | None = None  # None: no champion to compare with


def _teacher_eval_logits(ctx: StageContext, checkpoint: LoadedCheckpoint, eval_frame: pl.DataFrame,
                         tensors: FeatureTensors) -> np.ndarray:
    """The teacher snapshot's raw logits on the eval day, scored once per snapshot.

    The teacher is the costliest model to run, and one snapshot is scored by every student's report,
    so the scores are stored keyed by the snapshot and reused when they cover exactly the eval rows in
    the same order (the next day's teacher health check reads them too, as its reference scores).
    """
    cached = cached_eval_scores(ctx, checkpoint.snapshot_id, eval_frame)
    if cached is not None:
        return cached
    logit = predict_tensors(load_teacher(ctx, checkpoint), tensors, batch_size=ctx.config.eval.batch_size,
                            device=ctx.device)["logit"]
    if np.isfinite(logit).all():  # a diverged teacher's scores are recomputed, never cached
        ctx.store.write_parquet(eval_scores_path(checkpoint.snapshot_id),
                                pl.DataFrame({"sample_id": eval_frame["sample_id"], "logit": logit}))
    return logit


def _microseconds_per_prediction(ctx: StageContext, module: torch.nn.Module, eval_frame: pl.DataFrame,
                                 history_len: int) -> float:
    """Median wall time per prediction of `module` on a batch of the eval day's rows (after a warm-up)."""
    config = ctx.config.eval
    batch = frame_to_tensors(eval_frame.head(config.serving_batch_size), history_len).to(ctx.device)
    timings = []
    with torch.no_grad():
        module(batch.sparse, batch.dense, batch.history)
        for _ in range(config.serving_repeats):
            started = time.perf_counter()
            module(batch.sparse, batch.dense, batch.history)
            timings.append(time.perf_counter() - started)
    return statistics.median(timings) / len(batch) * 1e6


def _onnx_serving(ctx: StageContext, student: StudentConfig, partition: date, served: torch.nn.Module,
                  teacher: torch.nn.Module, teacher_ckpt: LoadedCheckpoint,
                  eval_frame: pl.DataFrame) -> dict[str, ServedExport]:
    """The served tower's stored ONNX and the teacher's (exported once per snapshot): parity and speed."""
    consumer = f"{StudentKeys(student.name).report} {partition}"
    student_inputs = serving_inputs(eval_frame, student.arch.seq_len)
    teacher_inputs = serving_inputs(eval_frame, ctx.config.teacher.arch.seq_len)
    _, _, run = parse_snapshot_id(teacher_ckpt.snapshot_id)
    teacher_relative = teacher_onnx(ctx, teacher.cpu().eval(), partition, run,
                                    (teacher_inputs[0][:2], teacher_inputs[1][:2], teacher_inputs[2][:2]))
    return {
        "student": check_and_measure(ctx, served, student_onnx_relative(ctx, student.name, partition, consumer),
                                     student_inputs, f"{consumer}: {student.name}'s served tower"),
        "teacher": check_and_measure(ctx, teacher, teacher_relative, teacher_inputs,
                                     f"{consumer}: teacher {teacher_ckpt.snapshot_id}"),
    }


def _previous_aggregate(ctx: StageContext, student: StudentConfig, partition: date) -> DayEstimate | None:
    """Yesterday's cumulated scope and replicates; none on the first report day."""
    previous = previous_partition(ctx.config.calendar, partition)
    if previous is None:
        return None
    keys = StudentKeys(student.name)
    path = layout.report_path(student.name, previous)
    if not ctx.store.exists(path):
        raise PipelineStepError(
            f"{keys.report} {partition}: the report of {previous} is missing, so the cumulated numbers would "
            "silently skip a day; materialize it first"
        )
    report = TransferabilityReport.model_validate(ctx.store.read_json(path, what=f"{keys.report} {previous}"))
    expected = [d.isoformat() for d in ctx.config.calendar.training_days() if d < partition]
    if report.cumulative.days != expected:
        raise PipelineStepError(
            f"{keys.report} {partition}: the report of {previous} cumulates {report.cumulative.days}, expected "
            f"{expected}; re-materialize the reports from the first differing day"
        )
    stored = from_stored(report.cumulative, ctx.store.read_parquet(layout.report_path(student.name, previous,
                                                                                      "replicates.parquet")),
                         "cumulative")
    if any(len(r) != ctx.config.eval.bootstrap_samples for r in stored.replicates.values()):
        raise PipelineStepError(
            f"{keys.report} {partition}: the report of {previous} has a different number of bootstrap replicates "
            f"than eval.bootstrap_samples={ctx.config.eval.bootstrap_samples}; re-materialize every report"
        )
    return stored


def _score_champion(ctx: StageContext, student: StudentConfig, module: torch.nn.Module, tensors: FeatureTensors,
                    labels: np.ndarray) -> ChampionScore:
    try:
        return ChampionScore(served_module_auc(module, tensors, labels, history_len=student.arch.seq_len,
                                               batch_size=ctx.config.eval.batch_size, device=ctx.device))
    # Inputs that no longer fit the champion (an exported program's shape guard fails with an AssertionError).
    except (RuntimeError, IndexError, ValueError, AssertionError) as exc:
        return ChampionScore(None, f"{type(exc).__name__}: {exc}")


def evaluate_partition(ctx: StageContext, student: StudentConfig, partition: date,
                       champion: ChampionLoader | None = None) -> ReportResult:
    """Score teacher, distilled student and baseline after `partition` on the next day; write the report.

    With `champion`, the served model it returns is scored on the same rows in the same pass (the
    evidence the registry promotes on), so the evaluation day is read and converted once.
    """
    config, store = ctx.config, ctx.store
    require_training_partition(config.calendar, partition)
    keys = StudentKeys(student.name)
    eval_day = partition + timedelta(days=1)
    eval_path = layout.samples_path("eval", eval_day)
    require_files(store, {eval_day: eval_path}, "eval_samples", f"{keys.report} {partition}",
                  "materialize that data partition first")
    eval_frame = load_samples(store, eval_path, "eval_samples", eval_day)
    teacher_ckpt = load_checkpoint(store, TEACHER_CHAIN, partition)
    distilled_ckpt = load_checkpoint(store, chain_of(student, "distilled"), partition)
    baseline_ckpt = load_checkpoint(store, chain_of(student, "baseline"), partition)
    distilled = load_student(ctx, student, distilled_ckpt)
    baseline = load_student(ctx, student, baseline_ckpt)
    history_len, batch_size = student.arch.seq_len, config.eval.batch_size
    # One Arrow → tensor conversion for the three models (each reads the newest columns it needs).
    tensors = frame_to_tensors(eval_frame, max(history_len, config.teacher.arch.seq_len), compact_history=True)
    distill_out = predict_tensors(distilled, tensors, batch_size=batch_size, device=ctx.device)
    baseline_out = predict_tensors(baseline, tensors, batch_size=batch_size, device=ctx.device)
    source = eval_frame["traffic_source"].to_numpy()
    teacher_logit = _teacher_eval_logits(ctx, teacher_ckpt, eval_frame, tensors)
    aux = distill_out.get("aux")
    columns = {
        TEACHER.key: calibrated_probability(teacher_logit, config.sampling.teacher, source),
        RAW.key: calibrated_probability(baseline_out["main"], student.sampling, source),
        DISTILLED.key: calibrated_probability(distill_out["main"], student.sampling, source),
        AUX.key: (calibrated_probability(aux, student.sampling, source) if aux is not None
                  else np.full(len(source), np.nan)),
    }
    predictions = eval_frame.select("sample_id", "day", "label", "p_true", "traffic_source").with_columns(
        **{key: pl.Series(values) for key, values in columns.items()})
    predictions_url = store.write_parquet(layout.report_path(student.name, partition, "predictions.parquet"),
                                          predictions)

    daily = day_estimate(predictions, partition.isoformat(), config.eval,
                         seed=config.eval.seed + config.calendar.day_index(partition))
    cumulative = cumulative_estimate(_previous_aggregate(ctx, student, partition), daily, config.eval)
    replicates_url = store.write_parquet(layout.report_path(student.name, partition, "replicates.parquet"),
                                         replicates_frame(daily, cumulative))

    labels = predictions["label"].to_numpy().astype(np.float64)
    champion_module = champion(distilled_ckpt.snapshot_id) if champion is not None else None
    champion_score = (_score_champion(ctx, student, champion_module, tensors, labels)
                      if champion_module is not None else None)
    del tensors  # the day's converted rows are not needed past this point
    p_true = predictions["p_true"].to_numpy() if predictions["p_true"].null_count() == 0 else None
    calibration = {key: calibration_bins(values, labels, p_true) for key, values in columns.items()
                   if np.isfinite(values).all()}
    teacher = load_teacher(ctx, teacher_ckpt)
    served = distilled.serving_module(student.sampling).eval()
    n_teacher = sum(p.numel() for p in teacher.parameters())
    n_served = sum(p.numel() for p in served.parameters())
    serving = ServingCost(
        batch_size=config.eval.serving_batch_size,
        student_us=_microseconds_per_prediction(ctx, served, eval_frame, history_len),
        teacher_us=_microseconds_per_prediction(ctx, teacher, eval_frame, config.teacher.arch.seq_len),
        latency_batch=LATENCY_BATCH, throughput_batch=THROUGHPUT_BATCH, onnx_tolerance=config.eval.onnx_tolerance,
        **_onnx_serving(ctx, student, partition, served, teacher, teacher_ckpt, eval_frame),
    )
    losses = distilled_ckpt.meta.get("losses") or {}
    snapshots = {"teacher": teacher_ckpt.snapshot_id, "distilled": distilled_ckpt.snapshot_id,
                 "baseline": baseline_ckpt.snapshot_id}
    inputs = {
        partition_ref(TEACHER_CHECKPOINT, partition): snapshots["teacher"],
        partition_ref(keys.distilled, partition): snapshots["distilled"],
        partition_ref(keys.baseline, partition): snapshots["baseline"],
    }
    previous = previous_partition(config.calendar, partition)
    if previous is not None:
        previous_report = store.read_json(layout.report_path(student.name, previous))
        inputs[partition_ref(keys.report, previous)] = previous_report["version"]
    provenance = Provenance(version=snapshot_id(f"{student.name}/report", partition, ctx.identity), inputs=inputs,
                            teacher_snapshots=[snapshots["teacher"]])
    report = TransferabilityReport(
        version=provenance.version, student=student.name, role=student.role, profile=config.profile,
        day=partition.isoformat(), eval_day=eval_day.isoformat(),
        daily=daily.scope, cumulative=cumulative.scope, calibration=calibration,
        losses=LossSummary(alpha=student.distill.alpha, task_loss=losses.get("task_loss"),
                           distill_loss=losses.get("distill_loss"), history=losses.get("history", [])),
        snapshots=snapshots,
        mlflow_runs={role: ckpt.meta.get("mlflow_run_id") for role, ckpt in
                     (("teacher", teacher_ckpt), ("distilled", distilled_ckpt), ("baseline", baseline_ckpt))},
        teacher_snapshots_in_student=list(distilled_ckpt.meta.get("teacher_snapshots", [])),
        parameters=Parameters(teacher=n_teacher, student=sum(p.numel() for p in distilled.parameters()),
                              served=n_served, served_to_teacher=n_served / n_teacher),
        serving=serving, inputs=inputs, predictions=predictions_url, replicates=replicates_url,
    )
    url = store.write_json(layout.report_path(student.name, partition), report.model_dump(mode="json"))
    return ReportResult(report=report, provenance=provenance, report_url=url, champion=champion_score)
