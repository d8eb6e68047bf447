"""The work of each training partition, without Dagster.

Asset functions call these: they read inputs from the artifact store, call the pure model code
in `models/`, write outputs atomically and return a result the asset turns into metadata. Keeping
this layer free of Dagster makes every step testable on its own.
"""

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from models.checkpoint import checkpoint_bytes, load_checkpoint_bytes, restore
from models.debias import exact_calibrated_logit
from models.device import configure_threads, resolve_device
from models.features import frame_to_tensors
from models.metrics import auc, logloss, paired_bootstrap_gains
from models.student import StudentModel
from models.teacher import TeacherModel
from models.training import (
    TrainStats,
    make_optimizer,
    predict_logits,
    train_student,
    train_teacher,
)
from recdistill_dagster import layout
from recdistill_dagster.config import OptimConfig, PipelineConfig, SamplingPolicy
from recdistill_dagster.data.join import drop_logit_fraction, join_stats, join_student_dataset
from recdistill_dagster.data.sampling import sample_stream
from recdistill_dagster.data.schema import (
    SAMPLE_SCHEMA,
    STUDENT_DATASET_SCHEMA,
    FeatureVocab,
    check_schema,
    validate_samples,
    validate_teacher_logits,
)
from recdistill_dagster.data.source import DaySource
from recdistill_dagster.health import HealthInputs, HealthVerdict, assess_teacher, holdout_rows
from recdistill_dagster.registry import SnapshotRecord, SnapshotRegistry, parse_snapshot_id
from resources.storage import ArtifactNotFoundError, ArtifactStore

StudentVariant = Literal["student", "student_baseline"]
Progress = Callable[[dict[str, Any]], None]


class PipelineStepError(RuntimeError):
    """A partition cannot be produced; the message says which partition and why."""


# --------------------------------------------------------------------------- calendar helpers


def is_batch_partition(config: PipelineConfig, partition: date) -> bool:
    return partition == config.calendar.batch_end


def days_of_partition(config: PipelineConfig, partition: date) -> list[date]:
    """The data days a training partition trains on: the batch window or the single day."""
    calendar = config.calendar
    if partition < calendar.batch_end or partition > calendar.last_training_day:
        raise PipelineStepError(
            f"partition {partition} is outside the training calendar "
            f"{calendar.batch_end}..{calendar.last_training_day} of profile {config.profile!r}"
        )
    return calendar.batch_window() if is_batch_partition(config, partition) else [partition]


def previous_partition(config: PipelineConfig, partition: date) -> date | None:
    return None if is_batch_partition(config, partition) else partition - timedelta(days=1)


def snapshot_id(role: str, partition: date, run_id: str) -> str:
    """Unique per materialization: the role, the day and the Dagster run that produced it."""
    return f"{role}@{partition.isoformat()}#{run_id[:8]}"


def config_fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- sample streams


@dataclass
class StreamsResult:
    day: date
    rows: dict[str, int]
    positives: dict[str, int]
    urls: dict[str, str]
    base_rate: float
    bayes_auc: float | None


def materialize_sample_streams(
    config: PipelineConfig, source: DaySource, store: ArtifactStore, day: date
) -> StreamsResult:
    """The day's unsampled evaluation stream and the teacher's and student's sampled streams."""
    if day in config.faults.missing_data_days:
        raise PipelineStepError(
            f"data partition {day}: the upstream impressions for {day} have not arrived (outage drill: "
            "faults.missing_data_days); backfill this day once the data is there"
        )
    impressions = source.impressions(day)
    validate_samples(impressions, table="impressions", partition=day.isoformat())
    if impressions.height == 0:
        raise PipelineStepError(f"data partition {day}: the source has no impressions for this day")
    streams = {
        "eval": impressions,
        "teacher": sample_stream(impressions, config.sampling.teacher, seed=config.sampling.seed),
        "student": sample_stream(impressions, config.sampling.student, seed=config.sampling.seed),
    }
    urls, rows, positives = {}, {}, {}
    for stream, frame in streams.items():
        validate_samples(frame, table=f"{stream}_samples", partition=day.isoformat())
        urls[stream] = store.write_parquet(layout.samples_path(stream, day), frame)  # type: ignore[arg-type]
        rows[stream] = frame.height
        positives[stream] = int(frame["label"].sum())
    p_true = impressions["p_true"]
    bayes = None
    if p_true.null_count() == 0:
        bayes = auc(p_true.to_numpy(), impressions["label"].to_numpy())
    return StreamsResult(
        day=day, rows=rows, positives=positives, urls=urls,
        base_rate=positives["eval"] / rows["eval"], bayes_auc=bayes,
    )


