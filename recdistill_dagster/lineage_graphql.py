"""The lineage audit from outside: the same upstream chain, read through Dagster's GraphQL API.

An auditor needs only a running webserver (`dagster dev`, `dagster-webserver`) and any Python 3.11:
this module and `graphql_client` use the standard library alone (no Dagster, torch or config).

    python -m recdistill_dagster.lineage_graphql ranker/student_checkpoint 2026-01-04 \\
        --graphql-url http://127.0.0.1:3000/graphql [--json]
    python -m recdistill_dagster lineage prerank/student_checkpoint 2026-01-04 --graphql-url ...   (via the CLI)

Where the local audit (`lineage.py`) derives edges from the configuration, this one derives them
from what the webserver serves: the asset graph's dependencies and their partition mappings
(`TimeWindowPartitionMapping` offsets: same day, previous day of a self-dependent chain, next day's
evaluation stream); the outputs of one multi-asset step share the step's inputs. A partition that
trained on several days of another partition set (the batch phase) records them in its metadata
(`trained_days`, or `days` for the student dataset); those recorded days replace the same-day
mapping to that set. Each node is the latest materialization of its partition: run id, time and
the lineage metadata. Teacher snapshots carry the verdict of their `teacher_health` check from the
event log; the rollback registry's marks live in the artifact store and are shown by the local
audit.
"""

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from recdistill_dagster.graphql_client import DagsterGraphQL, GraphQLError

# The metadata a lineage node reports (as lineage.py does), plus the fields it reads for edges.
LINEAGE_KEYS = ("version", "inputs", "teacher_snapshots", "teacher_snapshot", "snapshot_id", "parent_snapshot",
                "mlflow_run_id", "trained_days", "phase", "join_coverage", "eta")
DAYS_KEYS = ("trained_days", "days")
# The graph's teacher key and health check (recdistill_dagster.graph), spelled out here because this
# module runs with the standard library alone; tests/unit/test_lineage_graphql.py holds the two equal.
HEALTH_CHECK = ("teacher_checkpoint", "teacher_health")
_OFFSETS = re.compile(r"offsetted by (-?\d+) and (-?\d+) partitions")

GRAPH_QUERY = """{ assetNodes { assetKey { path } partitionKeys opNames
    dependencies { asset { assetKey { path } } partitionMapping { className description } } } }"""
MATERIALIZATION_QUERY = """query($key: AssetKeyInput!, $partition: String!) {
  assetOrError(assetKey: $key) { __typename ... on Asset {
    assetMaterializations(partitions: [$partition], limit: 1) { runId timestamp partition
      metadataEntries { __typename label
        ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intRepr }
        ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
        ... on PathMetadataEntry { path } ... on BoolMetadataEntry { boolValue }
        ... on UrlMetadataEntry { url } } } } } }"""

# Partitioned checks are a preview in Dagster 1.13: a single-partition run records its evaluation
# with no partition, so evaluations are matched by the snapshot id in their metadata.
CHECK_QUERY = """query($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 1000) {
    runId evaluation { success description metadataEntries { label ... on TextMetadataEntry { text } } } } }"""


@dataclass
class Dependency:
    asset: str
    start_offset: int
    end_offset: int


# A node is a dict with the keys of the local audit's JSON nodes: asset, partition, materialized,
# run_id, timestamp, metadata (the lineage keys) and upstream ("asset[partition]" of each parent).
Node = dict[str, Any]


def _key(asset: str, partition: str) -> str:
    return f"{asset}[{partition}]"


def _entry_value(entry: dict[str, Any]) -> Any:
    kind = entry["__typename"]
    if kind == "FloatMetadataEntry":
        return entry["floatValue"]
    if kind == "IntMetadataEntry":
        return int(entry["intRepr"])
    if kind == "JsonMetadataEntry":
        return json.loads(entry["jsonString"])
    for name in ("text", "path", "boolValue", "url"):
        if name in entry:
            return entry[name]
    return None  # markdown, tables: not lineage


