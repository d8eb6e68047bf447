"""One factory, N students: each configured student gets its joined dataset, distilled and baseline
checkpoints and transferability report, under keys prefixed with its name, all reading the one teacher."""

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    MetadataValue,
    PipesSubprocessClient,
    asset,
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
from assets.metadata import interval, models_table, number
from recdistill_dagster import layout
from recdistill_dagster.code_versions import code_version
from recdistill_dagster.config import StudentConfig
from recdistill_dagster.ddp import torchrun_command
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.graph import JOIN_COVERAGE_CHECK, AssetGraph, StudentKeys
from recdistill_dagster.model_registry import (
    CHAMPION_ALIAS,
    SNAPSHOT_TAG,
    PromotionEvidence,
    champion,
    promote_if_better,
    recorded_decision,
    register_version,
    version_of_snapshot,
)
from recdistill_dagster.partitions import PipelinePartitions
from recdistill_dagster.report.models import DISTILLED, RAW, TEACHER
from recdistill_dagster.report.schema import TransferabilityReport
from recdistill_dagster.report.site import publish_report
from recdistill_dagster.report.text import fmt, report_markdown
from recdistill_dagster.stages.chain import snapshot_id
from recdistill_dagster.stages.context import RunIdentity, StageContext
from recdistill_dagster.stages.dataset import DatasetManifest, build_student_dataset, coverage_verdict
from recdistill_dagster.stages.distributed import finish_student_job, student_job
from recdistill_dagster.stages.evaluation import ChampionLoader, ReportResult, evaluate_partition
from recdistill_dagster.stages.promotion import promotion_checks
from recdistill_dagster.stages.student import (
    StudentResult,
    chain_of,
    plan_student_partition,
    serving_example,
    train_student_partition,
)
from resources import ArtifactStoreResource, MlflowTracking, PipelineSettings, RecDataSource

SERVING_INPUTS = ("sparse", "dense", "history")
SERVING_MODEL_TAG = "recdistill.serving_model_uri"  # on the distilled run: its logged main tower


def build_student_assets(students: tuple[StudentConfig, ...], graph: AssetGraph,
                         partitions: PipelinePartitions) -> list[AssetsDefinition]:
    return [definition for student in students for definition in _student_assets(student, graph, partitions)]


