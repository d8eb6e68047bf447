"""Lineage audit: the full upstream chain of one partition, read from Dagster's event log.

Every node is the latest materialization of an (asset, partition) in the instance: its Dagster run
id, storage id, time, the snapshot ids and MLflow run id recorded in its metadata. Upstream edges
follow the asset graph's partition mappings (same day, previous day of a self-dependent chain,
the next day's evaluation stream, the batch window for the batch partition).
"""

from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.steps import days_of_partition, previous_partition

TRAINING_ASSETS = ("teacher_checkpoint", "teacher_logits", "student_dataset", "student_checkpoint",
                   "student_baseline_checkpoint", "transferability_report")
DATA_ASSETS = ("teacher_samples", "student_samples", "eval_samples")
LINEAGE_METADATA = ("teacher_snapshot", "snapshot_id", "parent_snapshot", "teacher_snapshots", "mlflow_run_id",
                    "trained_days", "phase", "join_coverage", "eta")


@dataclass
class LineageNode:
    asset: str
    partition: str
    materialized: bool
    run_id: str | None = None
    storage_id: int | None = None
    timestamp: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    upstream: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.asset}[{self.partition}]"


def upstream_of(config: PipelineConfig, asset: str, day: date) -> list[tuple[str, date]]:
    """The (asset, partition) pairs a partition was built from, per the asset graph."""
    if asset in DATA_ASSETS:
        return []
    days = days_of_partition(config, day)
    previous = previous_partition(config, day)
    chain = [(asset, previous)] if previous is not None and asset != "teacher_logits" else []
    if asset in ("teacher_checkpoint", "teacher_logits"):
        teacher_previous = [("teacher_checkpoint", previous)] if previous is not None else []
        return [("teacher_samples", d) for d in days] + teacher_previous
    if asset == "student_dataset":
        return [("student_samples", d) for d in days] + [("teacher_logits", day)]
    if asset == "student_checkpoint":
        return [("student_dataset", day), *chain]
    if asset == "student_baseline_checkpoint":
        return [("student_samples", d) for d in days] + chain
    if asset == "transferability_report":
        models = [(name, day) for name in ("teacher_checkpoint", "student_checkpoint", "student_baseline_checkpoint")]
        return [*models, ("eval_samples", day + timedelta(days=1)), *chain]
    raise ValueError(f"unknown asset {asset!r}; one of {', '.join(TRAINING_ASSETS + DATA_ASSETS)}")


def _node(instance: DagsterInstance, asset: str, day: date) -> LineageNode:
    partition = day.isoformat()
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    )
    if not result.records:
        return LineageNode(asset=asset, partition=partition, materialized=False)
    record = result.records[0]
    materialization = record.asset_materialization
    metadata = {}
    if materialization is not None:
        metadata = {k: v.value for k, v in materialization.metadata.items() if k in LINEAGE_METADATA}
    return LineageNode(asset=asset, partition=partition, materialized=True, run_id=record.run_id,
                       storage_id=record.storage_id, timestamp=record.timestamp, metadata=metadata)


def trace(instance: DagsterInstance, config: PipelineConfig, asset: str, day: date) -> list[LineageNode]:
    """Every node upstream of (asset, day), the requested node first, then breadth-first."""
    nodes: dict[str, LineageNode] = {}
    queue = [(asset, day)]
    while queue:
        name, partition_day = queue.pop(0)
        node = _node(instance, name, partition_day)
        if node.key in nodes:
            continue
        parents = upstream_of(config, name, partition_day)
        node.upstream = [f"{n}[{d.isoformat()}]" for n, d in parents]
        nodes[node.key] = node
        queue.extend(p for p in parents if f"{p[0]}[{p[1].isoformat()}]" not in nodes)
    return list(nodes.values())


def teacher_snapshots(nodes: list[LineageNode]) -> list[str]:
    """Every teacher snapshot id the lineage contains (checkpoints, logits and students' rows)."""
    found: set[str] = set()
    for node in nodes:
        if node.asset in ("teacher_checkpoint", "teacher_logits") and node.metadata.get("teacher_snapshot"):
            found.add(node.metadata["teacher_snapshot"])
            parent = node.metadata.get("parent_snapshot")
            if isinstance(parent, str) and "@" in parent:
                found.add(parent)
        found.update(node.metadata.get("teacher_snapshots") or [])
    return sorted(found)


def snapshot_statuses(registry: SnapshotRegistry, nodes: list[LineageNode]) -> dict[str, dict[str, Any]]:
    """Each teacher snapshot in the lineage with its registry status (good, unhealthy, bad)."""
    statuses: dict[str, dict[str, Any]] = {}
    for snapshot in teacher_snapshots(nodes):
        record = registry.get(snapshot)
        statuses[snapshot] = (
            {"status": "unknown (not in the registry)"} if record is None else
            {"status": record.status, "reason": record.reason, "produced_by_run": record.dagster_run_id,
             "detected_at": record.detected_at.isoformat() if record.detected_at else None}
        )
    return statuses


def to_json(asset: str, day: date, nodes: list[LineageNode],
            statuses: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "asset": asset,
        "partition": day.isoformat(),
        "complete": all(node.materialized for node in nodes),
        "teacher_snapshots": teacher_snapshots(nodes),
        "snapshot_status": statuses or {},
        "all_snapshots_good": all(v.get("status") == "good" for v in (statuses or {}).values()),
        "nodes": [asdict(node) for node in nodes],
    }


def render(asset: str, day: date, nodes: list[LineageNode], statuses: dict[str, dict[str, Any]] | None = None) -> str:
    lines = [f"lineage of {asset}[{day.isoformat()}]: {len(nodes)} upstream partition(s)"]
    missing = [node.key for node in nodes if not node.materialized]
    if missing:
        lines.append(f"NOT MATERIALIZED: {', '.join(missing)}")
    lines.append("teacher snapshots:")
    for snapshot in teacher_snapshots(nodes):
        info = (statuses or {}).get(snapshot, {})
        status = str(info.get("status", "?"))
        detail = ""
        if status != "good" and info.get("reason"):
            detail = f" — {info['reason']} (detected {info.get('detected_at')})"
        lines.append(f"  {snapshot:<32} {status.upper() if status != 'good' else status}{detail}")
    lines.append("")
    for node in nodes:
        if not node.materialized:
            lines.append(f"{node.key:<45} (never materialized)")
            continue
        details = [f"run {node.run_id[:8] if node.run_id else '?'}"]
        for key in ("teacher_snapshot", "snapshot_id", "mlflow_run_id"):
            if node.metadata.get(key):
                details.append(f"{key.replace('_id', '')} {node.metadata[key]}")
        if node.metadata.get("teacher_snapshots"):
            details.append(f"trained on teacher {', '.join(node.metadata['teacher_snapshots'])}")
        lines.append(f"{node.key:<45} " + " · ".join(details))
        if node.upstream:
            lines.append(f"{'':<45}   ← {', '.join(node.upstream)}")
    return "\n".join(lines)
