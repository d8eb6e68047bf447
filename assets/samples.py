"""The day's sample streams: unsampled evaluation log, teacher stream, student stream."""

from datetime import date

from dagster import AssetExecutionContext, AssetSpec, MetadataValue, multi_asset

from assets.common import GROUP_DATA, OWNERS, SINGLE_RUN, PartitionOutcome, RangeMaterializer, markdown_table, run_days
from recdistill_dagster.code_versions import code_version
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.partitions import PipelinePartitions
from recdistill_dagster.reporting import fmt
from recdistill_dagster.steps import materialize_sample_streams
from resources import ArtifactStore, PipelineSettings, RecDataSource

STREAMS = ("teacher", "student", "eval")
STREAM_DESCRIPTIONS = {
    "eval": "The day's full, unsampled impression log. Progressive validation scores every model on it.",
    "teacher": "The teacher's training stream for the day: positives kept by traffic source, half of the "
    "negatives (more data than the student's). Every row carries its sampling parameters.",
    "student": "The student's training stream for the day: the same positives, far fewer negatives "
    "(a subset of the teacher's stream). Every row carries its sampling parameters.",
}


def build_sample_assets(partitions: PipelinePartitions) -> list:
    specs = [
        AssetSpec(
            f"{stream}_samples",
            description=STREAM_DESCRIPTIONS[stream],
            group_name=GROUP_DATA,
            kinds={"polars", "parquet"},
            owners=OWNERS,
            tags={"stream": stream, "recdistill/artifact": "samples"},
            code_version=code_version("samples"),
        )
        for stream in STREAMS
    ]

    @multi_asset(
        name="sample_streams",
        specs=specs,
        partitions_def=partitions.data,
        backfill_policy=SINGLE_RUN,
        description="Generate (or read) the day's impressions and write the three sample streams.",
    )
    def sample_streams(
        context: AssetExecutionContext,
        settings: PipelineSettings,
        store: ArtifactStore,
        data_source: RecDataSource,
    ):
        config = settings.config()
        materializer = RangeMaterializer(context, [f"{stream}_samples" for stream in STREAMS])

        def streams_day(day: date) -> list[PartitionOutcome]:
            return _streams_day(context, config, data_source, store, day)

        yield from run_days(context, materializer, streams_day)

    return [sample_streams]


def _streams_day(context: AssetExecutionContext, config: PipelineConfig, data_source: RecDataSource,
                 store: ArtifactStore, day: date) -> list[PartitionOutcome]:
    result = materialize_sample_streams(config, data_source.source(), store, day)
    context.log.info(f"{day}: rows {result.rows}, click rate {result.base_rate:.4f}")
    outcomes = []
    for stream in STREAMS:
        rows = result.rows[stream]
        summary = markdown_table(
            [
                ("rows", f"{rows:,}"),
                ("positives", f"{result.positives[stream]:,}"),
                ("label rate", fmt(result.positives[stream] / rows)),
                ("unsampled click rate", fmt(result.base_rate)),
                ("Bayes-limit AUC (p_true)", fmt(result.bayes_auc)),
            ],
            header=(f"{stream}_samples {day}", ""),
        )
        outcomes.append(PartitionOutcome(
            asset_key=f"{stream}_samples",
            day=day,
            metadata={
                "dagster/row_count": rows,
                "positives": result.positives[stream],
                "label_rate": MetadataValue.float(result.positives[stream] / rows),
                "unsampled_click_rate": MetadataValue.float(result.base_rate),
                "bayes_auc": MetadataValue.float(result.bayes_auc) if result.bayes_auc is not None else None,
                "path": MetadataValue.path(result.urls[stream]),
                "data_source": config.data.kind,
                "summary": MetadataValue.md(summary),
            },
        ))
    return outcomes
