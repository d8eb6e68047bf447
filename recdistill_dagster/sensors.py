"""The teacher-rollback sensor.

Each evaluation:
1. reads the `teacher_health` check evaluations that failed since its cursor (Dagster's event log)
   and records each snapshot as `bad` in the registry (reason, detected-at, producing run); also
   marks any registry record still `unhealthy` (a missed event never leaves a snapshot in use);
2. waits while a training run is queued or in progress (never two writers on the chain);
3. plans the repair (`recdistill_dagster.rollback`) and launches it as one run over the range, in
   date order, with a run key derived from the plan, so the same repair is never launched twice.
It logs what it did and why; a skip says why nothing was launched.
"""

from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

# Not re-exported at the top level in Dagster 1.13; the storage API that returns it is public.
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.graph import TEACHER_CHECKPOINT, TEACHER_HEALTH_CHECK, AssetGraph
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.rollback import current_snapshots, plan_repair
from recdistill_dagster.storage import Store

ROLLBACK_SENSOR = "teacher_rollback_sensor"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
REPAIR_TAG = "recdistill/repair"
HEALTH_CHECK = AssetCheckKey(AssetKey.from_user_string(TEACHER_CHECKPOINT), TEACHER_HEALTH_CHECK)
IN_PROGRESS = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
               DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def record_failed_checks(context: SensorEvaluationContext, registry: SnapshotRegistry, cursor: int) -> int:
    """Mark the snapshots of newly failed health checks bad; returns the new cursor."""
    history = context.instance.event_log_storage.get_asset_check_execution_history(
        HEALTH_CHECK, limit=1000, status={AssetCheckExecutionRecordStatus.FAILED}
    )
    newest = cursor
    for record in sorted(history, key=lambda r: r.id):
        if record.id <= cursor or record.event is None or record.event.dagster_event is None:
            continue
        newest = max(newest, record.id)
        evaluation = record.event.dagster_event.event_specific_data
        if not isinstance(evaluation, AssetCheckEvaluation):
            continue
        snapshot = getattr(evaluation.metadata.get("teacher_snapshot"), "value", None)
        if not snapshot:
            context.log.warning(f"failed teacher_health on {evaluation.partition} names no snapshot; skipped")
            continue
        marked = registry.mark_bad(snapshot, reason=evaluation.description or "teacher_health failed",
                                   detected_by=f"{ROLLBACK_SENSOR} (check evaluation {record.id})")
        context.log.info(f"recorded {snapshot} as bad: produced by run {record.run_id}, detected "
                         f"{marked.detected_at:%Y-%m-%d %H:%M:%S} UTC; reason: {marked.reason}"
                         + (f" (identical to {marked.identical_to})" if marked.identical_to else ""))
    for snapshot_record in registry.all():  # anything unhealthy the event log did not surface
        if snapshot_record.status == "unhealthy":
            registry.mark_bad(snapshot_record.snapshot_id, reason=snapshot_record.reason or "unhealthy",
                              detected_by=f"{ROLLBACK_SENSOR} (registry scan)")
            context.log.info(f"recorded {snapshot_record.snapshot_id} as bad (registry scan): {snapshot_record.reason}")
    return newest


def reproductions(registry: SnapshotRegistry, tainted: dict[str, list[str]]) -> list[str]:
    """One line per unusable snapshot in the plan that a repair retrained bit-for-bit (`identical_to`)."""
    lines = []
    for snapshot in sorted(tainted):
        record = registry.get(snapshot)
        if record is None or record.identical_to is None:
            continue
        checksum = (record.weights_sha256 or "")[:12]
        lines.append(
            f"the repair of {record.partition} (run {record.dagster_run_id[:8]}) retrained it as {snapshot}, whose "
            f"weights are identical to bad snapshot {record.identical_to} (sha256 {checksum}): retraining from the "
            "same parent on the same data, configuration and code reproduces it, so the cause was not fixed and "
            "another repair would only repeat it. Fix the cause (the day's data, the configuration or the code), "
            f"then rebuild from {record.partition}: python -m recdistill_dagster backfill {record.partition} <last day>"
        )
    return lines


def build_rollback_sensor(config: PipelineConfig, graph: AssetGraph, store: Store,
                          repair_job: Any, lane_tags: dict[str, str]) -> Any:
    @sensor(
        name=ROLLBACK_SENSOR,
        job=repair_job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.STOPPED,
        description=(
            "Teacher rollback: records snapshots that failed the teacher_health check as bad in the snapshot "
            f"registry, then re-materializes, in date order in one run, every partition of the {len(graph.students)} "
            f"student(s) ({', '.join(graph.students)}) derived from them (logits, datasets, checkpoints, reports) "
            "and every later day of their chains. The teacher retrains the bad day from the last good snapshot."
        ),
    )
    def teacher_rollback_sensor(context: SensorEvaluationContext) -> SensorResult:
        registry = SnapshotRegistry(store)
        cursor = int(context.cursor or 0)
        new_cursor = record_failed_checks(context, registry, cursor)
        busy = context.instance.get_runs(filters=RunsFilter(statuses=IN_PROGRESS), limit=20)
        busy = [run for run in busy if run.job_name != "sample_streams_job"]
        if busy:
            return SensorResult(skip_reason=SkipReason(
                f"waiting: run(s) {', '.join(r.run_id[:8] for r in busy)} still in progress on the training lane"
            ), cursor=str(new_cursor))
        plan = plan_repair(context.instance, config, registry)
        if plan.start is None or plan.end is None:
            return SensorResult(skip_reason=SkipReason(plan.reason), cursor=str(new_cursor))
        reproduced = reproductions(registry, plan.tainted)
        if reproduced:  # repairing again would retrain the same weights again: say so, and stop
            for line in reproduced:
                context.log.warning(line)
            return SensorResult(skip_reason=SkipReason(
                "not repairing: " + " | ".join(reproduced)), cursor=str(new_cursor))
        context.log.info(f"repair: {plan.reason}; invalid partitions: {plan.invalid}")
        request = RunRequest(
            run_key=plan.run_key(current_snapshots(context.instance)),
            asset_selection=[AssetKey.from_user_string(key) for key in plan.assets],
            # The checks of the repaired steps (the teacher's health check above all), and no others.
            asset_check_keys=[AssetCheckKey(AssetKey.from_user_string(a), c) for a, c in graph.checks_of(plan.assets)],
            tags={**lane_tags, RANGE_START_TAG: plan.start.isoformat(), RANGE_END_TAG: plan.end.isoformat(),
                  REPAIR_TAG: ",".join(sorted(plan.tainted))},
        )
        return SensorResult(run_requests=[request], cursor=str(new_cursor))

    return teacher_rollback_sensor
