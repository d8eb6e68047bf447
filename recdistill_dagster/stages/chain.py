"""The self-dependent checkpoint chains (the teacher's, and each student variant's).

A chain's first partition is the batch phase; every later partition restores yesterday's model and
optimizer and continues. Every checkpoint carries its lineage (parent snapshot, trained days, the
inputs it consumed and their versions) so the lineage audit and the rollback planner can read it.

The one rule for "may this teacher snapshot be used?" is `SnapshotRegistry.is_usable`; the teacher's
chain consults it to roll back over unusable snapshots, and `require_usable_teacher` enforces it for
everything that consumes teacher logits.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import torch

from models.checkpoint import checkpoint_bytes, load_checkpoint_bytes, restore
from models.training import TrainStats
from recdistill_dagster import layout
from recdistill_dagster.calendar import is_batch_partition, previous_partition
from recdistill_dagster.config import OptimConfig
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.graph import partition_ref
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.stages.context import RunIdentity, StageContext
from recdistill_dagster.storage import ArtifactNotFoundError, Store


@dataclass(frozen=True)
class Chain:
    """One checkpoint chain: its snapshot-id role, the asset that holds it, and where its files live."""

    role: str  # "teacher", "ranker/distilled", "ranker/baseline": the prefix of every snapshot id
    asset: str  # the asset key (for lineage inputs and messages)
    path: Callable[[date], str]


def teacher_chain(asset: str) -> Chain:
    return Chain("teacher", asset, layout.teacher_checkpoint_path)


def student_chain(student: str, variant: layout.StudentVariant, asset: str) -> Chain:
    return Chain(f"{student}/{variant}", asset,
                 lambda partition: layout.student_checkpoint_path(student, variant, partition))


def snapshot_id(role: str, partition: date, identity: RunIdentity) -> str:
    """Unique per materialization: the chain, the day and the run that produced it."""
    return f"{role}@{partition.isoformat()}#{identity.short}"


@dataclass(frozen=True)
class Provenance:
    """What a partition is and what it was built from, recorded in its metadata and files.

    `version` identifies this materialization (a snapshot id); `inputs` maps every upstream training
    partition it consumed (`key[day]`) to the version it consumed; `teacher_snapshots` are the teacher
    snapshots its content derives from directly. The rollback planner compares `inputs` with the
    upstream partitions' current versions.
    """

    version: str
    inputs: dict[str, str] = field(default_factory=dict)
    teacher_snapshots: list[str] = field(default_factory=list)


@dataclass
class LoadedCheckpoint:
    payload: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.payload["meta"]
        return meta

    @property
    def snapshot_id(self) -> str:
        return str(self.meta["snapshot_id"])


def load_checkpoint(store: Store, chain: Chain, partition: date) -> LoadedCheckpoint:
    relative = chain.path(partition)
    try:
        data = store.read_bytes(relative, what=f"{chain.asset} {partition}")
    except ArtifactNotFoundError as exc:
        raise PipelineStepError(
            f"{chain.asset} partition {partition} has not been materialized ({exc}); "
            "the daily chain cannot skip a day: materialize or backfill it first"
        ) from None
    try:
        return LoadedCheckpoint(load_checkpoint_bytes(data))
    except Exception as exc:
        raise PipelineStepError(
            f"{chain.asset} partition {partition} at {store.url(relative)} is unreadable: {exc}"
        ) from exc


def restore_weights(model: torch.nn.Module, checkpoint: LoadedCheckpoint) -> torch.nn.Module:
    restore(model, None, checkpoint.payload)
    return model


@dataclass
class ChainStart:
    """Where a chain continues from: the previous day's checkpoint, if any."""

    previous: date | None
    parent_snapshot: str | None = None
    start_step: int = 0
    samples_before: int = 0
    parent: LoadedCheckpoint | None = None
    rolled_back_over: list[str] = field(default_factory=list)  # unusable snapshots skipped

    @property
    def phase(self) -> str:
        return "batch" if self.previous is None else "streaming"


