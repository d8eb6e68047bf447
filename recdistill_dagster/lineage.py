"""Lineage audit: the full upstream chain of one partition, read from Dagster's event log.

Every node is the latest materialization of an (asset, partition) in the instance: its Dagster run id,
storage id, time, its version and the inputs it consumed (with their versions), the teacher snapshots
it derives from and its MLflow run. Upstream edges come from the asset graph (`recdistill_dagster.graph`):
same day, previous day of a self-dependent chain, the next day's evaluation stream, the batch window
for the batch partition; it works for every student's keys. A consumed version that is no longer the
upstream partition's current one is reported as stale.
"""

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.graph import AssetGraph, partition_ref
from recdistill_dagster.registry import SnapshotRegistry

LINEAGE_METADATA = ("version", "inputs", "teacher_snapshots", "teacher_snapshot", "snapshot_id", "parent_snapshot",
                    "mlflow_run_id", "trained_days", "phase", "join_coverage", "eta")


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
    stale_inputs: list[str] = field(default_factory=list)  # upstream refs whose consumed version is not current

    @property
    def key(self) -> str:
        return f"{self.asset}[{self.partition}]"


def _node(instance: DagsterInstance, asset: str, day: date) -> LineageNode:
    partition = day.isoformat()
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey.from_user_string(asset), asset_partitions=[partition]), limit=1
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
    graph = AssetGraph.of(config)
    graph.node(asset)  # an unknown key fails here, naming the known ones
    nodes: dict[str, LineageNode] = {}
    queue = [(asset, day)]
    while queue:
        name, partition_day = queue.pop(0)
        if partition_ref(name, partition_day) in nodes:
            continue
        node = _node(instance, name, partition_day)
        parents = graph.upstream_partitions(config.calendar, name, partition_day)
        node.upstream = [partition_ref(n, d) for n, d in parents]
        nodes[node.key] = node
        queue.extend(p for p in parents if partition_ref(*p) not in nodes)
    for node in nodes.values():
        consumed = node.metadata.get("inputs") or {}
        node.stale_inputs = sorted(ref for ref, version in consumed.items()
                                   if ref in nodes and nodes[ref].metadata.get("version") not in (None, version))
    return list(nodes.values())


def teacher_snapshots(nodes: list[LineageNode]) -> list[str]:
    """Every teacher snapshot the lineage contains (checkpoints, logits and what was built from them)."""
    return sorted({s for node in nodes for s in node.metadata.get("teacher_snapshots") or []})


def snapshot_statuses(registry: SnapshotRegistry, nodes: list[LineageNode]) -> dict[str, dict[str, Any]]:
    """Each teacher snapshot in the lineage with its registry status (good, unhealthy, bad, superseded)."""
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
        "consistent": not any(node.stale_inputs for node in nodes),
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
    stale = [f"{node.key} ← {ref}" for node in nodes for ref in node.stale_inputs]
    if stale:
        lines.append(f"STALE (consumed a version that is no longer current): {'; '.join(stale)}")
    lines.append("teacher snapshots:")
    for snapshot in teacher_snapshots(nodes):
        info = (statuses or {}).get(snapshot, {})
        status = str(info.get("status", "?"))
        detail = ""
        if status != "good" and info.get("reason"):
            detail = f" — {info['reason']} (detected {info.get('detected_at')})"
        lines.append(f"  {snapshot:<40} {status.upper() if status != 'good' else status}{detail}")
    lines.append("")
    for node in nodes:
        if not node.materialized:
            lines.append(f"{node.key:<55} (never materialized)")
            continue
        details = [f"run {node.run_id[:8] if node.run_id else '?'}"]
        if node.metadata.get("version"):
            details.append(f"version {node.metadata['version']}")
        if node.metadata.get("mlflow_run_id"):
            details.append(f"mlflow {node.metadata['mlflow_run_id']}")
        if node.metadata.get("teacher_snapshots"):
            details.append(f"teacher {', '.join(node.metadata['teacher_snapshots'])}")
        lines.append(f"{node.key:<55} " + " · ".join(details))
        if node.upstream:
            lines.append(f"{'':<55}   ← {', '.join(node.upstream)}")
    return "\n".join(lines)
