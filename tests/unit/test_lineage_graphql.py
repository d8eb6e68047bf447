"""The GraphQL lineage audit's edges, from a canned asset graph (the e2e test runs it against a webserver)."""

import pytest

from recdistill_dagster.graphql_client import GraphQLError
from recdistill_dagster.lineage_graphql import GraphQLLineage, render_text

SAME = {"className": "TimeWindowPartitionMapping",
        "description": "Maps a downstream partition to any upstream partition with an overlapping time window."}
PREVIOUS = {**SAME, "description": SAME["description"] + " The start and end of the upstream time window is "
            "offsetted by -1 and -1 partitions respectively."}
NEXT = {**SAME, "description": PREVIOUS["description"].replace("-1", "1")}
DATA = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
TRAINING = ["2026-01-02", "2026-01-03"]


def node(name, keys, deps=()):
    return {"assetKey": {"path": [name]}, "partitionKeys": keys,
            "dependencies": [{"asset": {"assetKey": {"path": [d]}}, "partitionMapping": m} for d, m in deps]}


class FakeServer:
    url = "http://fake/graphql"

    def __init__(self, metadata):
        self.metadata = metadata  # (asset, partition) → {label: text}

    def query(self, query, variables=None):
        if "assetNodes" in query:
            return {"assetNodes": [
                node("student_samples", DATA), node("eval_samples", DATA),
                node("student_checkpoint", TRAINING, [("student_samples", SAME), ("student_checkpoint", PREVIOUS)]),
                node("report", TRAINING, [("student_checkpoint", SAME), ("eval_samples", NEXT)]),
            ]}
        if "assetCheckExecutions" in query:
            return {"assetCheckExecutions": []}
        key = (variables["key"]["path"][0], variables["partition"])
        if key not in self.metadata:
            return {"assetOrError": {"__typename": "Asset", "assetMaterializations": []}}
        entries = [{"__typename": "TextMetadataEntry", "label": k, "text": v} for k, v in self.metadata[key].items()]
        return {"assetOrError": {"__typename": "Asset", "assetMaterializations": [
            {"runId": f"run-{key[1]}", "timestamp": "1795421415966", "partition": key[1],
             "metadataEntries": entries}]}}


def test_edges_follow_the_mappings_and_the_recorded_days() -> None:
    server = FakeServer({
        ("student_checkpoint", "2026-01-02"): {"trained_days": "2026-01-01, 2026-01-02", "phase": "batch"},
        ("student_checkpoint", "2026-01-03"): {"trained_days": "2026-01-03"},
        ("report", "2026-01-03"): {},
        **{("student_samples", d): {} for d in DATA}, ("eval_samples", "2026-01-04"): {},
    })
    nodes = {f"{n['asset']}[{n['partition']}]": n for n in GraphQLLineage(server).trace("report", "2026-01-03")}
    assert nodes["report[2026-01-03]"]["upstream"] == ["student_checkpoint[2026-01-03]", "eval_samples[2026-01-04]"]
    assert nodes["student_checkpoint[2026-01-03]"]["upstream"] == ["student_samples[2026-01-03]",
                                                                "student_checkpoint[2026-01-02]"]
    # The batch partition trained on the whole window: its recorded days, and no previous day.
    assert nodes["student_checkpoint[2026-01-02]"]["upstream"] == ["student_samples[2026-01-01]",
                                                                "student_samples[2026-01-02]"]
    assert nodes["student_checkpoint[2026-01-02]"]["metadata"] == {"trained_days": "2026-01-01, 2026-01-02",
                                                                "phase": "batch"}
    assert all(n["materialized"] for n in nodes.values()) and len(nodes) == 7


def test_missing_partitions_are_listed_and_bad_requests_are_errors() -> None:
    lineage = GraphQLLineage(FakeServer({}))
    nodes = lineage.trace("student_checkpoint", "2026-01-03")
    # Nothing materialized: the chain still follows the graph's mappings (no recorded days to widen them).
    assert [f"{n['asset']}[{n['partition']}]" for n in nodes if not n["materialized"]] == [
        "student_checkpoint[2026-01-03]", "student_samples[2026-01-03]", "student_checkpoint[2026-01-02]",
        "student_samples[2026-01-02]"]
    result = {"asset": "student_checkpoint", "partition": "2026-01-03", "source": "fake", "complete": False,
              "teacher_snapshots": [], "snapshot_health": {}, "nodes": nodes}
    assert "NOT MATERIALIZED: student_checkpoint[2026-01-03]" in render_text(result)
    with pytest.raises(GraphQLError, match="not a partition of student_checkpoint"):
        lineage.trace("student_checkpoint", "2026-01-09")
    with pytest.raises(GraphQLError, match="unknown asset 'nope'"):
        lineage.trace("nope", "2026-01-03")
