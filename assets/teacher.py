"""Teacher training: checkpoint and the logits recorded in the same training forward pass (built once,
read by every student)."""

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    MetadataValue,
    PipesSubprocessClient,
    multi_asset,
)

from assets.common import (
    OWNERS,
    SINGLE_RUN,
    TRAINING_POOL,
    CheckOutcome,
    PartitionOutcome,
    RangeMaterializer,
    asset_deps,
    asset_key,
    markdown_table,
    mlflow_tags,
    provenance_metadata,
    run_days,
    stage_context,
    train_stats_metadata,
    train_stats_metrics,
)
from recdistill_dagster.code_versions import code_version
from recdistill_dagster.ddp import torchrun_command
from recdistill_dagster.graph import GROUP_TEACHER, TEACHER_CHECKPOINT, TEACHER_HEALTH_CHECK, TEACHER_LOGITS, AssetGraph
from recdistill_dagster.partitions import PipelinePartitions
from recdistill_dagster.report.text import fmt
from recdistill_dagster.stages.chain import snapshot_id
from recdistill_dagster.stages.context import RunIdentity, StageContext
from recdistill_dagster.stages.distributed import finish_teacher_job, teacher_job
from recdistill_dagster.stages.teacher import TEACHER, TeacherResult, plan_teacher_partition, train_teacher_partition
from resources import ArtifactStoreResource, MlflowTracking, PipelineSettings, RecDataSource

STAGE = "recdistill_dagster.stages.teacher"


def build_teacher_assets(graph: AssetGraph, partitions: PipelinePartitions) -> list[Any]:
    specs = [
        AssetSpec(
            asset_key(TEACHER_CHECKPOINT),
            description=(
                "The large teacher (token-mixing backbone + long-sequence encoder). The first partition is the batch "
                "phase over the historical window; every later day continues from the previous day's snapshot. Each "
                "materialization is a new teacher snapshot id."
            ),
            group_name=GROUP_TEACHER, kinds={"torch", "mlflow"}, owners=OWNERS,
            tags={"recdistill/artifact": "checkpoint"}, code_version=code_version(STAGE),
            deps=asset_deps(graph, TEACHER_CHECKPOINT),
        ),
        AssetSpec(
            asset_key(TEACHER_LOGITS),
            description=(
                "Raw teacher logits recorded in the teacher's own training forward pass (one per trained sample, with "
                "snapshot id and step); never a second scoring pass over training data. Every student reads them."
            ),
            group_name=GROUP_TEACHER, kinds={"polars", "parquet"}, owners=OWNERS,
            tags={"recdistill/artifact": "teacher-signal"}, code_version=code_version(STAGE),
            deps=asset_deps(graph, TEACHER_LOGITS),
        ),
    ]

    @multi_asset(
        name="teacher_training",
        specs=specs,
        check_specs=[AssetCheckSpec(
            TEACHER_HEALTH_CHECK, asset=asset_key(TEACHER_CHECKPOINT), blocking=True,
            description=(
                "Is this teacher snapshot fit to teach? Fails on NaN/inf logits, a held-out AUC drop against the last "
                "good snapshot beyond health.max_auc_drop, calibration drift of the debiased prediction, or a shifted "
                "logit distribution. A failure stops the day's student side; the rollback sensor then retrains from "
                "the last good snapshot."
            ),
        )],
        partitions_def=partitions.training,
        backfill_policy=SINGLE_RUN,
        pool=TRAINING_POOL,
        can_subset=True,  # only to make the check output optional in range runs; run_days refuses a part
        description="Train the teacher on one partition (or a range, in date order), recording logits as it trains.",
    )
    def teacher_training(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStoreResource,
                         tracking: MlflowTracking, data_source: RecDataSource, pipes: PipesSubprocessClient) -> Any:
        materializer = RangeMaterializer(context, [TEACHER_CHECKPOINT, TEACHER_LOGITS],
                                         {TEACHER_CHECKPOINT: [TEACHER_HEALTH_CHECK]})

        def train_day(day: date) -> list[PartitionOutcome]:
            snapshot = snapshot_id(TEACHER.role, day, RunIdentity(context.run.run_id))
            with tracking.start_run(
                run_name=f"teacher {day}", tags=mlflow_tags(context, "teacher", {"teacher_snapshot": snapshot}, day)
            ) as run:
                ctx = stage_context(context, settings, store, data_source, run.run_id, f"teacher {day}")
                config = ctx.config
                run.log_params({"role": "teacher", "partition": day.isoformat(), "profile": config.profile,
                                "teacher": config.teacher.model_dump(mode="json"),
                                "sampling": config.sampling.teacher.model_dump(mode="json"),
                                "data": config.data.model_dump(mode="json")})
                if config.runtime.distributed.nproc_per_node > 1:
                    result = _train_distributed(context, ctx, pipes, day)
                else:
                    result = train_teacher_partition(ctx, day)
                if result.fault_skipped:
                    context.log.warning(result.fault_skipped)
                run.log_step_history(result.stats.history)
                run.log_metrics({**train_stats_metrics(result.stats), "logit_mean": result.logit_mean,
                                 "logit_std": result.logit_std, "n_parameters": result.n_parameters,
                                 **{f"health_{k}": v for k, v in result.health.metrics.items()
                                    if isinstance(v, int | float) and v == v}})
                run.client.set_tag(run.run_id, "teacher_health", "passed" if result.health.passed else "failed")
                run.log_json("checkpoint_meta.json", result.meta)
            if not result.health.passed:
                context.log.error(f"teacher {day}: snapshot {result.snapshot_id} is {result.health.description}")
            return _outcomes(context, result, config.teacher.record_epoch, run.run_id)

        yield from run_days(context, materializer, train_day)

    return [teacher_training]


