"""Stage: train the teacher on one training partition, recording its logits in the training forward pass.

The chain continues from the last usable snapshot (a rollback skips unhealthy or bad ones). The new
snapshot is checked for health (on the day's held-out rows, against the last good snapshot) and
registered with the verdict; the teacher_health asset check reports it and the rollback sensor acts
on it.
"""

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import polars as pl
import torch

from models.debias import calibrated_probability
from models.inference import predict_logits
from models.teacher import TeacherModel
from models.training import TrainStats, make_optimizer, train_teacher
from recdistill_dagster import layout
from recdistill_dagster.calendar import days_of_partition
from recdistill_dagster.data.schema import validate_teacher_logits
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.graph import TEACHER_CHECKPOINT, TEACHER_SAMPLES, partition_ref
from recdistill_dagster.health import HealthInputs, HealthVerdict, assess_teacher, holdout_rows
from recdistill_dagster.registry import SnapshotRecord, SnapshotRegistry, parse_snapshot_id
from recdistill_dagster.stages.chain import (
    ChainStart,
    LoadedCheckpoint,
    Provenance,
    chain_inputs,
    checkpoint_meta,
    continue_chain,
    fingerprint,
    save_checkpoint,
    snapshot_id,
    teacher_chain,
    train_schedule,
    weights_checksum,
)
from recdistill_dagster.stages.context import StageContext
from recdistill_dagster.stages.inputs import load_samples, require_files

TEACHER = teacher_chain(TEACHER_CHECKPOINT)


@dataclass
class TeacherResult:
    partition: date
    provenance: Provenance
    parent_snapshot: str | None
    phase: str
    days: list[date]
    stats: TrainStats
    checkpoint_url: str
    logit_urls: dict[str, str]
    n_logits: int
    logit_mean: float
    logit_std: float
    n_parameters: int
    health: HealthVerdict
    attempt: int
    fault: str | None = None  # the injected fault, if this materialization had one
    fault_skipped: str | None = None  # why the configured drill did not apply to this materialization
    identical_to: str | None = None  # the unusable snapshot of the day whose weights this one reproduces
    rolled_back_over: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def snapshot_id(self) -> str:
        return self.provenance.version


def build_teacher(ctx: StageContext) -> TeacherModel:
    torch.manual_seed(ctx.config.teacher.seed)
    return TeacherModel(ctx.vocab, ctx.config.teacher.arch)


def load_teacher(ctx: StageContext, checkpoint: LoadedCheckpoint) -> TeacherModel:
    """A teacher snapshot's weights in a fresh model, in eval mode on the context's device."""
    model = build_teacher(ctx)
    model.load_state_dict(checkpoint.payload["model"])
    return model.to(ctx.device).eval()


def eval_scores_path(snapshot: str) -> str:
    """Where a teacher snapshot's raw logits on its partition's evaluation day are stored."""
    _, partition, run = parse_snapshot_id(snapshot)
    return layout.teacher_eval_scores_path(partition, run)


def cached_eval_scores(ctx: StageContext, snapshot: str, eval_frame: pl.DataFrame) -> np.ndarray | None:
    """The snapshot's stored scores when they cover exactly `eval_frame`'s rows, in order, all finite."""
    path = eval_scores_path(snapshot)
    if not ctx.store.exists(path):
        return None
    cached = ctx.store.read_parquet(path)
    if cached["sample_id"].equals(eval_frame["sample_id"]) and cached["logit"].is_finite().all():
        scores: np.ndarray = cached["logit"].to_numpy(writable=True)
        return scores
    return None


@dataclass(frozen=True)
class FaultDrill:
    """What the configured drill did to this materialization: applied, skipped (and why), or nothing."""

    applied: str | None = None
    skipped: str | None = None


def _inject_fault(ctx: StageContext, partition: date, days: list[date], attempt: int, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer) -> FaultDrill:
    """Drill: make this day's teacher training go bad (config `faults.teacher`) on the attempts it names."""
    fault = ctx.config.faults.teacher
    if fault is None or fault.day not in days:
        return FaultDrill()
    if attempt not in fault.attempts:
        return FaultDrill(skipped=(
            f"fault drill faults.teacher ({fault.mode} on {fault.day}) skipped: this is attempt {attempt} of partition "
            f"{partition} (the registry holds {attempt - 1} earlier snapshot(s) of it) and the drill applies to "
            f"attempt(s) {', '.join(map(str, fault.attempts))}; to drill this materialization set "
            f"faults.teacher.attempts: [{attempt}]"))
    if fault.mode == "divergence":
        for group in optimizer.param_groups:
            group["lr"] *= fault.lr_multiplier
        return FaultDrill(applied=f"divergence (learning rate ×{fault.lr_multiplier:g}, attempt {attempt})")
    with torch.no_grad():  # a corrupted update: the output bias becomes NaN, so every logit is NaN
        list(model.parameters())[-1].fill_(math.nan)
    return FaultDrill(applied=f"nan (output bias set to NaN, attempt {attempt})")


