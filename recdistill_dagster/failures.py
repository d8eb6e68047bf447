"""A failed run said in one paragraph a person reads: asset, partition, reason, what to do.

The CLI (and so `make run`, `make movielens`) ends a failure with it instead of Dagster's stack traces;
`--verbose` prints the traces too. Expected failures (`PipelineStepError`, a blocking check, a bad
configuration) carry their own reason and remedy; anything else is said to be unexpected, with where
to find its trace.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from recdistill_dagster.graph import AssetGraph

EXPECTED = ("PipelineStepError", "ConfigError", "BlockingCheckFailed")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class StepFailure:
    step: str
    kind: str  # the exception class behind the failure
    message: str
    finished_days: tuple[str, ...] = ()
    trace: str = ""


def _root(error: Any) -> Any:
    """The innermost cause of a serialized error (Dagster wraps the user's exception)."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error


def step_failures(events: Sequence[Any]) -> list[StepFailure]:
    """The failed steps of a run (or the run itself, when it failed before any step), from its events."""
    failures: list[StepFailure] = []
    for event in events:
        if event.event_type_value not in ("STEP_FAILURE", "PIPELINE_FAILURE", "RUN_FAILURE"):
            continue
        if event.event_type_value != "STEP_FAILURE" and failures:
            continue  # the run's own failure repeats its steps'
        data = event.event_specific_data
        error = getattr(data, "error", None)
        root = _root(error)
        user = getattr(data, "user_failure_data", None)
        message = (root.message if root is not None else event.message or "").strip()
        kind = root.cls_name if root is not None else "Error"
        if user is not None and user.description:  # RangeMaterializer's Failure: "Kind: message"
            kind, _, message = user.description.partition(": ")
        finished = ()
        if user is not None and "finished_days" in (user.metadata or {}):
            finished = tuple(user.metadata["finished_days"].value)
        head, colon, rest = message.partition(": ")
        if colon and root is not None and head.endswith(root.cls_name):  # "package.module.Class: message"
            message = rest
        message = " ".join(line.strip() for line in message.splitlines() if line.strip())
        failures.append(StepFailure(step=event.step_key or "run", kind=kind, message=message.rstrip("."),
                                    finished_days=finished, trace=error.to_string() if error else ""))
    return failures


def _step_assets(graph: AssetGraph) -> dict[str, list[str]]:
    steps: dict[str, list[str]] = {}
    for key, node in graph.nodes.items():
        steps.setdefault(node.step or key.replace("/", "__"), []).append(key)
    return steps


def _failed_day(tags: dict[str, str], finished: tuple[str, ...]) -> str:
    if RANGE_START in tags and RANGE_END in tags:
        day, end = date.fromisoformat(tags[RANGE_START]), date.fromisoformat(tags[RANGE_END])
        while day < end and day.isoformat() in finished:
            day += timedelta(days=1)
        return day.isoformat()
    return tags.get("dagster/partition", "?")


def remedy(failure: StepFailure, day: str, profile: str) -> str:
    if failure.kind == "BlockingCheckFailed":
        return (f"Its check failed, so nothing downstream of it ran for {day}. A bad teacher snapshot is repaired by "
                f"the teacher_rollback_sensor (make ui PROFILE={profile} → Automation → teacher_rollback_sensor), or "
                f"by hand once the cause is fixed: python -m recdistill_dagster backfill {day} <last day> "
                f"--profile {profile}.")
    if failure.kind == "ConfigError":
        return "Fix the configuration (the message names the key or the profile), then run again."
    if failure.kind in EXPECTED:
        return ""  # the pipeline's own errors say what to do
    return "The pipeline did not expect this error: rerun with --verbose for the trace, and report it with the run id."


def explain(failures: list[StepFailure], graph: AssetGraph, tags: dict[str, str], run_id: str, job: str,
            profile: str) -> str:
    """One paragraph for a failed run (the most upstream failure first, the others named)."""
    steps = _step_assets(graph)
    order = list(steps)
    failures = sorted(failures, key=lambda f: order.index(f.step) if f.step in order else -1)
    first = failures[0]
    day = _failed_day(tags, first.finished_days)
    assets = ", ".join(steps.get(first.step, [])) or f"run {run_id[:8]} (before any step)"
    text = f"error: {assets} [{day}] failed (run {run_id[:8]}, {job}): {first.message}."
    if first.kind not in EXPECTED:
        text = f"error: {assets} [{day}] failed (run {run_id[:8]}, {job}): {first.kind}: {first.message}."
    if first.finished_days:
        text += f" Days this run finished before it: {', '.join(first.finished_days)}."
    others = [", ".join(steps.get(f.step, [f.step])) for f in failures[1:]]
    if others:
        text += f" Also failed in this run: {'; '.join(others)}."
    fix = remedy(first, day, profile)
    if fix:
        text += " " + fix
    return text + (f" The full trace: add --verbose, or the run's log in the UI (make ui PROFILE={profile} → Runs → "
                   f"{run_id[:8]}).")
