"""Stage: a student's dataset for one training partition: its sampled rows left-joined with the
teacher's recorded logits (streamed chunk by chunk: scan, join, sink; memory bounded by a chunk, not the
day), plus a manifest written last. The student's `distill` settings shape the soft labels: on the
teacher's whole logged stream (`soft_label_rows: teacher_stream`, extra rows for the distillation loss
only) and from the teacher or from the oracle (`source: oracle`, the transfer ceiling).

A row without a teacher logit (teacher lag, dropped records) is kept with null teacher columns, so it
still trains the task loss; coverage and matched/unmatched label rates are reported. Logits of a
teacher snapshot that the registry does not hold as usable never reach the dataset.
"""

from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

from recdistill_dagster import layout
from recdistill_dagster.calendar import days_of_partition
from recdistill_dagster.config import JoinConfig, StudentConfig
from recdistill_dagster.data.join import (
    drop_logit_fraction,
    join_stats,
    join_student_dataset_in_chunks,
    oracle_soft_labels,
    teacher_stream_soft_label_rows,
)
from recdistill_dagster.data.schema import SAMPLE_SCHEMA, STUDENT_DATASET_SCHEMA, check_schema
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.graph import TEACHER_LOGITS, TEACHER_SAMPLES, StudentKeys, partition_ref
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.stages.chain import Provenance, require_usable_teacher, snapshot_id
from recdistill_dagster.stages.context import StageContext
from recdistill_dagster.stages.inputs import require_files


@dataclass(frozen=True)
class CoverageVerdict:
    passed: bool
    blocking: bool  # below the hard floor: the student must not train on this partition
    message: str


def coverage_verdict(join: JoinConfig, coverage: float) -> CoverageVerdict:
    warn, floor = join.coverage_warn, join.coverage_floor
    if coverage >= warn:
        return CoverageVerdict(True, False, f"join coverage {coverage:.3f} ≥ {warn}")
    if coverage >= floor:
        return CoverageVerdict(False, False, f"join coverage {coverage:.3f} below the warning level {warn}; "
                               "rows without a teacher logit train on the task loss only")
    return CoverageVerdict(False, True, f"join coverage {coverage:.3f} below the hard floor {floor}: "
                           "the student will not train on this partition")


@dataclass(frozen=True)
class DatasetManifest:
    """What a dataset partition holds; the student stage reads it instead of re-scanning the files."""

    student: str
    partition: date
    provenance: Provenance
    days: list[date]
    stats: dict[str, Any]
    urls: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"student": self.student, "partition": self.partition.isoformat(),
                "version": self.provenance.version, "inputs": self.provenance.inputs,
                "teacher_snapshots": self.provenance.teacher_snapshots,
                "days": [d.isoformat() for d in self.days], "stats": self.stats, "urls": self.urls}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "DatasetManifest":
        return cls(student=payload["student"], partition=date.fromisoformat(payload["partition"]),
                   provenance=Provenance(payload["version"], dict(payload["inputs"]),
                                         list(payload["teacher_snapshots"])),
                   days=[date.fromisoformat(d) for d in payload["days"]], stats=dict(payload["stats"]),
                   urls=dict(payload["urls"]))


def read_manifest(ctx: StageContext, student: StudentConfig, partition: date, consumer: str) -> DatasetManifest:
    path = layout.student_dataset_manifest_path(student.name, partition)
    if not ctx.store.exists(path):
        raise PipelineStepError(
            f"{consumer}: {StudentKeys(student.name).dataset} {partition} has not been materialized "
            f"(no manifest at {ctx.store.url(path)}); materialize it first"
        )
    return DatasetManifest.from_json(ctx.store.read_json(path, what=f"dataset manifest {partition}"))


def _soft_labelled(ctx: StageContext, student: StudentConfig, day: date, samples: pl.LazyFrame,
                   logits: pl.LazyFrame) -> pl.LazyFrame:
    """One day of the dataset (STUDENT_DATASET_SCHEMA): the student's rows ⟕ the logits, plus the
    teacher-stream rows its sampler dropped (`soft_label_rows: teacher_stream`), with the oracle's
    values in place of the recorded ones (`source: oracle`)."""
    joined = join_student_dataset_in_chunks(samples, logits)
    distill = student.distill
    if distill.soft_label_rows == "teacher_stream":
        teacher = ctx.store.scan_parquet(layout.samples_path("teacher", day), what=f"{TEACHER_SAMPLES} {day}")
        joined = pl.concat([joined, teacher_stream_soft_label_rows(teacher, samples, logits, student.sampling)])
    return oracle_soft_labels(joined) if distill.source == "oracle" else joined


def build_student_dataset(ctx: StageContext, student: StudentConfig, partition: date) -> DatasetManifest:
    """Join each trained day's student rows with the partition's recorded teacher logits."""
    config, store = ctx.config, ctx.store
    keys = StudentKeys(student.name)
    consumer = f"{keys.dataset} {partition}"
    days = days_of_partition(config.calendar, partition)
    require_files(store, {d: layout.student_samples_path(student.name, d) for d in days}, keys.samples,
                  consumer, "materialize (or backfill) those data partitions first")
    logit_paths = {d: layout.teacher_logits_path(partition, d) for d in days}
    require_files(store, logit_paths, TEACHER_LOGITS, consumer,
                  f"materialize teacher_checkpoint/teacher_logits {partition} first")
    if student.distill.soft_label_rows == "teacher_stream":
        require_files(store, {d: layout.samples_path("teacher", d) for d in days}, TEACHER_SAMPLES, consumer,
                      "materialize (or backfill) those data partitions first")
    logits = {d: store.scan_parquet(path, what=f"teacher_logits {d}") for d, path in logit_paths.items()}
    snapshots = sorted(set(pl.concat([frame.select("teacher_snapshot") for frame in logits.values()])
                           .unique().collect()["teacher_snapshot"].drop_nulls().to_list()))
    require_usable_teacher(SnapshotRegistry(store), snapshots, consumer)
    manifest_path = layout.student_dataset_manifest_path(student.name, partition)
    store.remove(manifest_path)  # until the new manifest is written, no reader takes a half-rewritten partition
    urls: dict[str, str] = {}
    for d in days:
        samples = store.scan_parquet(layout.student_samples_path(student.name, d), what=f"{keys.samples} {d}")
        check_schema(samples, SAMPLE_SCHEMA, table=keys.samples, partition=d.isoformat())
        day_logits = logits[d]
        faults = config.faults
        if faults.drops_logits_on(d):  # drill: records lost between teacher and join
            day_logits = drop_logit_fraction(day_logits.collect(), faults.drop_logit_fraction,
                                             seed=faults.seed + config.calendar.day_index(d)).lazy()
        urls[d.isoformat()] = store.sink_parquet(layout.student_dataset_path(student.name, partition, d),
                                                 _soft_labelled(ctx, student, d, samples, day_logits))
    dataset = pl.concat([store.scan_parquet(layout.student_dataset_path(student.name, partition, d)) for d in days])
    check_schema(dataset, STUDENT_DATASET_SCHEMA, table=keys.dataset, partition=partition.isoformat())
    provenance = Provenance(
        version=snapshot_id(f"{student.name}/dataset", partition, ctx.identity),
        inputs={partition_ref(TEACHER_LOGITS, partition): ",".join(snapshots)},
        teacher_snapshots=snapshots,
    )
    manifest = DatasetManifest(student=student.name, partition=partition, provenance=provenance, days=days,
                               stats=join_stats(dataset), urls=urls)
    store.write_json(manifest_path, manifest.to_json())
    return manifest