def _student_assets(student: StudentConfig, graph: AssetGraph,
                    partitions: PipelinePartitions) -> list[AssetsDefinition]:
    keys = graph.student(student.name)
    common: dict[str, Any] = dict(partitions_def=partitions.training, backfill_policy=SINGLE_RUN, pool=TRAINING_POOL,
                                  group_name=student.name, owners=OWNERS)

    # A multi-asset of one, subsettable, only so that its check output may be left out of range runs (see
    # RangeMaterializer.results); the step and its key stay those of a plain asset.
    @multi_asset(
        name=keys.dataset.replace("/", "__"),
        specs=[AssetSpec(
            asset_key(keys.dataset), deps=asset_deps(graph, keys.dataset), kinds={"polars", "parquet"},
            tags={"recdistill/artifact": "dataset", "recdistill/student": student.name},
            code_version=code_version("recdistill_dagster.stages.dataset"), group_name=student.name, owners=OWNERS,
            description=(f"{student.name}'s sampled rows left-joined with the recorded teacher logits by sample_id. "
                         "Rows without a logit are kept (task loss only); coverage and matched/unmatched label rates "
                         "are reported."),
        )],
        check_specs=[AssetCheckSpec(
            JOIN_COVERAGE_CHECK, asset=asset_key(keys.dataset), blocking=True,
            description="Share of student rows with a teacher logit: warns below join.coverage_warn, fails (and "
                        "blocks the student's training) below join.coverage_floor.",
        )],
        partitions_def=partitions.training, backfill_policy=SINGLE_RUN, pool=TRAINING_POOL, can_subset=True,
    )
    def student_dataset(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStoreResource,
                        data_source: RecDataSource) -> Iterator[Any]:
        ctx = stage_context(context, settings, store, data_source)

        def join_day(day: date) -> list[PartitionOutcome]:
            return [_dataset_outcome(context, ctx, keys, build_student_dataset(ctx, student, day))]

        yield from run_days(context, RangeMaterializer(context, [keys.dataset], {keys.dataset: [JOIN_COVERAGE_CHECK]}),
                            join_day)

    def train(variant: layout.StudentVariant) -> Any:
        key = keys.distilled if variant == "distilled" else keys.baseline

        def train_variant(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStoreResource,
                          tracking: MlflowTracking, data_source: RecDataSource,
                          pipes: PipesSubprocessClient) -> Iterator[Any]:
            def train_day(day: date) -> list[PartitionOutcome]:
                return [_train_day(context, settings, store, tracking, data_source, pipes, student, key, variant,
                                   day)]

            yield from run_days(context, RangeMaterializer(context, [key]), train_day)

        return train_variant

    distilled = asset(
        key=asset_key(keys.distilled), deps=asset_deps(graph, keys.distilled), kinds={"torch", "mlflow"},
        tags={"recdistill/artifact": "checkpoint", "recdistill/student": student.name},
        code_version=code_version("recdistill_dagster.stages.student"),
        description=(f"The distilled {student.role} student {student.name!r}: shared backbone, main tower (task loss, "
                     "the serving model) and auxiliary tower (task + α·distill). Batch phase first, then one "
                     "partition a day continuing from the previous day's checkpoint."),
        **common,
    )(train("distilled"))
    baseline = asset(
        key=asset_key(keys.baseline), deps=asset_deps(graph, keys.baseline), kinds={"torch", "mlflow"},
        tags={"recdistill/artifact": "checkpoint", "recdistill/student": student.name},
        code_version=code_version("recdistill_dagster.stages.student"),
        description=(f"{student.name}'s architecture on its own stream with no teacher signal: the P_S_raw reference "
                     "that the teacher gain and the distillation gain are measured against."),
        **common,
    )(train("baseline"))

    @asset(
        key=asset_key(keys.report), deps=asset_deps(graph, keys.report), kinds={"polars", "mlflow"},
        tags={"recdistill/artifact": "report", "recdistill/student": student.name},
        code_version=code_version("recdistill_dagster.stages.evaluation"),
        description=(f"Progressive validation of {student.name} on the next day's unsampled log: AUC/LogLoss of "
                     "teacher, baseline and distilled student (main and aux tower), the Bayes limit, teacher gain, "
                     "distillation gain and η with paired-bootstrap intervals, for the day and cumulated "
                     "(within-day)."),
        **common,
    )
    def transferability_report(context: AssetExecutionContext, settings: PipelineSettings,
                               store: ArtifactStoreResource, tracking: MlflowTracking,
                               data_source: RecDataSource) -> Iterator[Any]:
        def report_day(day: date) -> list[PartitionOutcome]:
            return [_report_day(context, settings, store, tracking, data_source, student, keys, day)]

        yield from run_days(context, RangeMaterializer(context, [keys.report]), report_day)

    return [student_dataset, distilled, baseline, transferability_report]


def _dataset_outcome(context: AssetExecutionContext, ctx: StageContext, keys: StudentKeys,
                     manifest: DatasetManifest) -> PartitionOutcome:
    stats, day = manifest.stats, manifest.partition
    verdict = coverage_verdict(ctx.config.join, float(stats["coverage"]))
    if not verdict.passed:
        context.log.warning(f"{keys.dataset} {day}: {verdict.message}")
    snapshots = manifest.provenance.teacher_snapshots
    summary = markdown_table(
        [("rows", f"{stats['n_rows']:,}"), ("with teacher logit", f"{stats['n_matched']:,}"),
         ("join coverage", fmt(stats["coverage"])), ("label rate (matched)", fmt(stats["matched_label_rate"])),
         ("label rate (unmatched)", fmt(stats["unmatched_label_rate"])),
         ("soft-label rows of the teacher's stream", f"{stats.get('n_soft_label_rows', 0):,}"),
         ("soft labels from", ctx.config.student(manifest.student).distill.source),
         ("teacher snapshots", ", ".join(f"`{s}`" for s in snapshots) or "—")],
        header=(f"{keys.dataset} {day}", ""),
    )
    check = CheckOutcome(
        JOIN_COVERAGE_CHECK, passed=verdict.passed, blocking=verdict.blocking, description=verdict.message,
        metadata={"coverage": float(stats["coverage"]), "warn_below": ctx.config.join.coverage_warn,
                  "fail_below": ctx.config.join.coverage_floor, "matched_rows": stats["n_matched"],
                  "rows": stats["n_rows"]},
    )
    return PartitionOutcome(
        asset_key=keys.dataset, day=day, data_version=manifest.provenance.version, checks=[check],
        metadata={
            **provenance_metadata(manifest.provenance),
            "dagster/row_count": stats["n_rows"],
            "matched_rows": stats["n_matched"],
            "join_coverage": MetadataValue.float(float(stats["coverage"])),
            "matched_label_rate": stats["matched_label_rate"],
            "unmatched_label_rate": stats["unmatched_label_rate"],
            "soft_label_rows": stats.get("n_soft_label_rows", 0),
            "days": ", ".join(d.isoformat() for d in manifest.days),
            "files": MetadataValue.json(manifest.urls),
            "summary": MetadataValue.md(summary),
        },
    )