def _identical(partition: date, checksum: str, twin: SnapshotRecord) -> str:
    return (f"weights identical to {twin.status} snapshot {twin.snapshot_id} (sha256 {checksum[:12]}): retraining "
            f"{partition} from the same parent on the same data, configuration and code reproduced it, so the cause "
            "was not fixed; fix it (the day's data, the configuration or the code), then rebuild the chain from "
            f"{partition} (python -m recdistill_dagster backfill {partition} <last day>)")


def _assess_health(ctx: StageContext, day: date, model: TeacherModel, start: ChainStart,
                   recorded: np.ndarray) -> HealthVerdict:
    """Score the day's held-out rows with this and the last good snapshot, then apply the health rules."""
    config = ctx.config
    eval_frame = load_samples(ctx.store, layout.samples_path("eval", day), "eval_samples", day)
    trained_ids = ctx.store.scan_parquet(layout.samples_path("teacher", day)).select("sample_id").collect()
    trained = eval_frame.select("sample_id").with_row_index("row").join(
        trained_ids, on="sample_id", how="semi")["row"].to_numpy()
    labels = eval_frame["label"].to_numpy().astype(np.float64)
    traffic_sources = eval_frame["traffic_source"].to_numpy()
    held_out = holdout_rows(labels, traffic_sources, trained, config.sampling.teacher,
                            config.health.min_holdout_positives)
    holdout = held_out.rows
    seq_len, batch_size = config.teacher.arch.seq_len, config.eval.batch_size
    scores = predict_logits(model, eval_frame, history_len=seq_len, batch_size=batch_size, device=ctx.device)["logit"]
    calibrated = calibrated_probability(scores, config.sampling.teacher, traffic_sources)
    reference_scores = None
    if start.parent is not None:
        # The last good snapshot's report scored this very day already (its evaluation day): reuse those
        # stored scores when they cover these rows; otherwise score the held-out rows.
        cached = cached_eval_scores(ctx, start.parent.snapshot_id, eval_frame)
        if cached is not None:
            reference_scores = cached[holdout]
        else:
            reference = load_teacher(ctx, start.parent)
            reference_scores = predict_logits(reference, eval_frame.filter(pl.Series(holdout)), history_len=seq_len,
                                              batch_size=batch_size, device=ctx.device)["logit"]
    inputs = HealthInputs(
        recorded_logits=recorded,
        holdout_labels=labels[holdout],
        holdout_scores=scores[holdout],
        holdout_weights=held_out.weights,
        reference_holdout_scores=reference_scores,
        mean_predicted_rate=float(np.mean(calibrated)) if calibrated.size else math.nan,
        observed_rate=float(labels.mean()) if labels.size else math.nan,
        reference_snapshot=start.parent_snapshot,
        holdout_sources=held_out.sources,
        holdout_whole_day=held_out.whole_day,
    )
    return assess_teacher(inputs, config.health)


@dataclass
class TeacherPlan:
    """Everything decided before a teacher partition trains: where the chain continues from (the model and
    optimizer hold that state), the attempt, the fault drill, the snapshot id and the schedule."""

    partition: date
    days: list[date]
    attempt: int
    start: ChainStart
    model: TeacherModel
    optimizer: torch.optim.Optimizer
    arch: dict[str, Any]
    snapshot: str
    epochs: int
    batch_size: int
    seed: int
    drill: FaultDrill


def plan_teacher_partition(ctx: StageContext, partition: date) -> TeacherPlan:
    """Check the inputs, continue the chain from the last usable snapshot, apply a configured fault drill."""
    config = ctx.config
    days = days_of_partition(config.calendar, partition)
    fix = "materialize (or backfill) those data partitions first"
    require_files(ctx.store, {d: layout.samples_path("teacher", d) for d in days}, "teacher_samples",
                  f"teacher_checkpoint {partition}", fix)
    require_files(ctx.store, {days[-1]: layout.samples_path("eval", days[-1])}, "eval_samples (held-out rows)",
                  f"teacher_checkpoint {partition}", fix)
    registry = SnapshotRegistry(ctx.store)
    attempt = registry.attempts(partition) + 1
    model = build_teacher(ctx).to(ctx.device)
    optimizer = make_optimizer(model, config.teacher.optim)
    arch = config.teacher.arch.model_dump(mode="json")
    start = continue_chain(ctx, TEACHER, partition, model, optimizer, arch, usable=registry.is_usable)
    drill = _inject_fault(ctx, partition, days, attempt, model, optimizer)
    schedule = train_schedule(ctx, config.teacher.optim, partition)
    return TeacherPlan(partition=partition, days=days, attempt=attempt, start=start, model=model,
                       optimizer=optimizer, arch=arch, snapshot=snapshot_id(TEACHER.role, partition, ctx.identity),
                       epochs=schedule.epochs, batch_size=schedule.batch_size,
                       seed=config.teacher.seed + config.calendar.day_index(partition), drill=drill)


