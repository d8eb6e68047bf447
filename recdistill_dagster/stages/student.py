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
    ChainStart,
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
from recdistill_dagster.stages.serving import export_served_student


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
    serving_url: str | None = None  # the distilled main tower's ONNX export

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


@dataclass
class StudentPlan:
    """Everything decided before a student partition trains: its inputs (checked), where the chain continues
    from (the model and optimizer hold that state), whether it distills, the schedule and the seed."""

    partition: date
    variant: layout.StudentVariant
    chain: Chain
    days: list[date]
    paths: dict[date, str]  # the rows it trains on, per day (joined dataset or raw samples)
    table: str
    inputs: dict[str, str]
    teacher_snapshots: list[str]
    distilled: bool
    model: StudentModel
    optimizer: torch.optim.Optimizer
    arch: dict[str, Any]
    start: ChainStart
    epochs: int
    batch_size: int
    seed: int


def plan_student_partition(ctx: StageContext, student: StudentConfig, partition: date,
                           variant: layout.StudentVariant) -> StudentPlan:
    """Check the inputs (a usable teacher for the distilled variant) and continue the chain."""
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
    model = build_student(ctx, student).to(ctx.device)
    optimizer = make_optimizer(model, student.optim)
    arch = student.arch.model_dump(mode="json")
    start = continue_chain(ctx, chain, partition, model, optimizer, arch)
    schedule = train_schedule(ctx, student.optim, partition)
    return StudentPlan(
        partition=partition, variant=variant, chain=chain, days=days, paths=paths, table=table, inputs=inputs,
        teacher_snapshots=teacher_snapshots, distilled=variant == "distilled" and distills_on(ctx, student, partition),
        model=model, optimizer=optimizer, arch=arch, start=start, epochs=schedule.epochs,
        batch_size=schedule.batch_size, seed=student.seed + config.calendar.day_index(partition),
    )


def train_student_partition(ctx: StageContext, student: StudentConfig, partition: date,
                            variant: layout.StudentVariant) -> StudentResult:
    """Train the distilled student on its joined dataset, or the baseline on its raw sampled rows (in this process)."""
    plan = plan_student_partition(ctx, student, partition, variant)
    loaders = [(d, lambda path=path, d=d: load_samples(ctx.store, path, plan.table, d))
               for d, path in plan.paths.items()]
    stats = train_student(
        plan.model, plan.optimizer, loaders,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        distill=student.distill if plan.distilled else None,
        towers=student.arch.towers,
        start_step=plan.start.start_step,
        seed=plan.seed,
        device=ctx.device,
        grad_clip=student.optim.grad_clip,
        history_len=student.arch.seq_len,
        log_every=ctx.config.runtime.log_every_steps,
        progress=ctx.progress,
    )
    return finish_student_partition(ctx, student, plan, stats)


def finish_student_partition(ctx: StageContext, student: StudentConfig, plan: StudentPlan, stats: TrainStats,
                             **extra_meta: Any) -> StudentResult:
    """After training (here or under torchrun): checkpoint, and the served tower's ONNX for the distilled variant."""
    partition, chain, start, model, days = plan.partition, plan.chain, plan.start, plan.model, plan.days
    provenance = Provenance(version=snapshot_id(chain.role, partition, ctx.identity),
                            inputs={**plan.inputs, **chain_inputs(chain, start)},
                            teacher_snapshots=plan.teacher_snapshots)
    meta = checkpoint_meta(ctx, chain, partition, provenance, start, days, stats, plan.arch,
                           fingerprint(student.model_dump(mode="json")), student=student.name, variant=plan.variant,
                           distilled=plan.distilled, losses=_loss_summary(stats), **extra_meta)
    url = save_checkpoint(ctx.store, chain, partition, model, plan.optimizer, meta)
    serving_url = None
    if plan.variant == "distilled":  # the served main tower as ONNX beside the checkpoint (exported on CPU)
        served = model.serving_module(student.sampling).cpu().eval()
        example = serving_example(ctx, student, days[-1])
        serving_url = export_served_student(ctx, student.name, partition, served, example)
        model.to(ctx.device)
    return StudentResult(
        partition=partition, student=student.name, variant=plan.variant, provenance=provenance,
        parent_snapshot=start.parent_snapshot, phase=start.phase, days=days, stats=stats, checkpoint_url=url,
        distilled=plan.distilled, n_parameters=sum(p.numel() for p in model.parameters()), model=model, meta=meta,
        serving_url=serving_url,
    )


def _loss_summary(stats: TrainStats) -> dict[str, Any]:
    """Final loss magnitudes and the sampled per-step history (read by the report's loss plots)."""
    history = [{key: float(row[key]) for key in ("step", "task_loss", "distill_loss") if row.get(key) is not None}
               for row in stats.history]
    return {"task_loss": stats.task_loss, "distill_loss": stats.distill_loss, "history": history}


def serving_example(ctx: StageContext, student: StudentConfig, day: date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two rows of the student's samples of `day` as (sparse, dense, history) arrays, for model export."""
    frame: pl.DataFrame = ctx.store.scan_parquet(layout.student_samples_path(student.name, day)).head(2).collect()
    tensors = frame_to_tensors(frame, history_len=student.arch.seq_len)
    return (tensors.sparse.numpy(), tensors.dense.numpy(), tensors.history.numpy())
