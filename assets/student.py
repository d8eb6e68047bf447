"""Student side: the joined dataset, the distilled student and the no-teacher baseline."""

from collections.abc import Iterator
from datetime import date
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    MetadataValue,
    asset,
)

from assets.common import (
    GROUP_STUDENT,
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
from recdistill_dagster.steps import (
    RunIdentity,
    StudentVariant,
    build_student_dataset_partition,
    coverage_verdict,
    serving_example,
    snapshot_id,
    train_student_partition,
)
from resources import ArtifactStore, MlflowTracking, PipelineSettings, RecDataSource

SERVING_INPUTS = ("sparse", "dense", "history")


def _train_student_asset(
    context: AssetExecutionContext,
    variant: StudentVariant,
    settings: PipelineSettings,
    store: ArtifactStore,
    tracking: MlflowTracking,
    data_source: RecDataSource,
) -> Iterator[Any]:
    config = settings.config()

    def train_day(day: date) -> list[PartitionOutcome]:
        return [_train_student_day(context, config, variant, store, tracking, data_source, day)]

    yield from run_days(context, RangeMaterializer(context, [context.assets_def.key.path[-1]]), train_day)


def _train_student_day(context: AssetExecutionContext, config: PipelineConfig, variant: StudentVariant,
                       store: ArtifactStore, tracking: MlflowTracking, data_source: RecDataSource,
                       day: date) -> PartitionOutcome:
    snapshot = snapshot_id(variant, day, context.run.run_id)
    with tracking.start_run(
        run_name=f"{variant} {day}", tags=mlflow_tags(context, variant, {"student_snapshot": snapshot}, day)
    ) as run:
        run.log_params({"role": variant, "partition": day.isoformat(), "profile": config.profile,
                        "student": config.student.model_dump(mode="json"),
                        "sampling": config.sampling.student.model_dump(mode="json")})
        result = train_student_partition(
            config, store, data_source.source().vocab(), day, variant,
            RunIdentity(context.run.run_id, run.run_id),
            progress=progress_logger(context, f"{variant} {day}"),
        )
        run.client.set_tag(run.run_id, "teacher_snapshots", ",".join(result.teacher_snapshots) or "none")
        run.log_step_history(result.stats.history)
        run.log_metrics({**train_stats_metrics(result.stats), "n_parameters": result.n_parameters})
        run.log_json("checkpoint_meta.json", result.meta)
        model_uri = None
        if variant == "student":
            # Only the main tower serves; it is exported (torch.export), never pickled.
            model_uri = run.log_serving_model(
                result.model.serving_module(config.sampling.student).cpu().eval(),  # export on CPU
                serving_example(config, store, result.days[-1]),
                SERVING_INPUTS,
                name="student_main_tower",
            )
    stats = result.stats
    rows = [
        ("snapshot", f"`{result.snapshot_id}`"),
        ("continues from", f"`{result.parent_snapshot}`" if result.parent_snapshot else "— (batch phase)"),
        ("days", ", ".join(d.isoformat() for d in result.days)),
        ("distillation", "on" if result.distilled else "off"),
        ("teacher snapshots", ", ".join(f"`{s}`" for s in result.teacher_snapshots) or "—"),
        ("samples / steps", f"{stats.samples:,} / {stats.steps:,}"),
        ("mean loss", fmt(stats.mean_loss)),
        ("parameters", f"{result.n_parameters:,}"),
    ]
    if result.distilled:
        rows += [("task loss", fmt(stats.task_loss)), ("distill loss", fmt(stats.distill_loss)),
                 ("rows with a teacher logit", fmt(stats.distill_matched_fraction, 3))]
    return PartitionOutcome(
        asset_key=context.assets_def.key.path[-1],
        day=day,
        data_version=result.snapshot_id,
        metadata={
            "snapshot_id": result.snapshot_id,
            "parent_snapshot": result.parent_snapshot or "none (batch phase)",
            "phase": result.phase,
            "distilled": result.distilled,
            "teacher_snapshots": MetadataValue.json(result.teacher_snapshots),
            "trained_days": ", ".join(d.isoformat() for d in result.days),
            **train_stats_metadata(stats),
            "task_loss": MetadataValue.float(float(stats.task_loss)) if stats.task_loss is not None else None,
            "distill_loss": MetadataValue.float(float(stats.distill_loss)) if stats.distill_loss is not None else None,
            "distill_matched_fraction": (MetadataValue.float(stats.distill_matched_fraction)
                                         if stats.distill_matched_fraction is not None else None),
            "n_parameters": result.n_parameters,
            "global_step": result.meta["global_step"],
            "dagster_run_id": context.run.run_id,
            "mlflow_run_id": run.run_id,
            "mlflow_model_uri": model_uri,
            "path": MetadataValue.path(result.checkpoint_url),
            "summary": MetadataValue.md(markdown_table(rows, header=(f"{variant} {day}", ""))),
        },
    )


def build_student_assets(partitions: PipelinePartitions) -> list:
    @asset(
        name="student_dataset",
        partitions_def=partitions.training,
        backfill_policy=SINGLE_RUN,
        pool=TRAINING_POOL,
        deps=[AssetDep("student_samples", partition_mapping=SAME_DAY),
              AssetDep("teacher_logits", partition_mapping=SAME_DAY)],
        group_name=GROUP_STUDENT,
        kinds={"polars", "parquet"},
        owners=OWNERS,
        tags={"recdistill/artifact": "dataset"},
        code_version=code_version("student_dataset"),
        check_specs=[AssetCheckSpec(
            "join_coverage", asset="student_dataset", blocking=True,
            description="Share of student rows with a teacher logit: warns below join.coverage_warn, fails "
                        "(and blocks the student's training) below join.coverage_floor.",
        )],
        description=(
            "The student's sampled rows left-joined with the recorded teacher logits by sample_id. Rows "
            "without a logit are kept (task loss only); coverage and matched/unmatched label rates are "
            "reported."
        ),
    )
    def student_dataset(context: AssetExecutionContext, settings: PipelineSettings,
                        store: ArtifactStore) -> Iterator[Any]:
        config = settings.config()

        def join_day(day: date) -> list[PartitionOutcome]:
            return [_student_dataset_day(context, config, store, day)]

        materializer = RangeMaterializer(context, ["student_dataset"], {"student_dataset": ["join_coverage"]})
        yield from run_days(context, materializer, join_day)

    @asset(
        name="student_checkpoint",
        partitions_def=partitions.training,
        backfill_policy=SINGLE_RUN,
        pool=TRAINING_POOL,
        deps=[AssetDep("student_dataset", partition_mapping=SAME_DAY),
              AssetDep("student_checkpoint", partition_mapping=PREVIOUS_DAY)],
        group_name=GROUP_STUDENT,
        kinds={"torch", "mlflow"},
        owners=OWNERS,
        tags={"recdistill/artifact": "checkpoint"},
        code_version=code_version("student"),
        description=(
            "The distilled student: shared backbone, main tower (task loss, the serving model) and "
            "auxiliary tower (task + α·distill). Batch phase first, then one partition a day continuing "
            "from the previous day's checkpoint."
        ),
    )
    def student_checkpoint(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStore,
                           tracking: MlflowTracking, data_source: RecDataSource) -> Iterator[Any]:
        yield from _train_student_asset(context, "student", settings, store, tracking, data_source)

    @asset(
        name="student_baseline_checkpoint",
        partitions_def=partitions.training,
        backfill_policy=SINGLE_RUN,
        pool=TRAINING_POOL,
        deps=[AssetDep("student_samples", partition_mapping=SAME_DAY),
              AssetDep("student_baseline_checkpoint", partition_mapping=PREVIOUS_DAY)],
        group_name=GROUP_STUDENT,
        kinds={"torch", "mlflow"},
        owners=OWNERS,
        tags={"recdistill/artifact": "checkpoint"},
        code_version=code_version("student"),
        description=(
            "The same student architecture and data with no teacher signal: the P_S_raw reference that "
            "teacher gain and distillation gain are measured against."
        ),
    )
    def student_baseline_checkpoint(context: AssetExecutionContext, settings: PipelineSettings,
                                    store: ArtifactStore, tracking: MlflowTracking,
                                    data_source: RecDataSource) -> Iterator[Any]:
        yield from _train_student_asset(context, "student_baseline", settings, store, tracking, data_source)

    return [student_dataset, student_checkpoint, student_baseline_checkpoint]


def _student_dataset_day(context: AssetExecutionContext, config: PipelineConfig, store: ArtifactStore,
                         day: date) -> PartitionOutcome:
    result = build_student_dataset_partition(config, store, day)
    stats = result.stats
    verdict = coverage_verdict(config, float(stats["coverage"]))
    if not verdict.passed:
        context.log.warning(f"student_dataset {day}: {verdict.message}")
    context.log.info(f"student_dataset {day}: {stats}")
    summary = markdown_table(
        [
            ("rows", f"{stats['n_rows']:,}"),
            ("with teacher logit", f"{stats['n_matched']:,}"),
            ("join coverage", fmt(stats["coverage"])),
            ("label rate (matched)", fmt(stats["matched_label_rate"])),
            ("label rate (unmatched)", fmt(stats["unmatched_label_rate"])),
            ("teacher snapshots", ", ".join(f"`{s}`" for s in result.teacher_snapshots) or "—"),
        ],
        header=(f"student_dataset {day}", ""),
    )
    check = CheckOutcome(
        "join_coverage", passed=verdict.passed, blocking=verdict.blocking, description=verdict.message,
        metadata={"coverage": float(stats["coverage"]), "warn_below": config.join.coverage_warn,
                  "fail_below": config.join.coverage_floor, "matched_rows": stats["n_matched"],
                  "rows": stats["n_rows"]},
    )
    return PartitionOutcome(
        asset_key="student_dataset",
        day=day,
        data_version=",".join(result.teacher_snapshots) or "no-teacher",
        checks=[check],
        metadata={
            "dagster/row_count": stats["n_rows"],
            "matched_rows": stats["n_matched"],
            "join_coverage": MetadataValue.float(float(stats["coverage"])),
            "matched_label_rate": stats["matched_label_rate"],
            "unmatched_label_rate": stats["unmatched_label_rate"],
            "teacher_snapshots": MetadataValue.json(result.teacher_snapshots),
            "days": ", ".join(d.isoformat() for d in result.days),
            "files": MetadataValue.json(result.urls),
            "summary": MetadataValue.md(summary),
        },
    )