def _require_samples(store: ArtifactStore, stream: str, days: list[date], partition: date) -> None:
    missing = [d.isoformat() for d in days if not store.exists(layout.samples_path(stream, d))]  # type: ignore[arg-type]
    if missing:
        raise PipelineStepError(
            f"partition {partition}: {stream}_samples missing for day(s) {', '.join(missing)}; "
            "materialize (or backfill) those data partitions first"
        )


def _load_validated(store: ArtifactStore, relative: str, table: str, partition: date) -> pl.DataFrame:
    frame = store.read_parquet(relative, what=f"{table} {partition}")
    # The contract's columns only (a student dataset carries teacher columns too); missing ones are
    # left for the validator to name.
    present = [column for column in SAMPLE_SCHEMA if column in frame.columns]
    validate_samples(frame.select(present), table=table, partition=partition.isoformat())
    return frame


# --------------------------------------------------------------------------- checkpoints


@dataclass
class LoadedCheckpoint:
    payload: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        return self.payload["meta"]


def load_checkpoint(store: ArtifactStore, role: str, partition: date) -> LoadedCheckpoint:
    relative = layout.checkpoint_path(role, partition)  # type: ignore[arg-type]
    try:
        data = store.read_bytes(relative, what=f"{role}_checkpoint {partition}")
    except ArtifactNotFoundError as exc:
        raise PipelineStepError(
            f"{role}_checkpoint partition {partition} has not been materialized ({exc}); "
            "the daily chain cannot skip a day: materialize or backfill it first"
        ) from None
    try:
        return LoadedCheckpoint(load_checkpoint_bytes(data))
    except Exception as exc:
        raise PipelineStepError(
            f"{role}_checkpoint partition {partition} at {store.url(relative)} is unreadable: {exc}"
        ) from exc


def _check_same_arch(previous: LoadedCheckpoint, arch: dict[str, Any], role: str, partition: date) -> None:
    if previous.meta.get("arch") != arch:
        raise PipelineStepError(
            f"{role}_checkpoint {partition}: the previous day's checkpoint was trained with architecture "
            f"{previous.meta.get('arch')}, the configuration now says {arch}; re-materialize the chain "
            "from its batch partition"
        )


def build_teacher(config: PipelineConfig, vocab: FeatureVocab) -> TeacherModel:
    torch.manual_seed(config.teacher.seed)
    return TeacherModel(vocab, config.teacher.arch)


def build_student(config: PipelineConfig, vocab: FeatureVocab) -> StudentModel:
    torch.manual_seed(config.student.seed)
    return StudentModel(vocab, config.student.arch)


def _device(config: PipelineConfig) -> torch.device:
    configure_threads(config.runtime.threads)
    return resolve_device(config.runtime.device)


@dataclass
class ChainStart:
    """Where a self-dependent chain continues from: the previous day's checkpoint, if any."""

    previous: date | None
    parent_snapshot: str | None = None
    start_step: int = 0
    samples_before: int = 0
    parent: LoadedCheckpoint | None = None
    rolled_back_over: list[str] = field(default_factory=list)  # unusable snapshots skipped


def _continue_chain(config: PipelineConfig, store: ArtifactStore, role: str, partition: date,
                    model: torch.nn.Module, optimizer: torch.optim.Optimizer, arch: dict[str, Any],
                    usable: Callable[[str], bool] | None = None) -> ChainStart:
    """Restore model and optimizer from yesterday's checkpoint (none for the batch partition).

    With `usable` (the teacher's snapshot registry), a chain whose previous snapshot is unhealthy
    or bad rolls back: it continues from the last usable snapshot before it.
    """
    previous = previous_partition(config, partition)
    skipped: list[str] = []
    while previous is not None:
        parent = load_checkpoint(store, role, previous)
        if usable is None or usable(parent.meta["snapshot_id"]):
            break
        skipped.append(parent.meta["snapshot_id"])
        previous = previous_partition(config, previous)
    else:
        if skipped:
            raise PipelineStepError(
                f"{role}_checkpoint {partition}: no usable snapshot to continue from (unusable: "
                f"{', '.join(skipped)}); re-materialize the batch partition {config.calendar.batch_end}"
            )
        return ChainStart(previous=None)
    _check_same_arch(parent, arch, role, partition)
    restore(model, optimizer, parent.payload)
    return ChainStart(previous=previous, parent_snapshot=parent.meta["snapshot_id"],
                      start_step=int(parent.meta["global_step"]),
                      samples_before=int(parent.meta["samples_seen_total"]), parent=parent,
                      rolled_back_over=skipped)


