"""Teacher training: checkpoint and the logits recorded in the same training forward pass."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from assets.common import (
    GROUP_TEACHER,
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
from recdistill_dagster.steps import RunIdentity, snapshot_id, train_teacher_partition
from resources import ArtifactStore, MlflowTracking, PipelineSettings, RecDataSource

TEACHER_DEPS = [
    AssetDep("teacher_samples", partition_mapping=SAME_DAY),
    AssetDep("teacher_checkpoint", partition_mapping=PREVIOUS_DAY),
]


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
            deps=TEACHER_DEPS,
        ),
    ]

    @multi_asset(
        name="teacher_training",
        specs=specs,
        partitions_def=partitions.training,
        description="Train the teacher on one partition and record its logits as it trains.",
    )
    def teacher_training(
        context: AssetExecutionContext,
        settings: PipelineSettings,
        store: ArtifactStore,
        tracking: MlflowTracking,
        data_source: RecDataSource,
    ):
        config = settings.config()
        day = partition_day(context)
        snapshot = snapshot_id("teacher", day, context.run.run_id)
        with tracking.start_run(
            run_name=f"teacher {day}", tags=mlflow_tags(context, "teacher", {"teacher_snapshot": snapshot})
        ) as run:
            run.log_params({"role": "teacher", "partition": context.partition_key, "profile": config.profile,
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
                             "logit_std": result.logit_std, "n_parameters": result.n_parameters})
            run.log_json("checkpoint_meta.json", result.meta)
        lineage = {
            "teacher_snapshot": result.snapshot_id,
            "parent_snapshot": result.parent_snapshot or "none (batch phase)",
            "phase": result.phase,
            "trained_days": ", ".join(d.isoformat() for d in result.days),
            "dagster_run_id": context.run.run_id,
            "mlflow_run_id": run.run_id,
        }
        summary = markdown_table(
            [
                ("snapshot", f"`{result.snapshot_id}`"),
                ("continues from", f"`{result.parent_snapshot}`" if result.parent_snapshot else "— (batch phase)"),
                ("days", lineage["trained_days"]),
                ("samples / steps", f"{result.stats.samples:,} / {result.stats.steps:,}"),
                ("throughput", f"{result.stats.samples_per_second:,.0f} samples/s"),
                ("mean loss", fmt(result.stats.mean_loss)),
                ("parameters", f"{result.n_parameters:,}"),
            ],
            header=(f"teacher {day}", ""),
        )
        yield MaterializeResult(
            asset_key="teacher_checkpoint",
            data_version=DataVersion(result.snapshot_id),
            metadata={
                **lineage,
                **train_stats_metadata(result.stats),
                "n_parameters": result.n_parameters,
                "global_step": result.meta["global_step"],
                "path": MetadataValue.path(result.checkpoint_url),
                "summary": MetadataValue.md(summary),
            },
        )
        yield MaterializeResult(
            asset_key="teacher_logits",
            data_version=DataVersion(result.snapshot_id),
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

    return [teacher_training]
