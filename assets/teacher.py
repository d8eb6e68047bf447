"""Teacher training: checkpoint and the logits recorded in the same training forward pass."""

from datetime import date

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    MetadataValue,
    multi_asset,
)

from assets.common import (
    GROUP_TEACHER,
    OWNERS,
    SINGLE_RUN,
    TRAINING_POOL,
    CheckOutcome,
    PartitionOutcome,
    RangeMaterializer,
    markdown_table,
    mlflow_tags,
    progress_logger,
    run_days,
    train_stats_metadata,
    train_stats_metrics,
)
from recdistill_dagster.code_versions import code_version
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.partitions import PREVIOUS_DAY, SAME_DAY, PipelinePartitions
from recdistill_dagster.reporting import fmt
from recdistill_dagster.steps import RunIdentity, snapshot_id, train_teacher_partition
from resources import ArtifactStore, MlflowTracking, PipelineSettings, RecDataSource

TEACHER_DEPS = [
    AssetDep("teacher_samples", partition_mapping=SAME_DAY),
    AssetDep("teacher_checkpoint", partition_mapping=PREVIOUS_DAY),
]
# The logits are an output of the same step as the checkpoint (the step reads the previous day's
# checkpoint once, for both). Declaring that previous-day edge on the logits too made the two keys
# of this non-subsettable multi-asset get different targets in every asset backfill launched from
# the UI, which Dagster refuses ("Targeted subset must match between every key in a non-subsettable
# multi-asset"); a same-day edge is impossible (one partition mapping per upstream key and op).
LOGITS_DEPS = [AssetDep("teacher_samples", partition_mapping=SAME_DAY)]


def build_teacher_assets(partitions: PipelinePartitions) -> list:
    specs = [
        AssetSpec(
            "teacher_checkpoint",
            description=(
                "The large teacher (token-mixing backbone + long-sequence encoder). The first partition is "
                "the batch phase over the historical window; every later day continues from the previous "
                "day's snapshot. Each materialization is a new teacher snapshot id."
            ),
            group_name=GROUP_TEACHER,
            kinds={"torch", "mlflow"},
            owners=OWNERS,
            tags={"recdistill/artifact": "checkpoint"},
            code_version=code_version("teacher"),
            deps=TEACHER_DEPS,
        ),
        AssetSpec(
            "teacher_logits",
            description=(
                "Raw teacher logits recorded in the teacher's own training forward pass (one per trained "
                "sample, with snapshot id and step); never a second scoring pass over training data."
            ),
            group_name=GROUP_TEACHER,
            kinds={"polars", "parquet"},
            owners=OWNERS,
            tags={"recdistill/artifact": "teacher-signal"},
            code_version=code_version("teacher"),
            deps=LOGITS_DEPS,
        ),
    ]

    @multi_asset(
        name="teacher_training",
        specs=specs,
        check_specs=[AssetCheckSpec(
            "teacher_health", asset="teacher_checkpoint", blocking=True,
            description=(
                "Is this teacher snapshot fit to teach? Fails on NaN/inf logits, a held-out AUC drop against "
                "the last good snapshot beyond health.max_auc_drop, calibration drift of the debiased "
                "prediction, or a shifted logit distribution. A failure stops the day's student side; the "
                "rollback sensor then retrains from the last good snapshot."
            ),
        )],
        partitions_def=partitions.training,
        backfill_policy=SINGLE_RUN,
        pool=TRAINING_POOL,
        description="Train the teacher on one partition (or a range, in date order), recording logits as it trains.",
    )
    def teacher_training(
        context: AssetExecutionContext,
        settings: PipelineSettings,
        store: ArtifactStore,
        tracking: MlflowTracking,
        data_source: RecDataSource,
    ):
        config = settings.config()
        materializer = RangeMaterializer(context, ["teacher_checkpoint", "teacher_logits"],
                                         {"teacher_checkpoint": ["teacher_health"]})

        def train_day(day: date) -> list[PartitionOutcome]:
            return _train_teacher_day(context, config, store, tracking, data_source, day)

        yield from run_days(context, materializer, train_day)

    return [teacher_training]


def _train_teacher_day(context: AssetExecutionContext, config: PipelineConfig, store: ArtifactStore,
                       tracking: MlflowTracking, data_source: RecDataSource, day: date) -> list[PartitionOutcome]:
    snapshot = snapshot_id("teacher", day, context.run.run_id)
    with tracking.start_run(
        run_name=f"teacher {day}", tags=mlflow_tags(context, "teacher", {"teacher_snapshot": snapshot}, day)
    ) as run:
        run.log_params({"role": "teacher", "partition": day.isoformat(), "profile": config.profile,
                        "teacher": config.teacher.model_dump(mode="json"),
                        "sampling": config.sampling.teacher.model_dump(mode="json"),
                        "data": config.data.model_dump(mode="json")})
        result = train_teacher_partition(
            config, store, data_source.source().vocab(), day,
            RunIdentity(context.run.run_id, run.run_id),
            progress=progress_logger(context, f"teacher {day}"),
        )
        run.log_step_history(result.stats.history)
        run.log_metrics({**train_stats_metrics(result.stats), "logit_mean": result.logit_mean,
                         "logit_std": result.logit_std, "n_parameters": result.n_parameters,
                         **{f"health_{k}": v for k, v in result.health.metrics.items()
                            if isinstance(v, int | float) and v == v}})
        run.client.set_tag(run.run_id, "teacher_health", "passed" if result.health.passed else "failed")
        run.log_json("checkpoint_meta.json", result.meta)
    health = result.health
    if not health.passed:
        context.log.error(f"teacher {day}: snapshot {result.snapshot_id} is {health.description}")
    lineage = {
        "teacher_snapshot": result.snapshot_id,
        "parent_snapshot": result.parent_snapshot or "none (batch phase)",
        "rolled_back_over": MetadataValue.json(result.rolled_back_over),
        "attempt": result.attempt,
        "phase": result.phase,
        "trained_days": ", ".join(d.isoformat() for d in result.days),
        "dagster_run_id": context.run.run_id,
        "mlflow_run_id": run.run_id,
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
    health_metadata = {k: v for k, v in health.metrics.items() if v is not None}
    checkpoint = PartitionOutcome(
        asset_key="teacher_checkpoint",
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
        checks=[CheckOutcome("teacher_health", health.passed, blocking=not health.passed,
                             description=health.description,
                             metadata={**health_metadata, "teacher_snapshot": result.snapshot_id})],
    )
    logits = PartitionOutcome(
        asset_key="teacher_logits",
        day=day,
        data_version=result.snapshot_id,
        metadata={
            **lineage,
            "dagster/row_count": result.n_logits,
            "logit_mean": MetadataValue.float(result.logit_mean),
            "logit_std": MetadataValue.float(result.logit_std),
            "record_epoch": config.teacher.record_epoch,
            "files": MetadataValue.json(result.logit_urls),
            "summary": MetadataValue.md(
                markdown_table(
                    [("logits", f"{result.n_logits:,}"), ("snapshot", f"`{result.snapshot_id}`"),
                     ("mean ± std", f"{result.logit_mean:.3f} ± {result.logit_std:.3f}")]
                    + [(f"file {d}", url) for d, url in result.logit_urls.items()],
                    header=(f"teacher_logits {day}", ""),
                )
            ),
        },
    )
    return [checkpoint, logits]
