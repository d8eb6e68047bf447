"""Small helpers shared by the asset definitions: the graph's deps, stage contexts, ranges of days,
MLflow tags, progress and metadata."""

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    BackfillPolicy,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
)

from models.training import TrainStats
from recdistill_dagster.graph import AssetGraph
from recdistill_dagster.partitions import PARTITION_MAPPINGS, parse_day
from recdistill_dagster.progress import emit
from recdistill_dagster.stages.chain import Provenance
from recdistill_dagster.stages.context import RunIdentity, StageContext
from recdistill_dagster.writer import hold_chain_in_step
from resources import ArtifactStoreResource, PipelineSettings, RecDataSource

OWNERS = ["team:ml-platform"]


# One run materializes a whole range of days (in date order, inside the asset), so a backfill of
# the self-dependent chain neither races nor advances one day per daemon tick.
SINGLE_RUN = BackfillPolicy.single_run()
# Every asset of the chain (sample streams included) claims this pool: with `granularity: run` in
# dagster.yaml the run queue launches no run of the chain while another one is in progress. The queue
# holds back queued runs only; every step also takes the chain lock (`recdistill_dagster.writer`), which
# holds in-process runs too.
CHAIN_POOL = "recdistill_chain"
TRAINING_POOL = CHAIN_POOL  # the name the training assets import


def asset_key(key: str) -> AssetKey:
    """A key of the asset graph (`ranker/student_checkpoint`) as Dagster's AssetKey."""
    return AssetKey.from_user_string(key)


def asset_deps(graph: AssetGraph, key: str) -> list[AssetDep]:
    """The node's declared upstream edges, with their partition mappings: the graph decides, not the asset."""
    return [AssetDep(asset_key(edge.upstream), partition_mapping=PARTITION_MAPPINGS[edge.mapping])
            for edge in graph.node(key).upstream if edge.declared]


def stage_context(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStoreResource,
                  data_source: RecDataSource, tracking_run_id: str | None = None,
                  progress_label: str | None = None) -> StageContext:
    """The stage functions' one argument, for this run (and this MLflow run, when there is one)."""
    config = settings.config()
    return StageContext(
        config=config, store=store.open(), source=data_source.source(config),
        identity=RunIdentity(context.run.run_id, tracking_run_id),
        progress=progress_logger(context, progress_label) if progress_label else None,
    )


def provenance_metadata(provenance: Provenance) -> dict[str, Any]:
    """What the rollback planner and the lineage audit read back from every training materialization."""
    return {
        "version": provenance.version,
        "inputs": MetadataValue.json(provenance.inputs),
        "teacher_snapshots": MetadataValue.json(provenance.teacher_snapshots),
    }


def partition_days(context: AssetExecutionContext) -> list[date]:
    """The run's days in date order: one for a daily run, several for a single-run backfill."""
    return sorted(parse_day(key) for key in context.partition_keys)


@dataclass
class CheckOutcome:
    check_name: str
    passed: bool
    blocking: bool  # a failure that must stop the downstream assets
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class PartitionOutcome:
    asset_key: str
    day: date
    metadata: dict[str, Any]
    data_version: str | None = None
    checks: list[CheckOutcome] = field(default_factory=list)


class RangeMaterializer:
    """Per-partition results of an asset step that covers one day or a range of days.

    Days are processed in order and recorded as they finish. On success, `results()` yields one
    `MaterializeResult` per asset with each day's own metadata (and check results). When a day
    fails, or a blocking check fails, `stop()` records the days finished so far (materializations
    and check evaluations, partition by partition) and ends the step, so nothing done is lost from
    the event log and nothing downstream runs on the bad day.
    """

    def __init__(self, context: AssetExecutionContext, asset_keys: list[str],
                 check_names: Mapping[str, list[str]] | None = None) -> None:
        self.context = context
        self.asset_keys = asset_keys
        self.check_names = dict(check_names or {})
        self.outcomes: list[PartitionOutcome] = []

    def add(self, outcome: PartitionOutcome) -> None:
        self.outcomes.append(outcome)

    def blocking_failures(self) -> list[str]:
        return [f"{o.asset_key} {o.day}: {c.check_name} failed: {c.description}"
                for o in self.outcomes for c in o.checks if not c.passed and c.blocking]

    def _check_evaluation(self, outcome: PartitionOutcome, check: CheckOutcome) -> AssetCheckEvaluation:
        return AssetCheckEvaluation(
            asset_key=asset_key(outcome.asset_key), check_name=check.check_name, passed=check.passed,
            severity=AssetCheckSeverity.ERROR if check.blocking else AssetCheckSeverity.WARN,
            description=check.description, metadata=check.metadata, partition=outcome.day.isoformat(),
        )

    def stop(self, reason: BaseException) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
        """Yield the finished days' events, then fail the step (a generator: yielded events are kept)."""
        for outcome in self.outcomes:
            yield AssetMaterialization(asset_key=asset_key(outcome.asset_key), partition=outcome.day.isoformat(),
                                       metadata=outcome.metadata)
            for check in outcome.checks:
                yield self._check_evaluation(outcome, check)
        done = sorted({o.day.isoformat() for o in self.outcomes})
        raise Failure(
            description=f"{type(reason).__name__}: {reason}",
            metadata={"finished_days": MetadataValue.json(done)},
        ) from reason

    def results(self) -> Iterator[MaterializeResult | AssetCheckEvaluation]:
        single = len(self.context.partition_keys) == 1
        for key in self.asset_keys:
            outcomes = [o for o in self.outcomes if o.asset_key == key]
            check_results = []
            if single:
                (outcome,) = outcomes
                check_results = [
                    AssetCheckResult(check_name=c.check_name, passed=c.passed, description=c.description,
                                     severity=AssetCheckSeverity.ERROR if c.blocking else AssetCheckSeverity.WARN,
                                     metadata=c.metadata)
                    for c in outcome.checks
                ]
                yield MaterializeResult(
                    asset_key=asset_key(key), metadata=outcome.metadata, check_results=check_results,
                    data_version=DataVersion(outcome.data_version) if outcome.data_version else None,
                )
                continue
            for outcome in outcomes:
                self.context.add_asset_metadata(outcome.metadata, asset_key=asset_key(key),
                                                partition_key=outcome.day.isoformat())
                for check in outcome.checks:  # partition-scoped evaluations for every day of the range
                    yield self._check_evaluation(outcome, check)
            # No check result for the run as a whole: it would be recorded without a partition (the UI lists
            # it as `teacher_health[None]`), and every day's evaluation is above. Dagster requires a check's
            # output unless the step is subsettable (`can_subset=True` on the steps with checks).
            yield MaterializeResult(asset_key=asset_key(key))


