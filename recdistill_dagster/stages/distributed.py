"""Stage: a teacher (or student) partition as a `torchrun` DDP job (no Dagster: the asset launches it through Pipes).

    plan = plan_teacher_partition(ctx, day)                  # chain, attempt, fault, snapshot, schedule
    job = teacher_job(ctx, plan, folder)                     # inputs staged into `folder`, job file written
    … torchrun -m recdistill_dagster.ddp --job folder/job.json   (the launcher's part)
    result = finish_teacher_job(ctx, plan, job)              # logits, health, checkpoint, registry: as in-process

The job starts from the planned model and optimizer state (a fresh model with the teacher's seed, or
the continued snapshot, with any fault drill applied), so ranks and the single process start equal;
each rank trains on its share of every global batch and rank 0 writes the recorded logits of all
ranks. The outputs then go through the same `finish_teacher_partition` as an in-process run: the same
contract for logits, checkpoint, health check and registry, in the same store (local or S3).
Students likewise (`student_job` / `finish_student_job`, with `runtime.distributed.students`): the
joined dataset (or the baseline's raw rows), the checkpoint and the served tower's ONNX export.
Inputs are staged into a local folder for the ranks (read through the sample contract, as in-process
training reads them); on a cluster that folder is shared storage.
"""

from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import torch

from models.checkpoint import checkpoint_bytes, load_checkpoint_bytes
from models.training import TrainStats
from recdistill_dagster import layout
from recdistill_dagster.config import StudentConfig
from recdistill_dagster.ddp import StudentDDPJob, TeacherDDPJob, TrainingDay, read_result, write_job, write_vocab
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.files import replacing
from recdistill_dagster.stages.chain import snapshot_id
from recdistill_dagster.stages.context import StageContext
from recdistill_dagster.stages.inputs import load_samples
from recdistill_dagster.stages.student import StudentPlan, StudentResult, finish_student_partition
from recdistill_dagster.stages.teacher import TeacherPlan, TeacherResult, finish_teacher_partition

JOB_FILE = "job.json"
VOCAB_FILE = "vocab.npz"
INIT_FILE = "init.pt"
OUTPUT_DIR = "out"


def _stage_days(ctx: StageContext, paths: dict[date, str], table: str, folder: Path) -> list[TrainingDay]:
    """The rows of each day, validated by the sample contract as in-process training reads them, as local
    parquet files the ranks read."""
    days = []
    for day, relative in paths.items():
        local = folder / f"{table.replace('/', '-')}-{day.isoformat()}.parquet"
        frame = load_samples(ctx.store, relative, table, day)
        with replacing(local) as temp:
            frame.write_parquet(temp)
        days.append(TrainingDay(day=day, samples_path=str(local)))
    return days


def _stage_start(model: torch.nn.Module, optimizer: torch.optim.Optimizer, parent: str | None,
                 folder: Path) -> str:
    """The planned starting state (fresh with the configured seed, or the continued snapshot) for every rank."""
    init = folder / INIT_FILE
    with replacing(init) as temp:
        temp.write_bytes(checkpoint_bytes(model, optimizer, {"snapshot_id": parent}))
    return str(init)


def _common(ctx: StageContext, folder: Path) -> dict[str, Any]:
    runtime = ctx.config.runtime
    return {"vocab_path": str(write_vocab(ctx.vocab, folder / VOCAB_FILE)), "output_dir": str(folder / OUTPUT_DIR),
            "threads_per_rank": runtime.distributed.threads_per_rank, "log_every": runtime.log_every_steps,
            "pipes_materialization": False}


def teacher_job(ctx: StageContext, plan: TeacherPlan, folder: Path) -> tuple[TeacherDDPJob, Path]:
    """Stage the partition's inputs into `folder` and write the job file; returns the job and its path."""
    config = ctx.config
    days = {day: layout.samples_path("teacher", day) for day in plan.days}
    job = TeacherDDPJob(
        arch=config.teacher.arch, optim=config.teacher.optim, record_epoch=config.teacher.record_epoch,
        days=_stage_days(ctx, days, "teacher_samples", folder), epochs=plan.epochs, batch_size=plan.batch_size,
        snapshot_id=plan.snapshot, start_step=plan.start.start_step, seed=plan.seed,
        init_checkpoint=_stage_start(plan.model, plan.optimizer, plan.start.parent_snapshot, folder),
        **_common(ctx, folder),
    )
    return job, write_job(job, folder / JOB_FILE)


def student_job(ctx: StageContext, student: StudentConfig, plan: StudentPlan,
                folder: Path) -> tuple[StudentDDPJob, Path]:
    """The student partition's job: its joined dataset (distilled) or raw samples (baseline), staged."""
    job = StudentDDPJob(
        arch=student.arch, optim=student.optim, distill=student.distill if plan.distilled else None,
        days=_stage_days(ctx, plan.paths, plan.table, folder), epochs=plan.epochs, batch_size=plan.batch_size,
        snapshot_id=snapshot_id(plan.chain.role, plan.partition, ctx.identity), start_step=plan.start.start_step,
        seed=plan.seed, init_checkpoint=_stage_start(plan.model, plan.optimizer, plan.start.parent_snapshot, folder),
        **_common(ctx, folder),
    )
    return job, write_job(job, folder / JOB_FILE)


def _read_back(ctx: StageContext, job: TeacherDDPJob | StudentDDPJob, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer, what: str) -> tuple[dict[str, Any], TrainStats, dict[str, Any]]:
    """Rank 0's checkpoint into the plan's model and optimizer; its stats; what to record of the run."""
    result = read_result(job)
    world, asked = int(result["world_size"]), ctx.config.runtime.distributed.nproc_per_node
    if world != asked:
        raise PipelineStepError(f"{what}: the DDP job ran {world} ranks, the configuration asks for "
                                f"runtime.distributed.nproc_per_node={asked}")
    payload = load_checkpoint_bytes(Path(result["checkpoint"]).read_bytes())
    model.load_state_dict(payload["model"])
    if payload["optimizer"]:
        optimizer.load_state_dict(payload["optimizer"])
    model.to(ctx.device)
    known = {f.name for f in fields(TrainStats)}
    stats = TrainStats(**{k: v for k, v in result["stats"].items() if k in known})
    return result, stats, {"world_size": world, "backend": result["backend"]}


def finish_teacher_job(ctx: StageContext, plan: TeacherPlan, job: TeacherDDPJob) -> TeacherResult:
    """Read rank 0's outputs back, then finish as an in-process run (logits, health, checkpoint, registry)."""
    result, stats, distributed = _read_back(ctx, job, plan.model, plan.optimizer, f"teacher {plan.partition}")
    logits: dict[date, pl.DataFrame] = {date.fromisoformat(day): pl.read_parquet(path)
                                        for day, path in result["logits"].items()}
    return finish_teacher_partition(ctx, plan, stats, logits, distributed=distributed)


def finish_student_job(ctx: StageContext, student: StudentConfig, plan: StudentPlan,
                       job: StudentDDPJob) -> StudentResult:
    """Read rank 0's outputs back, then finish as an in-process run (checkpoint, ONNX export)."""
    _, stats, distributed = _read_back(ctx, job, plan.model, plan.optimizer, f"{plan.chain.asset} {plan.partition}")
    if job.snapshot_id != snapshot_id(plan.chain.role, plan.partition, ctx.identity):
        raise PipelineStepError(f"{plan.chain.asset} {plan.partition}: the DDP job trained {job.snapshot_id}")
    return finish_student_partition(ctx, student, plan, stats, distributed=distributed)
