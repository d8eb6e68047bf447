"""Teacher and student training under `torchrun` (DDP): the job file, the worker entry point, the launcher.

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m recdistill_dagster.ddp --job job.json

Each rank trains with `models.distributed.RankShard` (gloo on CPU, nccl on GPUs); rank 0 writes the
outputs atomically into `job.output_dir`, with the same contracts as the in-process steps:

    logits/<day>.parquet   (teacher) TEACHER_LOGIT_SCHEMA: one logit per trained sample from the training
                           forward pass, with the snapshot id and the global step (all ranks' rows)
    checkpoint.pt          models.checkpoint bytes (model, optimizer, meta)
    result.json            TrainStats and the output paths

Launched from an asset through Dagster Pipes (`PipesSubprocessClient`), rank 0 also opens the
Pipes channel: its log lines reach the run log and it reports the materialization's metadata.
The job file is written by the launcher (the asset); the vocabulary travels as an .npz beside it.
No Dagster import here: only `dagster_pipes`, the dependency-free Pipes client, when launched so.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, fields
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from pydantic import Field, TypeAdapter
from torch import nn

from models.checkpoint import checkpoint_bytes, load_checkpoint_bytes
from models.distributed import MainTowerOnly, RankShard, ddp_model
from models.student import StudentModel
from models.teacher import TeacherModel
from models.training import TrainStats, make_optimizer, train_student, train_teacher
from recdistill_dagster.config import DistillConfig, OptimConfig, StrictModel, StudentArch, TeacherArch
from recdistill_dagster.data.schema import FeatureVocab
from recdistill_dagster.files import replacing

MODULE = "recdistill_dagster.ddp"
CPU_BACKEND = "gloo"
GPU_BACKEND = "nccl"
LOGITS_DIR = "logits"
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.json"
ARRAY_FIELDS = ("item_category", "item_creator")


class TrainingDay(StrictModel):
    day: date
    samples_path: str = Field(min_length=1)  # teacher samples, or the student dataset (parquet)


class _DDPJob(StrictModel):
    optim: OptimConfig
    vocab_path: str
    days: list[TrainingDay] = Field(min_length=1)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    snapshot_id: str = Field(min_length=1)
    start_step: int = Field(0, ge=0)
    seed: int
    output_dir: str
    init_checkpoint: str | None = None  # the parent snapshot (continue the chain), else a fresh model
    meta: dict[str, Any] = Field(default_factory=dict)  # into the checkpoint meta (the caller's lineage)
    threads_per_rank: int = Field(1, ge=1)
    log_every: int = Field(100, ge=1)
    # Rank 0 reports a materialization through Pipes (a single-asset step); False when the launching
    # step records its own (the pipeline's teacher multi-asset): rank 0 then only logs its summary.
    pipes_materialization: bool = True


class TeacherDDPJob(_DDPJob):
    """One distributed teacher training pass (records logits); written as JSON by the launcher."""

    role: Literal["teacher"] = "teacher"
    arch: TeacherArch
    record_epoch: Literal["first", "last"]


class StudentDDPJob(_DDPJob):
    """One distributed student training pass on student-dataset days; `distill` None: the baseline."""

    role: Literal["student"] = "student"
    arch: StudentArch
    distill: DistillConfig | None


DDPJob = Annotated[TeacherDDPJob | StudentDDPJob, Field(discriminator="role")]
JOB_ADAPTER: TypeAdapter[TeacherDDPJob | StudentDDPJob] = TypeAdapter(DDPJob)


def write_vocab(vocab: FeatureVocab, path: Path) -> Path:
    values = {f.name: getattr(vocab, f.name) for f in fields(vocab)}
    with replacing(path) as temp, temp.open("wb") as out:
        np.savez(out, **values)
    return path


def read_vocab(path: Path) -> FeatureVocab:
    with np.load(path) as data:
        values: dict[str, Any] = {name: (data[name] if name in ARRAY_FIELDS else int(data[name]))
                                  for name in data.files}
    return FeatureVocab(**values)


def torchrun_command(job_path: Path, nproc_per_node: int) -> list[str]:
    """The single-host command; a cluster replaces `--standalone` with `--nnodes/--rdzv-endpoint`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            "-m", MODULE, "--job", str(job_path)]


def write_job(job: TeacherDDPJob | StudentDDPJob, job_path: Path) -> Path:
    with replacing(job_path) as temp:
        temp.write_text(job.model_dump_json(indent=2))
    return job_path