def _train_distributed(context: AssetExecutionContext, ctx: StageContext, pipes: PipesSubprocessClient,
                       student: StudentConfig, day: date, variant: layout.StudentVariant) -> StudentResult:
    """The partition under `torchrun` (`runtime.distributed.students`) through Dagster Pipes, finished here."""
    plan = plan_student_partition(ctx, student, day, variant)
    nproc = ctx.config.runtime.distributed.nproc_per_node
    with tempfile.TemporaryDirectory(prefix="recdistill-ddp-") as folder:
        job, job_path = student_job(ctx, student, plan, Path(folder))
        context.log.info(f"{plan.chain.asset} {day}: torchrun with {nproc} ranks")
        pipes.run(command=torchrun_command(job_path, nproc), context=context)
        return finish_student_job(ctx, student, plan, job)


def _train_day(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStoreResource,
               tracking: MlflowTracking, data_source: RecDataSource, pipes: PipesSubprocessClient,
               student: StudentConfig, key: str, variant: layout.StudentVariant, day: date) -> PartitionOutcome:
    role = chain_of(student, variant).role
    snapshot = snapshot_id(role, day, RunIdentity(context.run.run_id))
    with tracking.start_run(run_name=f"{role} {day}", tags=mlflow_tags(
            context, role, {"student_snapshot": snapshot, "recdistill.student": student.name}, day)) as run:
        ctx = stage_context(context, settings, store, data_source, run.run_id, f"{role} {day}")
        run.log_params({"role": role, "partition": day.isoformat(), "profile": ctx.config.profile,
                        "student": student.model_dump(mode="json")})
        distributed = ctx.config.runtime.distributed
        if distributed.students and distributed.nproc_per_node > 1:
            result = _train_distributed(context, ctx, pipes, student, day, variant)
        else:
            result = train_student_partition(ctx, student, day, variant)
        run.client.set_tag(run.run_id, "teacher_snapshots", ",".join(result.provenance.teacher_snapshots) or "none")
        run.log_step_history(result.stats.history)
        run.log_metrics({**train_stats_metrics(result.stats), "n_parameters": result.n_parameters})
        run.log_json("checkpoint_meta.json", result.meta)
        model_uri = onnx_url = None
        if variant == "distilled":
            # Only the main tower serves; it is exported (torch.export pt2, and ONNX), never pickled.
            served = result.model.serving_module(student.sampling).cpu().eval()  # export on CPU
            example = serving_example(ctx, student, result.days[-1])
            model_uri = run.log_serving_model(served, example, SERVING_INPUTS, name=f"{student.name}_main_tower")
            run.client.set_tag(run.run_id, SERVING_MODEL_TAG, model_uri)  # what the report step registers
            onnx_url = result.serving_url
            run.log_bytes(f"{student.name}_main_tower.onnx",
                          ctx.store.read_bytes(layout.student_serving_path(student.name, day), what="ONNX export"),
                          artifact_path="onnx")
    return _student_outcome(context, key, result, run.run_id, model_uri, onnx_url)


def _student_outcome(context: AssetExecutionContext, key: str, result: StudentResult, mlflow_run_id: str,
                     model_uri: str | None, onnx_url: str | None) -> PartitionOutcome:
    stats = result.stats
    rows = [
        ("snapshot", f"`{result.snapshot_id}`"),
        ("continues from", f"`{result.parent_snapshot}`" if result.parent_snapshot else "— (batch phase)"),
        ("days", ", ".join(d.isoformat() for d in result.days)),
        ("distillation", "on" if result.distilled else "off"),
        ("teacher snapshots", ", ".join(f"`{s}`" for s in result.provenance.teacher_snapshots) or "—"),
        ("samples / steps", f"{stats.samples:,} / {stats.steps:,}"),
        ("mean loss", fmt(stats.mean_loss)),
        ("parameters", f"{result.n_parameters:,}"),
    ]
    if result.distilled:
        rows += [("task loss", fmt(stats.task_loss)), ("distill loss", fmt(stats.distill_loss)),
                 ("rows with a teacher logit", fmt(stats.distill_matched_fraction, 3))]
    return PartitionOutcome(
        asset_key=key, day=result.partition, data_version=result.snapshot_id,
        metadata={
            **provenance_metadata(result.provenance),
            "snapshot_id": result.snapshot_id,
            "parent_snapshot": result.parent_snapshot or "none (batch phase)",
            "phase": result.phase,
            "distilled": result.distilled,
            "trained_days": ", ".join(d.isoformat() for d in result.days),
            **train_stats_metadata(stats),
            "task_loss": number(stats.task_loss),
            "distill_loss": number(stats.distill_loss, 6),
            "distill_matched_fraction": number(stats.distill_matched_fraction),
            "n_parameters": result.n_parameters,
            "global_step": result.meta["global_step"],
            "dagster_run_id": context.run.run_id,
            "mlflow_run_id": mlflow_run_id,
            "mlflow_model_uri": model_uri,
            "onnx": MetadataValue.path(onnx_url) if onnx_url else None,
            "path": MetadataValue.path(result.checkpoint_url),
            "summary": MetadataValue.md(markdown_table(rows, header=(f"{key} {result.partition}", ""))),
        },
    )


