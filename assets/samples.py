"""The day's sample streams: the unsampled evaluation log, the teacher's stream, each student's stream."""

from datetime import date
from typing import Any

from dagster import AssetExecutionContext, AssetSpec, MetadataValue, multi_asset

from assets.common import (
    CHAIN_POOL,
    OWNERS,
    SINGLE_RUN,
    PartitionOutcome,
    RangeMaterializer,
    asset_key,
    markdown_table,
    run_days,
    stage_context,
)
from recdistill_dagster.code_versions import code_version
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.graph import EVAL_SAMPLES, GROUP_DATA, TEACHER_SAMPLES, AssetGraph
from recdistill_dagster.partitions import PipelinePartitions
from recdistill_dagster.report.text import fmt
from recdistill_dagster.stages.samples import EVAL, TEACHER, materialize_sample_streams
from resources import ArtifactStoreResource, PipelineSettings, RecDataSource


def _streams(config: PipelineConfig, graph: AssetGraph) -> dict[str, tuple[str, str]]:
    """stream → (asset key, description)."""
    streams = {
        EVAL: (EVAL_SAMPLES, "The day's full, unsampled impression log. Progressive validation scores every "
                             "model on it."),
        TEACHER: (TEACHER_SAMPLES, "The teacher's training stream for the day: positives kept by traffic source "
                                   f"and {config.sampling.teacher.negative_keep:.0%} of the negatives (more data than "
                                   "any student's). Every row carries its sampling parameters."),
    }
    for student in config.active_students:
        streams[student.name] = (graph.student(student.name).samples, (
            f"The {student.role} student {student.name!r}'s training stream: {student.sampling.negative_keep:.0%} of "
            "the negatives, a subset of the teacher's stream. Every row carries its sampling parameters."))
    return streams


def build_sample_assets(config: PipelineConfig, graph: AssetGraph, partitions: PipelinePartitions) -> list[Any]:
    streams = _streams(config, graph)
    specs = [
        AssetSpec(asset_key(key), description=description, group_name=GROUP_DATA, kinds={"polars", "parquet"},
                  owners=OWNERS,
                  tags={"stream": stream, "recdistill/artifact": "samples"},
                  code_version=code_version("recdistill_dagster.stages.samples"))
        for stream, (key, description) in streams.items()
    ]

    @multi_asset(
        name="sample_streams",
        specs=specs,
        partitions_def=partitions.data,
        backfill_policy=SINGLE_RUN,
        pool=CHAIN_POOL,  # the training runs read these files: never rewritten while one runs
        description="Generate (or read) the day's impressions and write the evaluation, teacher and student streams.",
    )
    def sample_streams(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStoreResource,
                       data_source: RecDataSource) -> Any:
        ctx = stage_context(context, settings, store, data_source)
        materializer = RangeMaterializer(context, [key for key, _ in streams.values()])

        def streams_day(day: date) -> list[PartitionOutcome]:
            result = materialize_sample_streams(ctx, day)
            context.log.info(f"{day}: rows {({s: v.rows for s, v in result.streams.items()})}, "
                             f"click rate {result.base_rate:.4f}")
            return [_outcome(config, streams[name][0], name, day, result.streams[name].rows,
                             result.streams[name].positives, result.streams[name].url, result.base_rate,
                             result.bayes_auc) for name in streams]

        yield from run_days(context, materializer, streams_day)

    return [sample_streams]


def _outcome(config: PipelineConfig, key: str, stream: str, day: date, rows: int, positives: int, url: str,
             base_rate: float, bayes_auc: float | None) -> PartitionOutcome:
    label_rate = positives / rows if rows else None  # a sparse day can leave a student's sampler nothing
    summary = markdown_table(
        [("rows", f"{rows:,}"), ("positives", f"{positives:,}"), ("label rate", fmt(label_rate)),
         ("unsampled click rate", fmt(base_rate)), ("Bayes-limit AUC (p_true)", fmt(bayes_auc))],
        header=(f"{key} {day}", ""),
    )
    return PartitionOutcome(
        asset_key=key, day=day,
        metadata={
            "dagster/row_count": rows,
            "positives": positives,
            "label_rate": MetadataValue.float(label_rate) if label_rate is not None else None,
            "unsampled_click_rate": MetadataValue.float(base_rate),
            "bayes_auc": MetadataValue.float(bayes_auc) if bayes_auc is not None else None,
            "path": MetadataValue.path(url),
            "stream": stream,
            "data_source": config.data.kind,
            "summary": MetadataValue.md(summary),
        },
    )