def run_days(context: AssetExecutionContext, materializer: RangeMaterializer,
             work: Callable[[date], list[PartitionOutcome]]) -> Iterator[Any]:
    """Run `work` for each of the run's days in order; stop at the first error or blocking failure."""
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    if selected != set(materializer.asset_keys):  # steps with checks are subsettable only so that their
        raise Failure(  # check outputs are optional (see RangeMaterializer.results): they run whole
            f"{', '.join(materializer.asset_keys)} come out of one step ({context.op_def.name}); select all of them "
            f"(this run selected {', '.join(sorted(selected)) or 'none'})"
        )
    hold_chain_in_step(context)  # one writer on the chain, whoever launched this run
    days = partition_days(context)
    for index, day in enumerate(days, start=1):
        if len(days) > 1:
            context.log.info(f"{context.op_def.name}: day {day} ({index}/{len(days)})")
        try:
            outcomes = work(day)
        except Exception as exc:
            yield from materializer.stop(exc)
        for outcome in outcomes:
            materializer.add(outcome)
        failures = materializer.blocking_failures()
        if failures:
            yield from materializer.stop(BlockingCheckFailed("; ".join(failures)))
    yield from materializer.results()


class BlockingCheckFailed(RuntimeError):
    """A blocking asset check failed: the downstream assets of this day must not run."""


def partition_day(context: AssetExecutionContext) -> date:
    return parse_day(context.partition_key)


def mlflow_tags(context: AssetExecutionContext, role: str, extra: Mapping[str, str] | None = None,
                day: date | None = None) -> dict[str, str]:
    """Tags that tie an MLflow run to the Dagster run, partition and asset that produced it."""
    tags = {
        "dagster.run_id": context.run.run_id,
        "dagster.partition": day.isoformat() if day else context.partition_key,
        "dagster.job": context.job_def.name,
        "recdistill.role": role,
    }
    tags.update(extra or {})
    return tags


def progress_logger(
    context: AssetExecutionContext, label: str, min_interval_s: float = 5.0
) -> Callable[[dict[str, Any]], None]:
    """Log training progress to the Dagster run log, at most every `min_interval_s` seconds.

    Every update also goes to `recdistill_dagster.progress.emit` (the terminal bar of the CLI's run).
    """
    last = [0.0]

    def report(progress: dict[str, Any]) -> None:
        emit(label, progress)
        now = time.monotonic()
        if now - last[0] < min_interval_s:
            return
        last[0] = now
        eta = progress.get("eta_seconds")
        context.log.info(
            f"{label}: step {progress.get('step')} epoch {progress.get('epoch')} · "
            f"{progress.get('samples', 0):,} samples · {progress.get('samples_per_s', 0):,.0f} samples/s · "
            f"loss {progress.get('loss', float('nan')):.4f}" + (f" · ETA {eta:.0f}s" if eta is not None else "")
        )

    return report


def train_stats_metadata(stats: TrainStats) -> dict[str, Any]:
    return {
        "train_steps": stats.steps,
        "train_samples": stats.samples,
        "train_epochs": stats.epochs,
        "train_seconds": MetadataValue.float(round(stats.seconds, 2)),
        "samples_per_second": MetadataValue.float(round(stats.samples_per_second, 1)),
        "mean_loss": MetadataValue.float(float(stats.mean_loss)),
    }


def train_stats_metrics(stats: TrainStats) -> dict[str, float]:
    values = {
        "train_steps": stats.steps,
        "train_samples": stats.samples,
        "train_seconds": stats.seconds,
        "samples_per_second": stats.samples_per_second,
        "mean_loss": stats.mean_loss,
    }
    for name in ("task_loss", "distill_loss", "aux_loss", "distill_matched_fraction"):
        value = getattr(stats, name, None)
        if value is not None:
            values[name] = value
    return values


def markdown_table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)