def _phase_schedule(optim: OptimConfig, batch: bool) -> dict[str, int]:
    """The batch phase trains to convergence (more epochs, optionally bigger batches)."""
    if batch:
        return {"epochs": optim.batch_phase_epochs, "batch_size": optim.batch_phase_batch_size or optim.batch_size}
    return {"epochs": optim.streaming_epochs, "batch_size": optim.batch_size}


def _checkpoint_meta(config: PipelineConfig, role: str, partition: date, snapshot: str, chain: ChainStart,
                     days: list[date], stats: TrainStats, identity: "RunIdentity", arch: dict[str, Any],
                     section: dict[str, Any], upstream_table: str, **extra: Any) -> dict[str, Any]:
    """Lineage and provenance saved inside every checkpoint (JSON-able, weights_only-safe)."""
    return {
        "role": role,
        "partition": partition.isoformat(),
        "phase": "batch" if chain.previous is None else "streaming",
        "snapshot_id": snapshot,
        "parent_snapshot": chain.parent_snapshot,
        "trained_days": [d.isoformat() for d in days],
        "upstream": {upstream_table: [d.isoformat() for d in days],
                     f"{role}_checkpoint": chain.previous.isoformat() if chain.previous else None},
        "global_step": chain.start_step + stats.steps,
        "samples_seen_total": chain.samples_before + stats.samples,
        "dagster_run_id": identity.dagster_run_id,
        "mlflow_run_id": identity.mlflow_run_id,
        "arch": arch,
        "profile": config.profile,
        "config_fingerprint": config_fingerprint(section),
        "created_at": datetime.now(UTC).isoformat(),
        **extra,
    }


# --------------------------------------------------------------------------- teacher


@dataclass
class RunIdentity:
    dagster_run_id: str
    mlflow_run_id: str


