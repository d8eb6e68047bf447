"""Rollback planning: which partitions descend from a bad teacher snapshot, and what to rebuild.

Reads only Dagster's event log (each partition's latest materialization and the provenance metadata
every training asset records: its `version`, the `inputs` it consumed with their versions, and the
`teacher_snapshots` its content derives from) and the snapshot registry. One rule, applied to every
node of the asset graph (`recdistill_dagster.graph`), day by day in date order and upstream first:

    a training partition is valid when it is materialized, none of its teacher snapshots is unusable,
    and for every upstream training partition of the graph it consumed that partition's current
    version, and that partition is valid.

So one invalid day of a self-dependent chain invalidates every later day of it, a retrained teacher
invalidates the logits, datasets, students and reports of every student built on the old one, and a
report is only valid when the report before it is (its numbers are cumulated). A repair is planned
only when an unusable snapshot is still in some current lineage: one run over the range from the
first invalid day to the last trained day, in date order, of the invalid assets and everything
downstream of them.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dagster import AssetKey, DagsterInstance

from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.graph import TEACHER_CHECKPOINT, AssetGraph, mapped_days, partition_ref
from recdistill_dagster.registry import UNUSABLE, SnapshotRegistry

PAGE = 1000


def latest_metadata(instance: DagsterInstance, key: str) -> dict[str, dict[str, Any]]:
    """partition key → metadata (plain values) of its latest materialization, plus the run id."""
    latest: dict[str, dict[str, Any]] = {}
    records: list[Any] = []
    cursor: str | None = None
    while True:  # newest first, a page at a time (the event log caps a fetch at 10,000 records)
        page = instance.fetch_materializations(AssetKey.from_user_string(key), limit=PAGE, cursor=cursor,
                                               ascending=False)
        records.extend(page.records)
        if not page.has_more:
            break
        cursor = page.cursor
    for record in records:
        partition = record.partition_key
        if partition is None or partition in latest:
            continue
        materialization = record.asset_materialization
        values = {name: getattr(value, "value", value)
                  for name, value in ((materialization.metadata if materialization else None) or {}).items()}
        values["_run_id"] = record.run_id
        values["_storage_id"] = record.storage_id
        latest[partition] = values
    return latest


@dataclass
class RepairPlan:
    start: date | None = None
    end: date | None = None
    assets: list[str] = field(default_factory=list)
    tainted: dict[str, list[str]] = field(default_factory=dict)  # unusable snapshot → partitions that carry it
    invalid: dict[str, list[str]] = field(default_factory=dict)  # asset → invalid days
    reason: str = ""

    @property
    def needed(self) -> bool:
        return self.start is not None

    def run_key(self, current: dict[str, str]) -> str:
        """Same plan over the same current snapshots → same key (Dagster never launches it twice)."""
        payload = f"{self.start}..{self.end}|{sorted(self.assets)}|{sorted(self.tainted)}|{sorted(current.items())}"
        return f"rollback-{self.start}-{self.end}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def plan_repair(instance: DagsterInstance, config: PipelineConfig, registry: SnapshotRegistry) -> RepairPlan:
    graph = AssetGraph.of(config)
    calendar = config.calendar
    meta = {key: latest_metadata(instance, key) for key in graph.training_keys}
    trained = [d for d in calendar.training_days() if d.isoformat() in meta[TEACHER_CHECKPOINT]]
    if not trained:
        return RepairPlan(reason="no teacher partition materialized yet")
    horizon = trained[-1]
    statuses: dict[str, str | None] = {}

    def unusable(snapshot: str) -> bool:
        if snapshot not in statuses:
            statuses[snapshot] = registry.status(snapshot)
        return statuses[snapshot] in UNUSABLE

    plan = RepairPlan()
    valid: dict[str, bool] = {}  # partition ref → valid
    for day in (d for d in calendar.training_days() if d <= horizon):
        for key in graph.training_keys:
            values = meta[key].get(day.isoformat())
            ok = values is not None
            inputs = dict((values or {}).get("inputs") or {})
            for snapshot in (values or {}).get("teacher_snapshots") or []:
                if unusable(snapshot):
                    plan.tainted.setdefault(snapshot, []).append(f"{key} {day}")
                    ok = False
            for edge in graph.node(key).upstream:
                upstream = graph.node(edge.upstream)
                if not upstream.trains:
                    continue  # data partitions are not versioned by the teacher
                for up_day in mapped_days(calendar, edge.mapping, day):
                    ref = partition_ref(upstream.key, up_day)
                    current = meta[upstream.key].get(up_day.isoformat(), {}).get("version")
                    ok = ok and valid.get(ref, False) and current is not None and inputs.get(ref) == current
            valid[partition_ref(key, day)] = ok
            if not ok:
                plan.invalid.setdefault(key, []).append(day.isoformat())

    if not plan.tainted:
        plan.reason = f"no bad or unhealthy teacher snapshot in the lineage of any partition up to {horizon}"
        return plan
    first_invalid = min(date.fromisoformat(d) for days in plan.invalid.values() for d in days)
    plan.start, plan.end = first_invalid, horizon
    plan.assets = graph.downstream(plan.invalid)
    plan.reason = (
        f"bad snapshot(s) {', '.join(sorted(plan.tainted))} still in the lineage of "
        f"{sum(len(v) for v in plan.tainted.values())} partition(s); rebuilding {', '.join(plan.assets)} "
        f"for {first_invalid}..{horizon} in date order"
    )
    return plan


def current_snapshots(instance: DagsterInstance) -> dict[str, str]:
    """partition → current teacher snapshot (for the repair's run key)."""
    return {key: str(values.get("version")) for key, values in latest_metadata(instance, TEACHER_CHECKPOINT).items()}