def _offsets(mapping: dict[str, Any] | None) -> tuple[int, int]:
    if mapping is None:
        return 0, 0
    if mapping["className"] not in ("TimeWindowPartitionMapping", "IdentityPartitionMapping"):
        raise GraphQLError(f"partition mapping {mapping['className']} is not supported by the lineage audit")
    match = _OFFSETS.search(mapping.get("description") or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


class GraphQLLineage:
    def __init__(self, client: DagsterGraphQL) -> None:
        self.client = client
        self.partitions: dict[str, list[str]] = {}
        self.dependencies: dict[str, list[Dependency]] = {}
        steps: dict[tuple[str, ...], list[str]] = {}
        for node in client.query(GRAPH_QUERY)["assetNodes"]:
            name = "/".join(node["assetKey"]["path"])
            self.partitions[name] = node["partitionKeys"] or []
            self.dependencies[name] = [
                Dependency("/".join(dep["asset"]["assetKey"]["path"]), *_offsets(dep["partitionMapping"]))
                for dep in node["dependencies"]
            ]
            steps.setdefault(tuple(node.get("opNames") or [name]), []).append(name)
        # The outputs of one multi-asset step were all built from the step's inputs: each gets the
        # union of its siblings' dependencies (teacher_logits reads the previous teacher checkpoint
        # through the step it shares with teacher_checkpoint).
        for siblings in steps.values():
            shared = [dep for name in siblings for dep in self.dependencies[name]]
            for name in siblings:
                own = [dep for dep in shared if dep.asset != name or dep.start_offset != 0]
                self.dependencies[name] = list({(d.asset, d.start_offset, d.end_offset): d for d in own}.values())

    def node(self, asset: str, partition: str) -> tuple[Node, dict[str, Any]]:
        """The latest materialization of (asset, partition), and all of its metadata."""
        data = self.client.query(MATERIALIZATION_QUERY, {"key": {"path": asset.split("/")}, "partition": partition})
        found = data["assetOrError"]
        events = found.get("assetMaterializations") if found["__typename"] == "Asset" else None
        event = events[0] if events else {}
        metadata = {entry["label"]: _entry_value(entry) for entry in event.get("metadataEntries", [])}
        return {
            "asset": asset, "partition": partition, "materialized": bool(event), "run_id": event.get("runId"),
            "timestamp": float(event["timestamp"]) / 1000.0 if event else None,
            "metadata": {k: v for k, v in metadata.items() if k in LINEAGE_KEYS}, "upstream": [],
        }, metadata

    def upstream(self, asset: str, partition: str, metadata: dict[str, Any]) -> list[tuple[str, str]]:
        day = date.fromisoformat(partition)
        recorded = next((metadata[k] for k in DAYS_KEYS if metadata.get(k)), None)
        parents = []
        for dep in self.dependencies.get(asset, []):
            valid = self.partitions.get(dep.asset, [])
            other_set = valid != self.partitions.get(asset, [])
            if recorded and other_set and dep.start_offset == dep.end_offset == 0:
                days = [d.strip() for d in str(recorded).split(",")]
            else:
                days = [(day + timedelta(days=offset)).isoformat()
                        for offset in range(dep.start_offset, dep.end_offset + 1)]
            parents += [(dep.asset, d) for d in days if d in valid]
        return parents

    def trace(self, asset: str, partition: str) -> list[Node]:
        """Every partition upstream of (asset, partition): the requested one first, then breadth-first."""
        if asset not in self.partitions:
            raise GraphQLError(f"unknown asset {asset!r}; the webserver serves: {', '.join(sorted(self.partitions))}")
        keys = self.partitions[asset]
        if keys and partition not in keys:
            raise GraphQLError(f"{partition} is not a partition of {asset} ({keys[0]}..{keys[-1]})")
        nodes: dict[str, Node] = {}
        queue = [(asset, partition)]
        while queue:
            name, key = queue.pop(0)
            if _key(name, key) in nodes:
                continue
            node, metadata = self.node(name, key)
            parents = self.upstream(name, key, metadata)
            node["upstream"] = [_key(n, p) for n, p in parents]
            nodes[_key(name, key)] = node
            queue += [(n, p) for n, p in parents if _key(n, p) not in nodes]
        return list(nodes.values())

    def snapshot_health(self, snapshots: list[str]) -> dict[str, dict[str, Any]]:
        """Each teacher snapshot with the `teacher_health` verdict recorded when it was produced."""
        asset, check = HEALTH_CHECK
        executions = self.client.query(CHECK_QUERY, {"key": {"path": [asset]}, "check": check})
        verdicts: dict[str, dict[str, Any]] = {}
        for execution in executions["assetCheckExecutions"]:  # newest first: keep the first seen
            evaluation = execution.get("evaluation") or {}
            named = {e["label"]: e.get("text") for e in evaluation.get("metadataEntries") or []}
            snapshot = named.get("teacher_snapshot")
            if snapshot and snapshot not in verdicts:
                verdicts[snapshot] = {"check": check, "status": "passed" if evaluation["success"] else "FAILED",
                                      "description": evaluation.get("description"), "run_id": execution["runId"]}
        return {s: verdicts.get(s, {"check": check, "status": "not evaluated"}) for s in snapshots}


def teacher_snapshots(nodes: list[Node]) -> list[str]:
    found: set[str] = set()
    for node in nodes:
        found.update(node["metadata"].get("teacher_snapshots") or [])
        if node["metadata"].get("teacher_snapshot"):
            found.add(node["metadata"]["teacher_snapshot"])
    return sorted(found)


def audit(url: str, asset: str, day: date) -> dict[str, Any]:
    """The lineage of (asset, day) as JSON-able data, from the webserver at `url`."""
    lineage = GraphQLLineage(DagsterGraphQL(url))
    nodes = lineage.trace(asset, day.isoformat())
    snapshots = teacher_snapshots(nodes)
    return {
        "asset": asset,
        "partition": day.isoformat(),
        "source": lineage.client.url,
        "complete": all(node["materialized"] for node in nodes),
        "teacher_snapshots": snapshots,
        "snapshot_health": lineage.snapshot_health(snapshots),
        "nodes": nodes,
    }


def render_text(result: dict[str, Any]) -> str:
    nodes = result["nodes"]
    out = [f"lineage of {result['asset']}[{result['partition']}] via {result['source']}: "
           f"{len(nodes)} upstream partition(s)"]
    missing = [f"{n['asset']}[{n['partition']}]" for n in nodes if not n["materialized"]]
    if missing:
        out.append("NOT MATERIALIZED: " + ", ".join(missing))
    out.append("teacher snapshots (teacher_health check):")
    for snapshot in result["teacher_snapshots"]:
        verdict = result["snapshot_health"][snapshot]
        out.append(f"  {snapshot:<32} {verdict['status']}"
                   + (f" — {verdict['description']}" if verdict.get("description") else ""))
    out.append("")
    width = max(len(f"{n['asset']}[{n['partition']}]") for n in nodes) + 2
    for n in nodes:
        label = f"{n['asset']}[{n['partition']}]".ljust(width)
        if not n["materialized"]:
            out.append(f"{label}(never materialized)")
            continue
        meta = n["metadata"]
        facts = [f"run {n['run_id'][:8]}"] + [f"{k.removesuffix('_id')} {meta[k]}" for k in
                                              ("teacher_snapshot", "snapshot_id", "mlflow_run_id") if meta.get(k)]
        if meta.get("teacher_snapshots"):
            facts.append("trained on teacher " + ", ".join(meta["teacher_snapshots"]))
        out.append(label + " · ".join(facts))
        if n["upstream"]:
            out.append(" " * width + "← " + ", ".join(n["upstream"]))
    return "\n".join(out)


def run(url: str, asset: str, day: date, as_json: bool) -> int:
    """Print the audit; exit 0 when every upstream partition is materialized, 1 if not, 2 on an API error."""
    try:
        result = audit(url, asset, day)
    except GraphQLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str) if as_json else render_text(result))
    return 0 if result["complete"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdistill_dagster.lineage_graphql", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("asset")
    parser.add_argument("day", type=date.fromisoformat)
    parser.add_argument("--graphql-url", required=True, help="e.g. http://127.0.0.1:3000/graphql")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    return run(args.graphql_url, args.asset, args.day, args.json)


if __name__ == "__main__":
    sys.exit(main())