def train_teacher_partition(ctx: StageContext, partition: date) -> TeacherResult:
    """Train one partition (the batch window or one streaming day) in this process; write checkpoint and logits."""
    plan = plan_teacher_partition(ctx, partition)
    config = ctx.config
    loaders = [
        (d, lambda d=d: load_samples(ctx.store, layout.samples_path("teacher", d), "teacher_samples", d))
        for d in plan.days
    ]
    stats, logits_by_day = train_teacher(
        plan.model, plan.optimizer, loaders,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        record_epoch=config.teacher.record_epoch,
        snapshot_id=plan.snapshot,
        start_step=plan.start.start_step,
        seed=plan.seed,
        device=ctx.device,
        grad_clip=config.teacher.optim.grad_clip,
        history_len=config.teacher.arch.seq_len,
        log_every=config.runtime.log_every_steps,
        progress=ctx.progress,
    )
    return finish_teacher_partition(ctx, plan, stats, logits_by_day)


def finish_teacher_partition(ctx: StageContext, plan: TeacherPlan, stats: TrainStats,
                             logits_by_day: dict[date, pl.DataFrame], **extra_meta: Any) -> TeacherResult:
    """After training (here or under torchrun): logits, health verdict, checkpoint and registry record."""
    config, partition, days, start, model = ctx.config, plan.partition, plan.days, plan.start, plan.model
    fault = plan.drill.applied
    if fault and config.faults.teacher and config.faults.teacher.mode == "divergence":
        for group in plan.optimizer.param_groups:  # the saved optimizer state keeps the configured rate
            group["lr"] /= config.faults.teacher.lr_multiplier
    logit_urls: dict[str, str] = {}
    for d in days:
        if d not in logits_by_day:
            raise PipelineStepError(f"teacher_logits {partition}: training recorded no logits for day {d}")
        frame = logits_by_day[d]
        validate_teacher_logits(frame, partition=f"{partition} (day {d})", allow_nonfinite=True)
        logit_urls[d.isoformat()] = ctx.store.write_parquet(layout.teacher_logits_path(partition, d), frame)
    logits = np.concatenate([logits_by_day[d]["teacher_logit"].to_numpy() for d in days])
    health = _assess_health(ctx, days[-1], model, start, logits)
    registry = SnapshotRegistry(ctx.store)
    checksum = weights_checksum(model)
    twin = registry.unusable_twin(partition, checksum)
    if twin is not None:  # the same model as a snapshot already found unusable: it is no repair
        health = HealthVerdict(passed=False, failures=[*health.failures, _identical(partition, checksum, twin)],
                               metrics=health.metrics, notes=health.notes)
    snapshot = plan.snapshot
    provenance = Provenance(
        version=snapshot,
        inputs=chain_inputs(TEACHER, start),
        teacher_snapshots=[snapshot, *([start.parent_snapshot] if start.parent_snapshot else [])],
    )
    meta = checkpoint_meta(ctx, TEACHER, partition, provenance, start, days, stats, plan.arch,
                           fingerprint(config.teacher.model_dump(mode="json")),
                           upstream_samples=[partition_ref(TEACHER_SAMPLES, d) for d in days],
                           rolled_back_over=start.rolled_back_over, attempt=plan.attempt, **extra_meta)
    checkpoint_url = save_checkpoint(ctx.store, TEACHER, partition, model, plan.optimizer, meta)
    now = datetime.now(UTC)
    registry.register_new(SnapshotRecord(
        snapshot_id=snapshot, partition=partition, attempt=plan.attempt,
        status="bad" if twin else "good" if health.passed else "unhealthy",
        dagster_run_id=ctx.identity.run_id, mlflow_run_id=ctx.identity.tracking_run_id,
        parent_snapshot=start.parent_snapshot, created_at=now, checkpoint_url=checkpoint_url,
        health=_json_safe(health.metrics), reason=None if health.passed else health.description,
        weights_sha256=checksum, identical_to=twin.snapshot_id if twin else None,
        detected_at=now if twin else None, detected_by="teacher step (weights checksum)" if twin else None,
    ))
    finite = logits[np.isfinite(logits)]
    return TeacherResult(
        partition=partition, provenance=provenance, parent_snapshot=start.parent_snapshot,
        phase=start.phase, days=days, stats=stats, checkpoint_url=checkpoint_url,
        logit_urls=logit_urls, n_logits=int(logits.size),
        logit_mean=float(finite.mean()) if finite.size else math.nan,
        logit_std=float(finite.std()) if finite.size else math.nan,
        n_parameters=sum(p.numel() for p in model.parameters()), health=health, attempt=plan.attempt,
        fault=fault, fault_skipped=plan.drill.skipped, identical_to=twin.snapshot_id if twin else None,
        rolled_back_over=start.rolled_back_over, meta=meta,
    )


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf become None so the registry's JSON stays standard."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