def _train_distributed(context: AssetExecutionContext, ctx: StageContext, pipes: PipesSubprocessClient,
                       day: date) -> TeacherResult:
    """The partition under `torchrun` (DDP, `runtime.distributed`), launched through Dagster Pipes: rank 0's
    progress reaches this run's log; the outputs are then finished here exactly as an in-process run's."""
    plan = plan_teacher_partition(ctx, day)
    nproc = ctx.config.runtime.distributed.nproc_per_node
    with tempfile.TemporaryDirectory(prefix="recdistill-ddp-") as folder:
        job, job_path = teacher_job(ctx, plan, Path(folder))
        context.log.info(f"teacher {day}: torchrun with {nproc} ranks ({job.days[0].day}..{job.days[-1].day})")
        pipes.run(command=torchrun_command(job_path, nproc), context=context)
        return finish_teacher_job(ctx, plan, job)


def _outcomes(context: AssetExecutionContext, result: TeacherResult, record_epoch: str,
              mlflow_run_id: str) -> list[PartitionOutcome]:
    day, health = result.partition, result.health
    lineage = {
        **provenance_metadata(result.provenance),
        "teacher_snapshot": result.snapshot_id,
        "parent_snapshot": result.parent_snapshot or "none (batch phase)",
        "rolled_back_over": MetadataValue.json(result.rolled_back_over),
        "attempt": result.attempt,
        "phase": result.phase,
        "trained_days": ", ".join(d.isoformat() for d in result.days),
        "dagster_run_id": context.run.run_id,
        "mlflow_run_id": mlflow_run_id,
    }
    rows = [
        ("snapshot", f"`{result.snapshot_id}` (attempt {result.attempt})"),
        ("continues from", f"`{result.parent_snapshot}`" if result.parent_snapshot else "— (batch phase)"),
        ("health", health.description),
        ("days", lineage["trained_days"]),
        ("samples / steps", f"{result.stats.samples:,} / {result.stats.steps:,}"),
        ("throughput", f"{result.stats.samples_per_second:,.0f} samples/s"),
        ("mean loss", fmt(result.stats.mean_loss)),
        ("parameters", f"{result.n_parameters:,}"),
    ]
    if result.rolled_back_over:
        rows.append(("rolled back over", ", ".join(f"`{s}`" for s in result.rolled_back_over)))
    if result.fault:
        rows.append(("injected fault", result.fault))
    if result.fault_skipped:
        rows.append(("fault drill", "skipped on this attempt"))
    if result.identical_to:
        rows.append(("identical to", f"`{result.identical_to}` (same weights checksum)"))
    health_metadata = {k: v for k, v in health.metrics.items() if v is not None}
    checkpoint = PartitionOutcome(
        asset_key=TEACHER_CHECKPOINT,
        day=day,
        data_version=result.snapshot_id,
        metadata={
            **lineage,
            **train_stats_metadata(result.stats),
            "n_parameters": result.n_parameters,
            "global_step": result.meta["global_step"],
            "health": "passed" if health.passed else "failed",
            "health_metrics": MetadataValue.json(health_metadata),
            "injected_fault": result.fault,
            "path": MetadataValue.path(result.checkpoint_url),
            "summary": MetadataValue.md(markdown_table(rows, header=(f"teacher {day}", ""))),
        },
        checks=[CheckOutcome(TEACHER_HEALTH_CHECK, health.passed, blocking=not health.passed,
                             description=health.description,
                             metadata={**health_metadata, "teacher_snapshot": result.snapshot_id})],
    )
    logits = PartitionOutcome(
        asset_key=TEACHER_LOGITS,
        day=day,
        data_version=result.snapshot_id,
        metadata={
            **lineage,
            "dagster/row_count": result.n_logits,
            "logit_mean": MetadataValue.float(result.logit_mean),
            "logit_std": MetadataValue.float(result.logit_std),
            "record_epoch": record_epoch,
            "files": MetadataValue.json(result.logit_urls),
            "summary": MetadataValue.md(markdown_table(
                [("logits", f"{result.n_logits:,}"), ("snapshot", f"`{result.snapshot_id}`"),
                 ("mean ± std", f"{result.logit_mean:.3f} ± {result.logit_std:.3f}")]
                + [(f"file {d}", url) for d, url in result.logit_urls.items()],
                header=(f"teacher_logits {day}", ""),
            )),
        },
    )
    return [checkpoint, logits]
