"""Stage: train one student for one training partition, distilled (on its joined dataset) or the
baseline (the same architecture on its raw sampled rows, no teacher signal: the P_S_raw reference)."""

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import polars as pl
import torch

from models.features import frame_to_tensors
from models.student import StudentModel
from models.training import TrainStats, make_optimizer, train_student
from recdistill_dagster import layout
from recdistill_dagster.calendar import days_of_partition, is_batch_partition
from recdistill_dagster.config import StudentConfig
from recdistill_dagster.graph import StudentKeys, partition_ref
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.stages.chain import (
    Chain,
    LoadedCheckpoint,
    Provenance,
    chain_inputs,
    checkpoint_meta,
    continue_chain,
    fingerprint,
    require_usable_teacher,
    save_checkpoint,
    snapshot_id,
    student_chain,
    train_schedule,
)
from recdistill_dagster.stages.context import StageContext
from recdistill_dagster.stages.dataset import read_manifest
from recdistill_dagster.stages.inputs import load_samples, require_files


def chain_of(student: StudentConfig, variant: layout.StudentVariant) -> Chain:
    keys = StudentKeys(student.name)
    return student_chain(student.name, variant, keys.distilled if variant == "distilled" else keys.baseline)


@dataclass
class StudentResult:
    partition: date
    student: str
    variant: layout.StudentVariant
    provenance: Provenance
    parent_snapshot: str | None
    phase: str
    days: list[date]
    stats: TrainStats
    checkpoint_url: str
    distilled: bool
    n_parameters: int
    model: StudentModel
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def snapshot_id(self) -> str:
        return self.provenance.version


def build_student(ctx: StageContext, student: StudentConfig) -> StudentModel:
    torch.manual_seed(student.seed)
    return StudentModel(ctx.vocab, student.arch)


def load_student(ctx: StageContext, student: StudentConfig, checkpoint: LoadedCheckpoint) -> StudentModel:
    """A student snapshot's weights in a fresh model, in eval mode on the context's device."""
    model = build_student(ctx, student)
    model.load_state_dict(checkpoint.payload["model"])
    return model.to(ctx.device).eval()


def distills_on(ctx: StageContext, student: StudentConfig, partition: date) -> bool:
    """Whether the distilled variant uses the teacher on this partition (the streaming ablations)."""
    batch = is_batch_partition(ctx.config.calendar, partition)
    return student.distill.in_batch_phase if batch else student.distill.in_streaming


def train_student_partition(ctx: StageContext, student: StudentConfig, partition: date,
                            variant: layout.StudentVariant) -> StudentResult:
    """Train the distilled student on its joined dataset, or the baseline on its raw sampled rows."""
    config = ctx.config
    keys = StudentKeys(student.name)
    chain = chain_of(student, variant)
    days = days_of_partition(config.calendar, partition)
    consumer = f"{chain.asset} {partition}"
    inputs: dict[str, str] = {}
    teacher_snapshots: list[str] = []
    if variant == "distilled":
        manifest = read_manifest(ctx, student, partition, consumer)
        teacher_snapshots = manifest.provenance.teacher_snapshots
        require_usable_teacher(SnapshotRegistry(ctx.store), teacher_snapshots, consumer)
        inputs[partition_ref(keys.dataset, partition)] = manifest.provenance.version
        paths = {d: layout.student_dataset_path(student.name, partition, d) for d in days}
        table = keys.dataset
    else:
        paths = {d: layout.student_samples_path(student.name, d) for d in days}
        table = keys.samples
    require_files(ctx.store, paths, table, consumer, "materialize (or backfill) it first")
    distilled = variant == "distilled" and distills_on(ctx, student, partition)
    model = build_student(ctx, student).to(ctx.device)
    optimizer = make_optimizer(model, student.optim)
    arch = student.arch.model_dump(mode="json")
    start = continue_chain(ctx, chain, partition, model, optimizer, arch)
    loaders = [(d, lambda path=path, d=d: load_samples(ctx.store, path, table, d)) for d, path in paths.items()]
    schedule = train_schedule(ctx, student.optim, partition)
    stats = train_student(
        model, optimizer, loaders,
        epochs=schedule.epochs,
        batch_size=schedule.batch_size,
        distill=student.distill if distilled else None,
        towers=student.arch.towers,
        start_step=start.start_step,
        seed=student.seed + config.calendar.day_index(partition),
        device=ctx.device,
        grad_clip=student.optim.grad_clip,
        history_len=student.arch.seq_len,
        log_every=config.runtime.log_every_steps,
        progress=ctx.progress,
    )
    provenance = Provenance(version=snapshot_id(chain.role, partition, ctx.identity),
                            inputs={**inputs, **chain_inputs(chain, start)}, teacher_snapshots=teacher_snapshots)
    meta = checkpoint_meta(ctx, chain, partition, provenance, start, days, stats, arch,
                           fingerprint(student.model_dump(mode="json")), student=student.name, variant=variant,
                           distilled=distilled, losses=_loss_summary(stats))
    url = save_checkpoint(ctx.store, chain, partition, model, optimizer, meta)
    return StudentResult(
        partition=partition, student=student.name, variant=variant, provenance=provenance,
        parent_snapshot=start.parent_snapshot, phase=start.phase, days=days, stats=stats, checkpoint_url=url,
        distilled=distilled, n_parameters=sum(p.numel() for p in model.parameters()), model=model, meta=meta,
    )


def _loss_summary(stats: TrainStats) -> dict[str, Any]:
    """Final loss magnitudes and the sampled per-step history (read by the report's loss plots)."""
    history = [{key: float(row[key]) for key in ("step", "task_loss", "distill_loss") if row.get(key) is not None}
               for row in stats.history]
    return {"task_loss": stats.task_loss, "distill_loss": stats.distill_loss, "history": history}


def serving_example(ctx: StageContext, student: StudentConfig, day: date) -> tuple[np.ndarray, ...]:
    """Two rows of the student's samples of `day` as (sparse, dense, history) arrays, for model export."""
    frame: pl.DataFrame = ctx.store.scan_parquet(layout.student_samples_path(student.name, day)).head(2).collect()
    tensors = frame_to_tensors(frame, history_len=student.arch.seq_len)
    return (tensors.sparse.numpy(), tensors.dense.numpy(), tensors.history.numpy())
