"""A minimal client for Dagster's GraphQL API (standard library only).

Dagster's own `DagsterGraphQLClient` has no methods for asset lineage or partition metadata, so the
lineage audit and the end-to-end tests post raw GraphQL. This module imports nothing outside the
standard library: an auditor can use it (and `lineage_graphql`) with any Python 3.11, without the
code location's environment (torch, Dagster, …).
"""

import json
import time
import urllib.error
import urllib.request
from typing import Any


class GraphQLError(RuntimeError):
    """The server answered with `errors`, or could not be reached."""


class DagsterGraphQL:
    """POST queries to `<webserver>/graphql`, e.g. `DagsterGraphQL("http://127.0.0.1:3000/graphql")`."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url if url.rstrip("/").endswith("/graphql") else url.rstrip("/") + "/graphql"
        self.timeout_s = timeout_s

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as exc:  # GraphQL validation errors come back as HTTP 400
            detail = exc.read().decode(errors="replace")[:2000]
            raise GraphQLError(f"{self.url}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise GraphQLError(f"{self.url}: cannot reach the Dagster webserver ({exc})") from None
        if payload.get("errors"):
            messages = "; ".join(error.get("message", str(error)) for error in payload["errors"])
            raise GraphQLError(f"{self.url}: {messages}")
        return payload["data"]

    def code_locations(self) -> dict[str, str]:
        """{location name: load status}, with the error's message for a location that failed."""
        data = self.query(
            """{ workspaceOrError { __typename ... on Workspace { locationEntries {
                   name loadStatus
                   locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        )
        workspace = data["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise GraphQLError(f"workspace not available: {workspace['__typename']}")
        status = {}
        for entry in workspace["locationEntries"]:
            error = entry.get("locationOrLoadError") or {}
            status[entry["name"]] = (f"ERROR: {error['message']}" if error.get("__typename") == "PythonError"
                                     else entry["loadStatus"])
        return status

    def wait_until_loaded(self, timeout_s: float = 120.0) -> None:
        """Block until every code location has loaded; raise on a load error or at the timeout."""
        deadline = time.monotonic() + timeout_s
        last: str = "no answer yet"
        while time.monotonic() < deadline:
            try:
                status = self.code_locations()
            except GraphQLError as exc:
                last = str(exc)
            else:
                errors = {name: s for name, s in status.items() if s.startswith("ERROR")}
                if errors:
                    raise GraphQLError(f"code location failed to load: {errors}")
                if status and all(s == "LOADED" for s in status.values()):
                    return
                last = str(status)
            time.sleep(0.5)
        raise GraphQLError(f"Dagster webserver at {self.url} not ready after {timeout_s:.0f}s ({last})")

    def run_status(self, run_id: str) -> str:
        data = self.query(
            "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }", {"id": run_id}
        )
        run = data["runOrError"]
        if run["__typename"] != "Run":
            raise GraphQLError(f"run {run_id}: {run['__typename']}")
        return run["status"]

    def wait_for_run(self, run_id: str, timeout_s: float = 300.0) -> str:
        """Poll until the run reaches a terminal status; returns it (SUCCESS, FAILURE, CANCELED)."""
        deadline = time.monotonic() + timeout_s
        status = "?"
        while time.monotonic() < deadline:
            status = self.run_status(run_id)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1.0)
        raise GraphQLError(f"run {run_id} still {status} after {timeout_s:.0f}s")

    def backfills(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest backfills: id, status, whether it is an asset backfill, its partitions."""
        data = self.query(
            """query($limit: Int) { partitionBackfillsOrError(limit: $limit) { __typename
                 ... on PartitionBackfills { results { id status isAssetBackfill partitionNames } } } }""",
            {"limit": limit},
        )
        return data["partitionBackfillsOrError"].get("results", [])

    def wait_for_backfill(self, backfill_id: str, timeout_s: float = 600.0) -> dict[str, Any]:
        """Poll until the backfill is done; returns its status and its runs (id, status, tags)."""
        query = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
            ... on PartitionBackfill { status isAssetBackfill partitionNames
              runs(limit: 100) { runId status tags { key value } } } } }"""
        deadline = time.monotonic() + timeout_s
        backfill: dict[str, Any] = {}
        while time.monotonic() < deadline:
            backfill = self.query(query, {"id": backfill_id})["partitionBackfillOrError"]
            if backfill["__typename"] != "PartitionBackfill":
                raise GraphQLError(f"backfill {backfill_id}: {backfill['__typename']}")
            runs_done = all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in backfill["runs"])
            if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING") and runs_done:
                return backfill
            time.sleep(2.0)
        raise GraphQLError(f"backfill {backfill_id} still {backfill.get('status')} after {timeout_s:.0f}s")