def continue_chain(ctx: StageContext, chain: Chain, partition: date, model: torch.nn.Module,
                   optimizer: torch.optim.Optimizer, arch: dict[str, Any],
                   usable: Callable[[str], bool] | None = None) -> ChainStart:
    """Restore model and optimizer from yesterday's checkpoint (none for the batch partition).

    With `usable` (the teacher's snapshot registry), a chain whose previous snapshot is unusable
    rolls back: it continues from the last usable snapshot before it.
    """
    calendar = ctx.config.calendar
    previous = previous_partition(calendar, partition)
    skipped: list[str] = []
    while previous is not None:
        parent = load_checkpoint(ctx.store, chain, previous)
        if usable is None or usable(parent.snapshot_id):
            break
        skipped.append(parent.snapshot_id)
        previous = previous_partition(calendar, previous)
    else:
        if skipped:
            raise PipelineStepError(
                f"{chain.asset} {partition}: no usable snapshot to continue from (unusable: "
                f"{', '.join(skipped)}); re-materialize the batch partition {calendar.batch_end}"
            )
        return ChainStart(previous=None)
    if parent.meta.get("arch") != arch:
        raise PipelineStepError(
            f"{chain.asset} {partition}: the previous checkpoint was trained with architecture "
            f"{parent.meta.get('arch')}, the configuration now says {arch}; re-materialize the chain "
            "from its batch partition"
        )
    restore(model, optimizer, parent.payload)
    return ChainStart(previous=previous, parent_snapshot=parent.snapshot_id,
                      start_step=int(parent.meta["global_step"]),
                      samples_before=int(parent.meta["samples_seen_total"]), parent=parent,
                      rolled_back_over=skipped)


def chain_inputs(chain: Chain, start: ChainStart) -> dict[str, str]:
    """The lineage input of a continued chain: yesterday's partition (the one restored) and its snapshot."""
    if start.previous is None or start.parent_snapshot is None:
        return {}
    return {partition_ref(chain.asset, start.previous): start.parent_snapshot}


@dataclass(frozen=True)
class PhaseSchedule:
    epochs: int
    batch_size: int


def train_schedule(ctx: StageContext, optim: OptimConfig, partition: date) -> PhaseSchedule:
    """The batch phase trains to convergence (more epochs, optionally bigger batches); a streaming day
    makes `streaming_epochs` passes."""
    if is_batch_partition(ctx.config.calendar, partition):
        return PhaseSchedule(optim.batch_phase_epochs, optim.batch_phase_batch_size or optim.batch_size)
    return PhaseSchedule(optim.streaming_epochs, optim.batch_size)


def checkpoint_meta(ctx: StageContext, chain: Chain, partition: date, provenance: Provenance,
                    start: ChainStart, days: list[date], stats: TrainStats, arch: dict[str, Any],
                    config_fingerprint: str, **extra: Any) -> dict[str, Any]:
    """Lineage and provenance saved inside every checkpoint (JSON-able, weights_only-safe)."""
    return {
        "role": chain.role,
        "asset": chain.asset,
        "partition": partition.isoformat(),
        "phase": start.phase,
        "snapshot_id": provenance.version,
        "parent_snapshot": start.parent_snapshot,
        "inputs": dict(provenance.inputs),
        "teacher_snapshots": list(provenance.teacher_snapshots),
        "trained_days": [d.isoformat() for d in days],
        "global_step": start.start_step + stats.steps,
        "samples_seen_total": start.samples_before + stats.samples,
        "dagster_run_id": ctx.identity.run_id,
        "mlflow_run_id": ctx.identity.tracking_run_id,
        "arch": arch,
        "profile": ctx.config.profile,
        "config_fingerprint": config_fingerprint,
        "created_at": datetime.now(UTC).isoformat(),
        **extra,
    }


def save_checkpoint(store: Store, chain: Chain, partition: date, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, meta: dict[str, Any]) -> str:
    return store.write_bytes(chain.path(partition), checkpoint_bytes(model, optimizer, meta))


def require_usable_teacher(registry: SnapshotRegistry, snapshots: list[str], consumer: str) -> None:
    """Refuse teacher logits of a snapshot the registry marks unusable (unhealthy or bad) or never
    registered (a teacher step that died between writing logits and registering its snapshot)."""
    problems = []
    for snapshot in snapshots:
        record = registry.get(snapshot)
        if record is None:
            problems.append(f"{snapshot} has no registry record (its teacher step did not finish)")
        elif not registry.is_usable(snapshot):
            problems.append(f"{snapshot} is {record.status} ({record.reason})")
    if problems:
        raise PipelineStepError(
            f"{consumer}: teacher snapshot(s) unusable: {'; '.join(problems)}. Their logits must not reach a "
            "student; the rollback sensor retrains the teacher from the last good snapshot and re-materializes "
            "this partition"
        )


def weights_checksum(model: torch.nn.Module) -> str:
    """sha256 of the parameters and buffers alone, names included: equal for bit-identical weights, whatever
    run, time or metadata the checkpoint file carries."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(payload: Any) -> str:
    """12 hex characters identifying a configuration section (recorded in every checkpoint)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