def read_result(job: TeacherDDPJob | StudentDDPJob) -> dict[str, Any]:
    """Rank 0's result.json of a finished job."""
    path = Path(job.output_dir) / RESULT_FILE
    if not path.exists():
        raise RuntimeError(f"the {job.role} DDP job wrote no {RESULT_FILE} in {job.output_dir}")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def launch(job: TeacherDDPJob | StudentDDPJob, job_path: Path, nproc_per_node: int,
           env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write the job file, run torchrun to completion, return rank 0's result.json (no Pipes)."""
    write_job(job, job_path)
    done = subprocess.run(torchrun_command(job_path, nproc_per_node), env={**os.environ, **(env or {})},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with {done.returncode}:\n{done.stderr[-4000:]}")
    return read_result(job)


# --------------------------------------------------------------------------- the worker (every rank)


@contextlib.contextmanager
def _pipes_on_rank_zero(rank: int) -> Iterator[Any]:
    """Dagster Pipes' context on rank 0 of a Pipes-launched run; None elsewhere."""
    from_pipes = "DAGSTER_PIPES_CONTEXT" in os.environ
    if rank != 0 or not from_pipes:
        yield None
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        yield pipes


def _device() -> torch.device:
    if dist.get_backend() == GPU_BACKEND:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def run_worker(job: TeacherDDPJob | StudentDDPJob) -> dict[str, Any] | None:
    """One rank's part of the job (inside torchrun); rank 0 writes the outputs and returns the result."""
    backend = GPU_BACKEND if torch.cuda.is_available() else CPU_BACKEND
    if backend == GPU_BACKEND:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.set_num_threads(job.threads_per_rank)
        with _pipes_on_rank_zero(rank) as pipes:
            result = _train(job, rank, world, pipes)
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()


def _train(job: TeacherDDPJob | StudentDDPJob, rank: int, world: int, pipes: Any) -> dict[str, Any] | None:
    torch.manual_seed(job.seed)  # the same initialization on every rank (DDP also broadcasts rank 0's)
    vocab = read_vocab(Path(job.vocab_path))
    model: nn.Module = (TeacherModel(vocab, job.arch) if isinstance(job, TeacherDDPJob)
                        else StudentModel(vocab, job.arch))
    optimizer = make_optimizer(model, job.optim)
    parent = None
    if job.init_checkpoint:
        payload = load_checkpoint_bytes(Path(job.init_checkpoint).read_bytes())
        model.load_state_dict(payload["model"])
        if payload["optimizer"]:
            optimizer.load_state_dict(payload["optimizer"])
        parent = payload["meta"].get("snapshot_id")
    device = _device()
    model.to(device)
    # Without a distillation term a decoupled student's auxiliary tower gets no loss, hence no gradient.
    unused = isinstance(job, StudentDDPJob) and job.distill is None and job.arch.towers.startswith("decoupled")
    trained = MainTowerOnly(model) if unused else model
    sharded = RankShard(ddp_model(trained, find_unused_parameters=unused), world, rank)
    loaders = [(d.day, lambda path=d.samples_path: pl.read_parquet(path)) for d in job.days]

    def progress(record: dict[str, Any]) -> None:
        if pipes is not None:
            pipes.log.info(f"{job.role} ddp step {record['step']} epoch {record['epoch']}: loss {record['loss']:.4f}, "
                           f"{record['samples_per_s']:,.0f} samples/s on {world} ranks")

    common: dict[str, Any] = dict(
        epochs=job.epochs, batch_size=job.batch_size, start_step=job.start_step, seed=job.seed, device=device,
        grad_clip=job.optim.grad_clip, history_len=job.arch.seq_len, log_every=job.log_every,
        progress=progress if rank == 0 else None,
    )
    recorded: dict[date, pl.DataFrame] = {}
    if isinstance(job, TeacherDDPJob):
        stats, recorded = train_teacher(sharded, optimizer, loaders, record_epoch=job.record_epoch,
                                        snapshot_id=job.snapshot_id, **common)
    else:
        stats = train_student(sharded, optimizer, loaders, distill=job.distill,  # type: ignore[arg-type]
                              towers=job.arch.towers, **common)
    if rank != 0:
        return None
    return _write_outputs(job, model, optimizer, stats, recorded, parent, world, pipes)


def _write_outputs(job: TeacherDDPJob | StudentDDPJob, model: nn.Module, optimizer: torch.optim.Optimizer,
                   stats: TrainStats, recorded: dict[date, pl.DataFrame], parent: str | None, world: int,
                   pipes: Any) -> dict[str, Any]:
    """Rank 0: logits per day (teacher), checkpoint, result.json; each written atomically."""
    output = Path(job.output_dir)
    logit_paths = {}
    for day, frame in sorted(recorded.items()):
        with replacing(output / LOGITS_DIR / f"{day.isoformat()}.parquet") as temp:
            frame.write_parquet(temp)
        logit_paths[day.isoformat()] = str(output / LOGITS_DIR / f"{day.isoformat()}.parquet")
    meta = {**job.meta, "snapshot_id": job.snapshot_id, "parent_snapshot": parent, "world_size": world,
            "backend": dist.get_backend(), "days": [d.day.isoformat() for d in job.days]}
    with replacing(output / CHECKPOINT_FILE) as temp:
        temp.write_bytes(checkpoint_bytes(model, optimizer, meta))
    result = {"role": job.role, "snapshot_id": job.snapshot_id, "world_size": world, "backend": dist.get_backend(),
              "stats": {k: v for k, v in asdict(stats).items() if k != "history"},
              "checkpoint": str(output / CHECKPOINT_FILE), "logits": logit_paths,
              "n_logits": int(sum(frame.height for frame in recorded.values()))}
    with replacing(output / RESULT_FILE) as temp:
        temp.write_text(json.dumps(result, indent=2, default=str))
    summary = {f"{job.role}_snapshot": job.snapshot_id, "world_size": world, "backend": result["backend"],
               "n_logits": result["n_logits"], "train_steps": stats.steps, "checkpoint": result["checkpoint"]}
    if pipes is not None and job.pipes_materialization:
        pipes.report_asset_materialization(metadata=summary)
    elif pipes is not None:
        pipes.log.info(f"{job.role} ddp done: {json.dumps(summary, default=str)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"torchrun … -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--job", type=Path, required=True, help="TeacherDDPJob or StudentDDPJob as JSON")
    args = parser.parse_args(argv)
    run_worker(JOB_ADAPTER.validate_json(args.job.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
