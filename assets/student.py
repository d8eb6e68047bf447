"""Student side: the joined dataset, the distilled student and the no-teacher baseline."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.common import (
    GROUP_STUDENT,
    OWNERS,
    markdown_table,
    mlflow_tags,
    partition_day,
    progress_logger,
    train_stats_metadata,
    train_stats_metrics,
)
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
) -> MaterializeResult:
    config = settings.config()
    day = partition_day(context)
    snapshot = snapshot_id(variant, day, context.run.run_id)
    with tracking.start_run(
        run_name=f"{variant} {day}", tags=mlflow_tags(context, variant, {"student_snapshot": snapshot})
    ) as run:
        run.log_params({"role": variant, "partition": context.partition_key, "profile": config.profile,
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
    return MaterializeResult(
        data_version=DataVersion(result.snapshot_id),
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
        deps=[AssetDep("student_samples", partition_mapping=SAME_DAY),
              AssetDep("teacher_logits", partition_mapping=SAME_DAY)],
        group_name=GROUP_STUDENT,
        kinds={"polars", "parquet"},
        owners=OWNERS,
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
                        store: ArtifactStore) -> MaterializeResult:
        config = settings.config()
        result = build_student_dataset_partition(config, store, partition_day(context))
        stats = result.stats
        verdict = coverage_verdict(config, float(stats["coverage"]))
        if not verdict.passed:
            context.log.warning(f"student_dataset {context.partition_key}: {verdict.message}")
        context.log.info(f"student_dataset {context.partition_key}: {stats}")
        summary = markdown_table(
            [
                ("rows", f"{stats['n_rows']:,}"),
                ("with teacher logit", f"{stats['n_matched']:,}"),
                ("join coverage", fmt(stats["coverage"])),
                ("label rate (matched)", fmt(stats["matched_label_rate"])),
                ("label rate (unmatched)", fmt(stats["unmatched_label_rate"])),
                ("teacher snapshots", ", ".join(f"`{s}`" for s in result.teacher_snapshots) or "—"),
            ],
            header=(f"student_dataset {context.partition_key}", ""),
        )
        check = AssetCheckResult(
            check_name="join_coverage",
            passed=verdict.passed,
            severity=AssetCheckSeverity.ERROR if verdict.blocking else AssetCheckSeverity.WARN,
            description=verdict.message,
            metadata={"coverage": float(stats["coverage"]), "warn_below": config.join.coverage_warn,
                      "fail_below": config.join.coverage_floor, "matched_rows": stats["n_matched"],
                      "rows": stats["n_rows"]},
        )
        return MaterializeResult(
            check_results=[check],
            data_version=DataVersion(",".join(result.teacher_snapshots) or "no-teacher"),
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

    @asset(
        name="student_checkpoint",
        partitions_def=partitions.training,
        deps=[AssetDep("student_dataset", partition_mapping=SAME_DAY),
              AssetDep("student_checkpoint", partition_mapping=PREVIOUS_DAY)],
        group_name=GROUP_STUDENT,
        kinds={"torch", "mlflow"},
        owners=OWNERS,
        description=(
            "The distilled student: shared backbone, main tower (task loss, the serving model) and "
            "auxiliary tower (task + α·distill). Batch phase first, then one partition a day continuing "
            "from the previous day's checkpoint."
        ),
    )
    def student_checkpoint(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStore,
                           tracking: MlflowTracking, data_source: RecDataSource) -> MaterializeResult:
        return _train_student_asset(context, "student", settings, store, tracking, data_source)

    @asset(
        name="student_baseline_checkpoint",
        partitions_def=partitions.training,
        deps=[AssetDep("student_samples", partition_mapping=SAME_DAY),
              AssetDep("student_baseline_checkpoint", partition_mapping=PREVIOUS_DAY)],
        group_name=GROUP_STUDENT,
        kinds={"torch", "mlflow"},
        owners=OWNERS,
        description=(
            "The same student architecture and data with no teacher signal: the P_S_raw reference that "
            "teacher gain and distillation gain are measured against."
        ),
    )
    def student_baseline_checkpoint(context: AssetExecutionContext, settings: PipelineSettings,
                                    store: ArtifactStore, tracking: MlflowTracking,
                                    data_source: RecDataSource) -> MaterializeResult:
        return _train_student_asset(context, "student_baseline", settings, store, tracking, data_source)

    return [student_dataset, student_checkpoint, student_baseline_checkpoint]