@dataclass(frozen=True)
class RegistryOutcome:
    name: str
    version: str
    outcome: str
    reason: str


def serving_metrics(report: TransferabilityReport) -> dict[str, float]:
    """ONNX parity and both runtimes' latency/throughput, for the student and the teacher, as MLflow metrics."""
    metrics: dict[str, float] = {}
    for model, export in (("student", report.serving.student), ("teacher", report.serving.teacher)):
        if export is None:
            continue
        metrics[f"{model}_onnx_max_abs_diff"] = export.max_abs_diff
        for runtime, speed in (("torch", export.torch), ("onnxruntime", export.onnxruntime)):
            metrics[f"{model}_{runtime}_latency_ms"] = speed.latency_ms
            metrics[f"{model}_{runtime}_rows_per_s"] = speed.throughput_rows_per_s
    return metrics


def _champion_loader(context: AssetExecutionContext, tracking: MlflowTracking, student: StudentConfig,
                     day: date) -> ChampionLoader:
    """What the report compares the day's distilled student with: the registry's champion, loaded from
    `models:/<name>@champion`, unless the day's version already holds the alias or was decided before."""
    def load(distilled_snapshot: str) -> torch.nn.Module | None:
        client = tracking.client()
        name = tracking.registered_model_name(student.name)
        version = version_of_snapshot(client, name, distilled_snapshot)
        if version is not None and recorded_decision(version) is not None:
            return None
        holder = champion(client, name)
        if holder is None or (version is not None and holder.version == version.version):
            return None
        try:
            return tracking.load_alias(student.name, CHAMPION_ALIAS)
        except Exception as exc:  # e.g. its artifacts are unreachable: the rule then keeps the champion
            context.log.warning(f"{name}: champion v{holder.version} could not be loaded to score it after {day} "
                                f"({type(exc).__name__}: {exc}); the alias stays")
            return None
    return load


def _register_and_promote(context: AssetExecutionContext, ctx: StageContext, tracking: MlflowTracking,
                          student: StudentConfig, day: date, result: ReportResult) -> RegistryOutcome:
    """Register the day's main tower (once per student snapshot) and move `champion` by the rule of
    `model_registry`: the day's checks passed and its AUC is not below the champion's on the same rows
    (scored in the report's pass, `result.champion`)."""
    report = result.report
    client = tracking.client()
    name = tracking.registered_model_name(student.name)
    snapshot = report.snapshots["distilled"]
    version = version_of_snapshot(client, name, snapshot)
    if version is None:
        run_id = report.mlflow_runs.get("distilled")
        model_uri = client.get_run(run_id).data.tags.get(SERVING_MODEL_TAG) if run_id else None
        if not model_uri:
            raise PipelineStepError(f"{student.name} report {day}: the distilled run {run_id} logged no serving "
                                    "model; re-materialize the distilled checkpoint")
        version = register_version(client, name, model_uri, run_id,  # type: ignore[arg-type]
                                   {SNAPSHOT_TAG: snapshot, "partition": day.isoformat()})
    decided = recorded_decision(version)
    if decided is None:
        scored = result.champion
        if scored is not None and scored.error is not None:  # e.g. the configured architecture changed
            context.log.warning(f"{name}: the champion could not be scored on {report.eval_day} ({scored.error}); "
                                "the alias stays")
        reported = report.daily.auc.get(DISTILLED.key)
        distilled_auc = math.nan if reported is None else float(reported)
        measured = math.isfinite(distilled_auc)
        evidence = PromotionEvidence(
            eval_day=date.fromisoformat(report.eval_day), distilled_auc=distilled_auc,
            # An undefined AUC (a one-class evaluation day) is a failed check, never a win against the champion.
            checks={**promotion_checks(ctx, student, day, report.teacher_snapshots_in_student),
                    "evaluation_auc": measured},
            champion_auc=scored.auc if scored is not None else None,
        )
        decided = promote_if_better(client, name, version.version, evidence)
    return RegistryOutcome(name, version.version, decided.outcome, decided.reason)


