"""Rollback planning: which partitions descend from a bad teacher snapshot, and what to rebuild.

Reads only Dagster's event log (each partition's latest materialization and its lineage metadata)
and the snapshot registry. The rules, day by day in date order:
- a teacher partition is valid when its snapshot is good and it continued from a good snapshot;
- a student_dataset partition is valid when it joined the current logits of a valid teacher day;
- a student_checkpoint partition is valid when it trained on the current dataset of its day and
  continued from the current, valid checkpoint of the day before (one invalid day invalidates
  every later day of the self-dependent chain);
- a report partition is valid when it scored the current teacher and student of its day and the
  report before it is valid (its numbers are cumulative).
A repair is planned only when a bad (or unhealthy) snapshot is still in some current lineage: the
range runs from the first invalid day to the last trained day, in one run, in date order.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dagster import AssetKey, DagsterInstance

from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.registry import UNUSABLE, SnapshotRegistry

TEACHER_KEYS = ("teacher_checkpoint", "teacher_logits")
DERIVED_KEYS = ("student_dataset", "student_checkpoint", "transferability_report")
BASELINE_KEY = "student_baseline_checkpoint"
REPAIRABLE_KEYS = (*TEACHER_KEYS, *DERIVED_KEYS, BASELINE_KEY)
PAGE = 1000


def latest_metadata(instance: DagsterInstance, asset: str) -> dict[str, dict[str, Any]]:
    """partition key → metadata (plain values) of its latest materialization, plus the run id."""
    latest: dict[str, dict[str, Any]] = {}
    records, cursor = [], None
    while True:  # newest first, a page at a time (the event log caps a fetch at 10,000 records)
        page = instance.fetch_materializations(AssetKey(asset), limit=PAGE, cursor=cursor, ascending=False)
        records.extend(page.records)
        if not page.has_more:
            break
        cursor = page.cursor
    for record in records:
        key = record.partition_key
        if key is None or key in latest:
            continue
        materialization = record.asset_materialization
        values = {name: getattr(value, "value", value) for name, value in (materialization.metadata or {}).items()}
        values["_run_id"] = record.run_id
        values["_storage_id"] = record.storage_id
        latest[key] = values
    return latest


def _parent(value: Any) -> str | None:
    return value if isinstance(value, str) and "@" in value else None


@dataclass
class RepairPlan:
    start: date | None = None
    end: date | None = None
    assets: list[str] = field(default_factory=list)
    tainted: dict[str, list[str]] = field(default_factory=dict)  # bad snapshot → partitions that carry it
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
    days = config.calendar.training_days()
    meta = {asset: latest_metadata(instance, asset) for asset in ("teacher_checkpoint", *DERIVED_KEYS, BASELINE_KEY)}
    teacher = meta["teacher_checkpoint"]
    trained = [d for d in days if d.isoformat() in teacher]
    if not trained:
        return RepairPlan(reason="no teacher partition materialized yet")
    horizon = trained[-1]
    statuses: dict[str, str | None] = {}

    def status(snapshot: str | None) -> str | None:
        if snapshot and snapshot not in statuses:
            statuses[snapshot] = registry.status(snapshot)
        return statuses.get(snapshot) if snapshot else None

    plan = RepairPlan()

    def taint(snapshots: list[str | None], where: str) -> None:
        for snapshot in snapshots:
            if snapshot and status(snapshot) in UNUSABLE:
                plan.tainted.setdefault(snapshot, []).append(where)

    def invalid(asset: str, day: date) -> None:
        plan.invalid.setdefault(asset, []).append(day.isoformat())

    valid = {name: False for name in ("teacher", "dataset", "student", "baseline", "report")}
    current: dict[str, str | None] = {}
    for day in (d for d in days if d <= horizon):
        key = day.isoformat()
        first = day == config.calendar.batch_end
        t = teacher.get(key)
        t_snapshot = t.get("teacher_snapshot") if t else None
        t_parent = _parent(t.get("parent_snapshot")) if t else None
        taint([t_snapshot, t_parent], f"teacher_checkpoint {key}")
        valid["teacher"] = bool(t) and status(t_snapshot) not in UNUSABLE and status(t_parent) not in UNUSABLE
        if not valid["teacher"]:
            invalid("teacher_checkpoint", day)

        ds = meta["student_dataset"].get(key)
        ds_snapshots = list(ds.get("teacher_snapshots") or []) if ds else []
        taint(ds_snapshots, f"student_dataset {key}")
        valid["dataset"] = bool(ds) and valid["teacher"] and ds_snapshots == [t_snapshot]
        if not valid["dataset"]:
            invalid("student_dataset", day)

        st = meta["student_checkpoint"].get(key)
        st_teachers = list(st.get("teacher_snapshots") or []) if st else []
        taint(st_teachers, f"student_checkpoint {key}")
        chain_ok = first or (valid["student"] and st is not None
                             and _parent(st.get("parent_snapshot")) == current.get("student"))
        valid["student"] = bool(st) and valid["dataset"] and st_teachers == ds_snapshots and chain_ok
        if not valid["student"]:
            invalid("student_checkpoint", day)

        bl = meta[BASELINE_KEY].get(key)
        baseline_chain_ok = first or (valid["baseline"] and bl is not None
                                      and _parent(bl.get("parent_snapshot")) == current.get("baseline"))
        valid["baseline"] = bool(bl) and baseline_chain_ok
        if not valid["baseline"]:
            invalid(BASELINE_KEY, day)

        rp = meta["transferability_report"].get(key)
        rp_snapshots = dict(rp.get("snapshots") or {}) if rp else {}
        taint([rp_snapshots.get("teacher")], f"transferability_report {key}")
        valid["report"] = (bool(rp) and valid["student"] and valid["baseline"] and (first or valid["report"])
                           and rp_snapshots.get("teacher") == t_snapshot
                           and rp_snapshots.get("student") == (st or {}).get("snapshot_id"))
        if not valid["report"]:
            invalid("transferability_report", day)

        current = {"teacher": t_snapshot, "student": (st or {}).get("snapshot_id"),
                   "baseline": (bl or {}).get("snapshot_id")}

    if not plan.tainted:
        plan.reason = f"no bad or unhealthy teacher snapshot in the lineage of any partition up to {horizon}"
        return plan
    first_invalid = min(date.fromisoformat(d) for days_ in plan.invalid.values() for d in days_)
    plan.start, plan.end = first_invalid, horizon
    assets = list(DERIVED_KEYS)
    if any(date.fromisoformat(d) >= first_invalid for d in plan.invalid.get("teacher_checkpoint", [])):
        assets = [*TEACHER_KEYS, *assets]
    if plan.invalid.get(BASELINE_KEY):
        assets.append(BASELINE_KEY)
    plan.assets = assets
    plan.reason = (
        f"bad snapshot(s) {', '.join(sorted(plan.tainted))} still in the lineage of "
        f"{sum(len(v) for v in plan.tainted.values())} partition(s); rebuilding {', '.join(assets)} "
        f"for {first_invalid}..{horizon} in date order"
    )
    return plan


def current_snapshots(instance: DagsterInstance) -> dict[str, str]:
    """partition → current teacher snapshot (for the repair's run key)."""
    return {key: str(values.get("teacher_snapshot"))
            for key, values in latest_metadata(instance, "teacher_checkpoint").items()}
