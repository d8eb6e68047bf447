"""Transferability report: progressive validation of teacher, baseline and distilled student."""

from collections.abc import Iterator
from datetime import date
from typing import Any

from dagster import AssetDep, AssetExecutionContext, MetadataValue, asset

from assets.common import (
    GROUP_EVALUATION,
    OWNERS,
    SINGLE_RUN,
    TRAINING_POOL,
    PartitionOutcome,
    RangeMaterializer,
    mlflow_tags,
    run_days,
)
from assets.metadata import interval, models_table, number
from recdistill_dagster import layout
from recdistill_dagster.code_versions import code_version
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.partitions import NEXT_DAY, PREVIOUS_DAY, SAME_DAY, PipelinePartitions
from recdistill_dagster.report_site import publish_report
from recdistill_dagster.reporting import plot_transferability, report_markdown
from recdistill_dagster.steps import evaluate_partition, report_history
from resources import ArtifactStore, MlflowTracking, PipelineSettings, RecDataSource

METRIC_KEYS = ("teacher_auc", "student_raw_auc", "student_distill_auc", "student_aux_auc", "bayes_auc",
               "teacher_gain", "distill_gain", "eta", "n_eval")


def build_evaluation_assets(partitions: PipelinePartitions) -> list:
    @asset(
        name="transferability_report",
        partitions_def=partitions.training,
        deps=[
            AssetDep("teacher_checkpoint", partition_mapping=SAME_DAY),
            AssetDep("student_checkpoint", partition_mapping=SAME_DAY),
            AssetDep("student_baseline_checkpoint", partition_mapping=SAME_DAY),
            AssetDep("eval_samples", partition_mapping=NEXT_DAY),
            AssetDep("transferability_report", partition_mapping=PREVIOUS_DAY),
        ],
        group_name=GROUP_EVALUATION,
        backfill_policy=SINGLE_RUN,
        pool=TRAINING_POOL,
        kinds={"polars", "mlflow"},
        owners=OWNERS,
        tags={"recdistill/artifact": "report"},
        code_version=code_version("report"),
        description=(
            "Progressive validation on the next day's unsampled log: AUC/LogLoss of teacher, baseline and "
            "distilled student (main and aux tower), the Bayes limit, teacher gain, distillation gain and "
            "transferability η with paired-bootstrap 95% intervals, for the day and cumulated."
        ),
    )
    def transferability_report(context: AssetExecutionContext, settings: PipelineSettings,
                               store: ArtifactStore, tracking: MlflowTracking,
                               data_source: RecDataSource) -> Iterator[Any]:
        config = settings.config()

        def report_day(day: date) -> list[PartitionOutcome]:
            return [_report_day(context, config, store, tracking, data_source, day)]

        yield from run_days(context, RangeMaterializer(context, ["transferability_report"]), report_day)

    return [transferability_report]


def _report_day(context: AssetExecutionContext, config: PipelineConfig, store: ArtifactStore,
                tracking: MlflowTracking, data_source: RecDataSource, day: date) -> PartitionOutcome:
    result = evaluate_partition(config, store, data_source.source().vocab(), day)
    report = result.report
    png = plot_transferability(report_history(config, store, day))
    plot_url = store.write_bytes(layout.report_path(day, "transferability.png"), png)
    markdown = report_markdown(report, png)
    snapshot_tags = {"teacher_snapshot": report["snapshots"]["teacher"],
                     "student_snapshot": report["snapshots"]["student"]}
    # The HTML report (day and cumulated plots, images inlined) as of this day, and reports/index.html.
    page, page_urls = publish_report(config, store, day, tracking.client())
    with tracking.start_run(run_name=f"report {day}", tags=mlflow_tags(context, "report", snapshot_tags, day)) as run:
        run.log_params({"role": "report", "partition": day.isoformat(), "profile": config.profile,
                        "eval_day": report["eval_day"], "eval": config.eval.model_dump(mode="json")})
        run.log_metrics({k: report[k] for k in METRIC_KEYS if report.get(k) is not None})
        run.log_metrics({f"cumulative_{k}": report["cumulative"][k] for k in METRIC_KEYS
                         if report["cumulative"].get(k) is not None})
        run.log_json("transferability.json", report)
        run.log_bytes("transferability.png", png)
        run.log_bytes("transferability.md", report_markdown(report).encode())
        run.log_bytes("report.html", page.html.encode())
        for name, plot in page.plots.items():
            run.log_bytes(f"{name}.png", plot, artifact_path="plots")
    context.log.info(
        f"report {day}: teacher {report['teacher_auc']:.4f}, raw {report['student_raw_auc']:.4f}, "
        f"distilled {report['student_distill_auc']:.4f}, eta {report['eta']}, cumulative eta "
        f"{report['cumulative']['eta']}"
    )

    cumulative = report["cumulative"]
    return PartitionOutcome(
        asset_key="transferability_report",
        day=day,
        metadata={
            "eta": number(report["eta"]),
            "eta_ci": interval(report["eta_ci"]),
            "models": models_table(report),
            "teacher_gain": number(report["teacher_gain"]),
            "teacher_gain_ci": interval(report["teacher_gain_ci"]),
            "distill_gain": number(report["distill_gain"]),
            "teacher_auc": number(report["teacher_auc"]),
            "student_raw_auc": number(report["student_raw_auc"]),
            "student_distill_auc": number(report["student_distill_auc"]),
            "student_aux_auc": number(report["student_aux_auc"]),
            "bayes_auc": number(report["bayes_auc"]),
            "cumulative_eta": number(cumulative["eta"]),
            "cumulative_eta_ci": interval(cumulative["eta_ci"]),
            "cumulative_teacher_gain": number(cumulative["teacher_gain"]),
            "n_eval": report["n_eval"],
            "eval_day": report["eval_day"],
            "snapshots": MetadataValue.json(report["snapshots"]),
            "mlflow_run_id": run.run_id,
            "report_path": MetadataValue.path(result.report_url),
            "plot_path": MetadataValue.path(plot_url),
            "html_report": MetadataValue.path(page_urls["index.html"]),
            "html_report_of_day": MetadataValue.path(page_urls["report.html"]),
            "plots": MetadataValue.json({name: page_urls[name] for name in page.plots}),
            "mlflow_run": MetadataValue.url(url) if (url := tracking.run_url(run.run_id)) else None,
            "summary": MetadataValue.md(markdown),
        },
    )