def _report_day(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStoreResource,
                tracking: MlflowTracking, data_source: RecDataSource, student: StudentConfig, keys: StudentKeys,
                day: date) -> PartitionOutcome:
    ctx = stage_context(context, settings, store, data_source)
    result = evaluate_partition(ctx, student, day, _champion_loader(context, tracking, student, day))
    report = result.report
    page, urls = publish_report(ctx.config, ctx.store, student.name, day)
    tags = {"teacher_snapshot": report.snapshots["teacher"], "student_snapshot": report.snapshots["distilled"],
            "recdistill.student": student.name}
    with tracking.start_run(run_name=f"{student.name} report {day}",
                            tags=mlflow_tags(context, f"{student.name}/report", tags, day)) as run:
        run.log_params({"role": "report", "student": student.name, "partition": day.isoformat(),
                        "profile": ctx.config.profile, "eval_day": report.eval_day,
                        "eval": ctx.config.eval.model_dump(mode="json")})
        for prefix, scope in (("", report.daily), ("cumulative_", report.cumulative)):
            run.log_metrics({f"{prefix}{name}_auc": value for name, value in scope.auc.items()})
            run.log_metrics({f"{prefix}teacher_gain": scope.gains.teacher_gain,
                             f"{prefix}distill_gain": scope.gains.distill_gain, f"{prefix}eta": scope.gains.eta,
                             f"{prefix}n_eval": scope.n_eval})
        run.log_metrics({"serving_student_us": report.serving.student_us,
                         "serving_teacher_us": report.serving.teacher_us, **serving_metrics(report)})
        decision = _register_and_promote(context, ctx, tracking, student, day, result)
        run.log_params({"registry": {"model": decision.name, "version": decision.version,
                                     "outcome": decision.outcome}})
        run.log_json("transferability.json", report.model_dump(mode="json"))
        run.log_bytes("transferability.md", report_markdown(report).encode())
        run.log_bytes("report.html", page.html("../index.html").encode())
        for name, plot in page.plots.items():
            run.log_bytes(f"{name}.png", plot, artifact_path="plots")
    daily, cumulative = report.daily, report.cumulative
    context.log.info(
        f"{keys.report} {day}: teacher {fmt(daily.auc[TEACHER.key])}, raw {fmt(daily.auc[RAW.key])}, distilled "
        f"{fmt(daily.auc[DISTILLED.key])}, eta {fmt(daily.gains.eta, 3)}, cumulated eta {fmt(cumulative.gains.eta, 3)}"
    )
    return PartitionOutcome(
        asset_key=keys.report, day=day, data_version=result.provenance.version,
        metadata={
            **provenance_metadata(result.provenance),
            "eta": number(daily.gains.eta),
            "eta_ci": interval(daily.gains.eta_ci),
            "models": models_table(report),
            "teacher_gain": number(daily.gains.teacher_gain),
            "teacher_gain_ci": interval(daily.gains.teacher_gain_ci),
            "distill_gain": number(daily.gains.distill_gain),
            "distill_gain_ci": interval(daily.gains.distill_gain_ci),
            "cumulative_eta": number(cumulative.gains.eta),
            "cumulative_eta_ci": interval(cumulative.gains.eta_ci),
            "cumulative_teacher_gain": number(cumulative.gains.teacher_gain),
            "cumulative_distill_gain": number(cumulative.gains.distill_gain),
            "n_eval": daily.n_eval,
            "eval_day": report.eval_day,
            "snapshots": MetadataValue.json(report.snapshots),
            "served_parameters": report.parameters.served,
            "serving_us_per_prediction": number(report.serving.student_us, 3),
            "serving": MetadataValue.json(report.serving.model_dump(mode="json")),
            "mlflow_run_id": run.run_id,
            "registered_model": f"{decision.name} v{decision.version}",
            "champion": MetadataValue.md(f"**{decision.outcome}**: {decision.reason}"),
            "report_path": MetadataValue.path(result.report_url),
            "html_report": MetadataValue.path(urls["index.html"]),
            "html_report_of_student": MetadataValue.path(urls["student_index.html"]),
            "html_report_of_day": MetadataValue.path(urls["report.html"]),
            "plots": MetadataValue.json({name: urls[name] for name in page.plots}),
            "mlflow_run": MetadataValue.url(url) if (url := tracking.run_url(run.run_id)) else None,
            "summary": MetadataValue.md(report_markdown(report, page.plots["auc_over_days"])),
        },
    )