@dataclass
class TeacherStepResult:
    partition: date
    snapshot_id: str
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
    rolled_back_over: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _inject_teacher_fault(config: PipelineConfig, partition: date, days: list[date], attempt: int,
                          model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Drill: make this day's teacher training go bad (config `faults.teacher`)."""
    fault = config.faults.teacher
    if fault is None or fault.day not in days or attempt > fault.attempts:
        return None
    if fault.mode == "divergence":
        for group in optimizer.param_groups:
            group["lr"] *= fault.lr_multiplier
        return f"divergence (learning rate ×{fault.lr_multiplier:g}, attempt {attempt})"
    with torch.no_grad():  # a corrupted update: the output bias becomes NaN, so every logit is NaN
        list(model.parameters())[-1].fill_(math.nan)
    return f"nan (output bias set to NaN, attempt {attempt})"


def _teacher_health(config: PipelineConfig, store: ArtifactStore, vocab: FeatureVocab, partition: date,
                    day: date, model: TeacherModel, chain: ChainStart, recorded: np.ndarray,
                    device: torch.device) -> HealthVerdict:
    """Gather the health check's inputs: the day's held-out rows scored by this and the last good snapshot."""
    eval_frame = _load_validated(store, layout.samples_path("eval", day), "eval_samples", day)
    trained_ids = store.scan_parquet(layout.samples_path("teacher", day)).select("sample_id")
    trained = eval_frame.select("sample_id").with_row_index("row").join(
        trained_ids.collect(), on="sample_id", how="semi"
    )["row"].to_numpy()
    labels = eval_frame["label"].to_numpy().astype(np.float64)
    traffic_sources = eval_frame["traffic_source"].to_numpy()
    held_out = holdout_rows(labels, traffic_sources, trained, config.sampling.teacher,
                            config.health.min_holdout_positives)
    holdout = held_out.rows
    seq_len, batch_size = config.teacher.arch.seq_len, config.eval.batch_size
    scores = predict_logits(model, eval_frame, history_len=seq_len, batch_size=batch_size, device=device)["logit"]
    calibrated = _calibrated(scores, config.sampling.teacher, traffic_sources)
    reference_scores = None
    if chain.parent is not None:
        reference = build_teacher(config, vocab).to(device)
        restore(reference, None, chain.parent.payload)
        holdout_frame = eval_frame.filter(pl.Series(holdout))
        reference_scores = predict_logits(reference, holdout_frame, history_len=seq_len, batch_size=batch_size,
                                          device=device)["logit"]
    inputs = HealthInputs(
        recorded_logits=recorded,
        holdout_labels=labels[holdout],
        holdout_scores=scores[holdout],
        holdout_weights=held_out.weights,
        reference_holdout_scores=reference_scores,
        mean_predicted_rate=float(np.mean(calibrated)) if calibrated.size else math.nan,
        observed_rate=float(labels.mean()) if labels.size else math.nan,
        reference_snapshot=chain.parent_snapshot,
        holdout_sources=held_out.sources,
        holdout_whole_day=held_out.whole_day,
    )
    return assess_teacher(inputs, config.health)


def train_teacher_partition(
    config: PipelineConfig,
    store: ArtifactStore,
    vocab: FeatureVocab,
    partition: date,
    identity: RunIdentity,
    progress: Progress | None = None,
) -> TeacherStepResult:
    """Train the teacher for one partition, recording its logits in the training forward pass.

    The chain continues from the last usable snapshot in the registry (a rollback skips unhealthy
    or bad ones). The new snapshot is checked for health and registered with the verdict.
    """
    days = days_of_partition(config, partition)
    _require_samples(store, "teacher", days, partition)
    _require_samples(store, "eval", days[-1:], partition)  # the health check's held-out rows
    registry = SnapshotRegistry(store)
    attempt = registry.attempts(partition) + 1
    device = _device(config)
    model = build_teacher(config, vocab).to(device)
    optim_cfg = config.teacher.optim
    optimizer = make_optimizer(model, optim_cfg)
    arch = config.teacher.arch.model_dump(mode="json")
    chain = _continue_chain(config, store, "teacher", partition, model, optimizer, arch, usable=registry.is_usable)
    fault = _inject_teacher_fault(config, partition, days, attempt, model, optimizer)
    batch = is_batch_partition(config, partition)
    snapshot = snapshot_id("teacher", partition, identity.dagster_run_id)
    loaders = [
        (d, lambda d=d: _load_validated(store, layout.samples_path("teacher", d), "teacher_samples", d))
        for d in days
    ]
    stats, logits_by_day = train_teacher(
        model, optimizer, loaders,
        **_phase_schedule(optim_cfg, batch),
        record_epoch=config.teacher.record_epoch,
        snapshot_id=snapshot,
        start_step=chain.start_step,
        seed=config.teacher.seed + config.calendar.day_index(partition),
        device=device,
        grad_clip=optim_cfg.grad_clip,
        history_len=config.teacher.arch.seq_len,
        log_every=config.runtime.log_every_steps,
        progress=progress,
    )
    if fault and config.faults.teacher and config.faults.teacher.mode == "divergence":
        for group in optimizer.param_groups:  # the saved optimizer state keeps the configured rate
            group["lr"] /= config.faults.teacher.lr_multiplier
    logit_urls: dict[str, str] = {}
    all_logits = []
    for d in days:
        frame = logits_by_day[d]
        validate_teacher_logits(frame, partition=f"{partition} (day {d})", allow_nonfinite=True)
        logit_urls[d.isoformat()] = store.write_parquet(layout.teacher_logits_path(partition, d), frame)
        all_logits.append(frame["teacher_logit"].to_numpy())
    logits = np.concatenate(all_logits) if all_logits else np.zeros(0, dtype=np.float32)
    health = _teacher_health(config, store, vocab, partition, days[-1], model, chain, logits, device)
    meta = _checkpoint_meta(config, "teacher", partition, snapshot, chain, days, stats, identity, arch,
                            config.teacher.model_dump(mode="json"), "teacher_samples",
                            rolled_back_over=chain.rolled_back_over, attempt=attempt)
    checkpoint_url = store.write_bytes(
        layout.checkpoint_path("teacher", partition), checkpoint_bytes(model, optimizer, meta)
    )
    registry.register(SnapshotRecord(
        snapshot_id=snapshot, partition=partition, attempt=attempt,
        status="good" if health.passed else "unhealthy",
        dagster_run_id=identity.dagster_run_id, mlflow_run_id=identity.mlflow_run_id,
        parent_snapshot=chain.parent_snapshot, created_at=datetime.now(UTC), checkpoint_url=checkpoint_url,
        health=_json_safe(health.metrics), reason=None if health.passed else health.description,
    ))
    finite = logits[np.isfinite(logits)]
    return TeacherStepResult(
        partition=partition, snapshot_id=snapshot, parent_snapshot=chain.parent_snapshot,
        phase=meta["phase"], days=days, stats=stats, checkpoint_url=checkpoint_url,
        logit_urls=logit_urls, n_logits=int(logits.size),
        logit_mean=float(finite.mean()) if finite.size else math.nan,
        logit_std=float(finite.std()) if finite.size else math.nan,
        n_parameters=sum(p.numel() for p in model.parameters()), health=health, attempt=attempt,
        fault=fault, rolled_back_over=chain.rolled_back_over, meta=meta,
    )


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf become None so the registry's JSON stays standard."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


# --------------------------------------------------------------------------- student dataset


def _require_usable_teacher(store: ArtifactStore, partition: date, consumer: str) -> str:
    """The partition's current teacher snapshot, refusing one the registry marks unhealthy or bad."""
    teacher = load_checkpoint(store, "teacher", partition)
    snapshot = teacher.meta["snapshot_id"]
    record = SnapshotRegistry(store).get(snapshot)
    if record is not None and record.status != "good":
        raise PipelineStepError(
            f"{consumer} {partition}: teacher snapshot {snapshot} is {record.status} ({record.reason}); "
            "its logits must not reach the student. The rollback sensor retrains the teacher from the "
            "last good snapshot and re-materializes this partition"
        )
    return snapshot


@dataclass
class CoverageVerdict:
    passed: bool
    blocking: bool  # below the hard floor: the student must not train on this partition
    message: str


def coverage_verdict(config: PipelineConfig, coverage: float) -> CoverageVerdict:
    warn, floor = config.join.coverage_warn, config.join.coverage_floor
    if coverage >= warn:
        return CoverageVerdict(True, False, f"join coverage {coverage:.3f} ≥ {warn}")
    if coverage >= floor:
        return CoverageVerdict(False, False, f"join coverage {coverage:.3f} below the warning level {warn}; "
                               "rows without a teacher logit train on the task loss only")
    return CoverageVerdict(False, True, f"join coverage {coverage:.3f} below the hard floor {floor}: "
                           "the student will not train on this partition")


@dataclass
class StudentDatasetResult:
    partition: date
    days: list[date]
    urls: dict[str, str]
    stats: dict[str, Any]
    teacher_snapshots: list[str]


def build_student_dataset_partition(
    config: PipelineConfig, store: ArtifactStore, partition: date
) -> StudentDatasetResult:
    """Join the student's sampled rows with the recorded teacher logits (left join, lazily)."""
    days = days_of_partition(config, partition)
    _require_samples(store, "student", days, partition)
    _require_usable_teacher(store, partition, "student_dataset")
    urls: dict[str, str] = {}
    for d in days:
        logits_rel = layout.teacher_logits_path(partition, d)
        if not store.exists(logits_rel):
            raise PipelineStepError(
                f"student_dataset {partition}: teacher_logits for day {d} are missing "
                f"({store.url(logits_rel)}); materialize teacher_checkpoint/teacher_logits {partition} first"
            )
        samples = store.scan_parquet(layout.samples_path("student", d), what=f"student_samples {d}")
        check_schema(samples, SAMPLE_SCHEMA, table="student_samples", partition=d.isoformat())
        logits = store.scan_parquet(logits_rel, what=f"teacher_logits {d}")
        faults = config.faults
        if faults.drops_logits_on(d):  # drill: records lost between teacher and join
            logits = drop_logit_fraction(logits.collect(), faults.drop_logit_fraction,
                                         seed=faults.seed + config.calendar.day_index(d)).lazy()
        joined = join_student_dataset(samples, logits)
        urls[d.isoformat()] = store.sink_parquet(layout.student_dataset_path(partition, d), joined)
    dataset = pl.concat(
        [store.scan_parquet(layout.student_dataset_path(partition, d)) for d in days], how="vertical"
    )
    check_schema(dataset, STUDENT_DATASET_SCHEMA, table="student_dataset", partition=partition.isoformat())
    stats = join_stats(dataset)
    snapshots = (
        dataset.select(pl.col("teacher_snapshot").drop_nulls().unique()).collect()["teacher_snapshot"].to_list()
    )
    return StudentDatasetResult(partition=partition, days=days, urls=urls, stats=stats,
                                teacher_snapshots=sorted(snapshots))


# --------------------------------------------------------------------------- students


@dataclass
class StudentStepResult:
    partition: date
    variant: StudentVariant
    snapshot_id: str
    parent_snapshot: str | None
    phase: str
    days: list[date]
    stats: TrainStats
    checkpoint_url: str
    teacher_snapshots: list[str]
    distilled: bool
    n_parameters: int
    model: StudentModel
    meta: dict[str, Any] = field(default_factory=dict)


def train_student_partition(
    config: PipelineConfig,
    store: ArtifactStore,
    vocab: FeatureVocab,
    partition: date,
    variant: StudentVariant,
    identity: RunIdentity,
    progress: Progress | None = None,
) -> StudentStepResult:
    """Train the distilled student (on the joined dataset) or the baseline (on raw samples)."""
    days = days_of_partition(config, partition)
    batch = is_batch_partition(config, partition)
    distill_cfg = config.student.distill
    distilled = variant == "student" and (distill_cfg.in_batch_phase if batch else distill_cfg.in_streaming)
    if variant == "student":
        relatives = [layout.student_dataset_path(partition, d) for d in days]
        table = "student_dataset"
        missing = [d.isoformat() for d, rel in zip(days, relatives, strict=True) if not store.exists(rel)]
        if missing:
            raise PipelineStepError(
                f"student_checkpoint {partition}: student_dataset missing for day(s) {', '.join(missing)}; "
                f"materialize student_dataset {partition} first"
            )
    else:
        _require_samples(store, "student", days, partition)
        relatives = [layout.samples_path("student", d) for d in days]
        table = "student_samples"
    teacher_snapshots: list[str] = []
    if variant == "student":
        snapshots = pl.concat([store.scan_parquet(rel) for rel in relatives]).select(
            pl.col("teacher_snapshot").drop_nulls().unique()
        )
        teacher_snapshots = sorted(snapshots.collect()["teacher_snapshot"].to_list())
        registry = SnapshotRegistry(store)
        unusable = [s for s in teacher_snapshots if not registry.is_usable(s)]
        if unusable:
            raise PipelineStepError(
                f"student_checkpoint {partition}: student_dataset carries logits of unusable teacher "
                f"snapshot(s) {', '.join(unusable)}; re-materialize student_dataset {partition} after the rollback"
            )
    device = _device(config)
    model = build_student(config, vocab).to(device)
    optim_cfg = config.student.optim
    optimizer = make_optimizer(model, optim_cfg)
    arch = config.student.arch.model_dump(mode="json")
    chain = _continue_chain(config, store, variant, partition, model, optimizer, arch)
    loaders = [
        (d, lambda rel=rel, d=d: _load_validated(store, rel, table, d))
        for d, rel in zip(days, relatives, strict=True)
    ]
    stats = train_student(
        model, optimizer, loaders,
        **_phase_schedule(optim_cfg, batch),
        distill=distill_cfg if distilled else None,
        towers=config.student.arch.towers,
        start_step=chain.start_step,
        seed=config.student.seed + config.calendar.day_index(partition),
        device=device,
        grad_clip=optim_cfg.grad_clip,
        history_len=config.student.arch.seq_len,
        log_every=config.runtime.log_every_steps,
        progress=progress,
    )
    snapshot = snapshot_id(variant, partition, identity.dagster_run_id)
    meta = _checkpoint_meta(config, variant, partition, snapshot, chain, days, stats, identity, arch,
                            config.student.model_dump(mode="json"), table, distilled=distilled,
                            teacher_snapshots=teacher_snapshots)
    checkpoint_url = store.write_bytes(
        layout.checkpoint_path(variant, partition), checkpoint_bytes(model, optimizer, meta)
    )
    return StudentStepResult(
        partition=partition, variant=variant, snapshot_id=snapshot, parent_snapshot=chain.parent_snapshot,
        phase=meta["phase"], days=days, stats=stats, checkpoint_url=checkpoint_url,
        teacher_snapshots=teacher_snapshots, distilled=distilled,
        n_parameters=sum(p.numel() for p in model.parameters()), model=model, meta=meta,
    )


# --------------------------------------------------------------------------- evaluation


PREDICTION_COLUMNS = ("teacher", "student_raw", "student_distill", "student_aux")


def _calibrated(logits: np.ndarray, policy: SamplingPolicy, traffic_source: np.ndarray) -> np.ndarray:
    """A model's logits (in its training sampling space) → probabilities on the unsampled scale."""
    p_x = np.asarray(policy.positive_keep_by_source, dtype=np.float64)[traffic_source]
    z = exact_calibrated_logit(
        torch.as_tensor(logits, dtype=torch.float64),
        torch.full((len(logits),), policy.r_s, dtype=torch.float64),
        torch.as_tensor(p_x),
    )
    return torch.sigmoid(z).numpy()


@dataclass
class ReportResult:
    report: dict[str, Any]
    predictions_url: str
    report_url: str


def _summarize(config: PipelineConfig, predictions: pl.DataFrame, seed: int) -> dict[str, Any]:
    labels = predictions["label"].to_numpy().astype(np.float64)
    scores = {name: predictions[name].to_numpy() for name in PREDICTION_COLUMNS}
    estimate = paired_bootstrap_gains(
        labels, scores,
        teacher="teacher", student_raw="student_raw", student_distill="student_distill",
        n_boot=config.eval.bootstrap_samples, seed=seed, level=config.eval.ci_level,
    )
    p_true = predictions["p_true"]
    has_truth = p_true.null_count() == 0 and predictions.height > 0
    summary: dict[str, Any] = {
        "n_eval": predictions.height,
        "positives": int(labels.sum()),
        "observed_rate": float(labels.mean()) if labels.size else None,
        "teacher_auc": auc(scores["teacher"], labels),
        "student_raw_auc": auc(scores["student_raw"], labels),
        "student_distill_auc": auc(scores["student_distill"], labels),
        "student_aux_auc": auc(scores["student_aux"], labels) if np.isfinite(scores["student_aux"]).all() else None,
        "bayes_auc": auc(p_true.to_numpy(), labels) if has_truth else None,
        "logloss": {name: logloss(scores[name], labels) for name in PREDICTION_COLUMNS
                    if np.isfinite(scores[name]).all()},
        "mean_predicted": {name: float(np.mean(scores[name])) for name in PREDICTION_COLUMNS
                           if np.isfinite(scores[name]).all()},
        "mean_p_true": float(p_true.mean()) if has_truth else None,  # type: ignore[arg-type]
        "teacher_gain": estimate.teacher_gain,
        "teacher_gain_ci": list(estimate.teacher_gain_ci),
        "distill_gain": estimate.distill_gain,
        "distill_gain_ci": list(estimate.distill_gain_ci),
        "eta": estimate.eta,
        "eta_ci": list(estimate.eta_ci) if estimate.eta_ci is not None else None,
        "teacher_gain_significant": estimate.significant,
        "eta_note": estimate.reason,
    }
    return summary


def _teacher_eval_logits(config: PipelineConfig, store: ArtifactStore, teacher: TeacherModel,
                         checkpoint: LoadedCheckpoint, eval_frame: pl.DataFrame, partition: date) -> np.ndarray:
    """The teacher snapshot's raw logits on the eval day, scored once per snapshot.

    The teacher is the costliest model to run, and one snapshot is scored by every report that
    reads it (a student-only rerun, every student fed by the same teacher), so the scores are
    stored next to the reports, keyed by the snapshot, and reused when they cover exactly the
    eval rows in the same order.
    """
    _, _, run = parse_snapshot_id(checkpoint.meta["snapshot_id"])
    path = layout.teacher_eval_scores_path(partition, run)
    if store.exists(path):
        cached = store.read_parquet(path)
        if cached["sample_id"].equals(eval_frame["sample_id"]) and cached["logit"].is_finite().all():
            return cached["logit"].to_numpy(writable=True)
    device = _device(config)
    restore(teacher, None, checkpoint.payload)
    logit = predict_logits(teacher.to(device), eval_frame, history_len=config.teacher.arch.seq_len,
                           batch_size=config.eval.batch_size, device=device)["logit"]
    if np.isfinite(logit).all():  # a diverged teacher's scores are recomputed, never cached
        store.write_parquet(path, pl.DataFrame({"sample_id": eval_frame["sample_id"], "logit": logit}))
    return logit


def evaluate_partition(
    config: PipelineConfig, store: ArtifactStore, vocab: FeatureVocab, partition: date
) -> ReportResult:
    """Progressive validation: the models after `partition` scored on the next day's eval stream."""
    days_of_partition(config, partition)  # validates the key
    eval_day = partition + timedelta(days=1)
    _require_samples(store, "eval", [eval_day], partition)
    eval_frame = _load_validated(store, layout.samples_path("eval", eval_day), "eval_samples", eval_day)
    device = _device(config)
    checkpoints = {role: load_checkpoint(store, role, partition)
                   for role in ("teacher", "student", "student_baseline")}
    distilled = build_student(config, vocab)
    restore(distilled, None, checkpoints["student"].payload)
    baseline = build_student(config, vocab)
    restore(baseline, None, checkpoints["student_baseline"].payload)
    batch_size = config.eval.batch_size
    source = eval_frame["traffic_source"].to_numpy()
    teacher = build_teacher(config, vocab)
    teacher_logit = _teacher_eval_logits(config, store, teacher, checkpoints["teacher"], eval_frame, partition)
    distill_out = predict_logits(distilled.to(device), eval_frame, history_len=config.student.arch.seq_len,
                                 batch_size=batch_size, device=device)
    baseline_out = predict_logits(baseline.to(device), eval_frame, history_len=config.student.arch.seq_len,
                                  batch_size=batch_size, device=device)
    student_policy = config.sampling.student
    aux = distill_out.get("aux")
    predictions = eval_frame.select("sample_id", "day", "label", "p_true", "traffic_source").with_columns(
        teacher=pl.Series(_calibrated(teacher_logit, config.sampling.teacher, source)),
        student_raw=pl.Series(_calibrated(baseline_out["main"], student_policy, source)),
        student_distill=pl.Series(_calibrated(distill_out["main"], student_policy, source)),
        student_aux=pl.Series(
            _calibrated(aux, student_policy, source) if aux is not None else np.full(len(source), np.nan)
        ),
    )
    predictions_url = store.write_parquet(layout.report_path(partition, "predictions.parquet"), predictions)
    day_summary = _summarize(config, predictions, seed=config.eval.seed + config.calendar.day_index(partition))

    # Cumulative over every report day so far: the stored predictions, read lazily and concatenated.
    report_days = [d for d in config.calendar.training_days() if d <= partition]
    missing = [d.isoformat() for d in report_days
               if not store.exists(layout.report_path(d, "predictions.parquet"))]
    if missing:
        raise PipelineStepError(
            f"transferability_report {partition}: earlier report partition(s) {', '.join(missing)} are "
            "missing, so the cumulative numbers would silently skip days; materialize them first"
        )
    cumulative_frame = pl.concat(
        [store.scan_parquet(layout.report_path(d, "predictions.parquet")) for d in report_days]
    ).collect()
    cumulative = _summarize(config, cumulative_frame, seed=config.eval.seed)
    cumulative["day"] = partition.isoformat()
    cumulative["days"] = [d.isoformat() for d in report_days]

    report = {
        "day": partition.isoformat(),
        "eval_day": eval_day.isoformat(),
        "profile": config.profile,
        **day_summary,
        "cumulative": cumulative,
        "snapshots": {role: ckpt.meta["snapshot_id"] for role, ckpt in checkpoints.items()},
        "teacher_snapshots_in_student": checkpoints["student"].meta.get("teacher_snapshots", []),
        "mlflow_runs": {role: ckpt.meta.get("mlflow_run_id") for role, ckpt in checkpoints.items()},
        "parameters": {
            "teacher": sum(p.numel() for p in teacher.parameters()),
            "student": sum(p.numel() for p in distilled.parameters()),
        },
        "predictions": predictions_url,
    }
    report["parameters"]["student_to_teacher"] = report["parameters"]["student"] / report["parameters"]["teacher"]
    report_url = store.write_json(layout.report_path(partition), report)
    return ReportResult(report=report, predictions_url=predictions_url, report_url=report_url)


def report_history(config: PipelineConfig, store: ArtifactStore, up_to: date) -> list[dict[str, Any]]:
    """All report JSONs up to a day (for plots over days)."""
    reports = []
    for d in config.calendar.training_days():
        if d <= up_to and store.exists(layout.report_path(d)):
            reports.append(store.read_json(layout.report_path(d)))
    return reports


def serving_example(config: PipelineConfig, store: ArtifactStore, day: date) -> tuple[np.ndarray, ...]:
    """Two rows of the day's student samples as (sparse, dense, history) arrays for model export."""
    frame = store.scan_parquet(layout.samples_path("student", day)).head(2).collect()
    tensors = frame_to_tensors(frame, history_len=config.student.arch.seq_len)
    return (tensors.sparse.numpy(), tensors.dense.numpy(), tensors.history.numpy())
