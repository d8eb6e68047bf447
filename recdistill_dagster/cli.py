"""Command line: run the whole pipeline in date order, or print the summary of what ran.

    python -m recdistill_dagster run --profile demo
    python -m recdistill_dagster summary --profile demo
    python -m recdistill_dagster lineage ranker/student_checkpoint 2026-01-10 [--json]
    python -m recdistill_dagster lineage prerank/student_checkpoint 2026-01-10 --graphql-url http://127.0.0.1:3000/graphql
    python -m recdistill_dagster backfill 2026-01-07 2026-01-12

Runs go through Dagster (`execute_in_process` on the instance under DAGSTER_HOME), so every
materialization is in the event log and visible in `dagster dev` afterwards.
"""

import argparse
import logging
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from recdistill_dagster.config import ConfigError, PipelineConfig, load_config
from recdistill_dagster.home import (
    active_config_file,
    active_profile,
    ensure_dagster_home,
    mlflow_tracking_uri,
    state_home,
)


def summaries(config: PipelineConfig, home: Path) -> str:
    """Every student's transferability table from its stored reports."""
    from recdistill_dagster.home import store_url
    from recdistill_dagster.report.history import report_history
    from recdistill_dagster.report.text import summary_table
    from recdistill_dagster.storage import ArtifactStore

    store = ArtifactStore(store_url(home))
    return "\n\n".join(summary_table(report_history(config, store, s.name)) for s in config.active_students)


def _ui_hints(profile: str, home: Path, dagster_home: Path) -> list[str]:
    """Where to look next: `make ui`/`make mlflow-ui` for this profile (and this state folder, if not the default)."""
    default = (Path.cwd() / ".state" / profile).resolve()
    env = f" RECDISTILL_HOME={home}" if home != default else ""
    return [
        f"Dagster:   DAGSTER_HOME={dagster_home}  →  make ui PROFILE={profile}{env}  (http://127.0.0.1:3000)",
        f"MLflow:    {mlflow_tracking_uri(home)}  →  make mlflow-ui PROFILE={profile}{env}  (http://127.0.0.1:5000)",
    ]


class RunFailed(Exception):
    """A run of the CLI failed; the message is the paragraph that explains it."""


def _execute(job: Any, instance: Any, config: PipelineConfig, profile: str, verbose: bool, entry: str,
             partition: date | None = None, start: date | None = None, end: date | None = None,
             asset_selection: list[Any] | None = None) -> Any:
    """One in-process run; the chain lock is given back after it; a failure raises `RunFailed` (one paragraph)."""
    from recdistill_dagster.failures import explain, step_failures
    from recdistill_dagster.graph import AssetGraph
    from recdistill_dagster.runs import ENTRY_TAG, cli_run_config, subset
    from recdistill_dagster.sensors import RANGE_END_TAG, RANGE_START_TAG
    from recdistill_dagster.writer import release

    tags = {ENTRY_TAG: entry}
    if start is not None and end is not None:
        tags.update({RANGE_START_TAG: start.isoformat(), RANGE_END_TAG: end.isoformat()})
    result = subset(job, asset_selection).execute_in_process(
        instance=instance, run_config=cli_run_config(verbose), tags=tags, raise_on_error=False,
        partition_key=partition.isoformat() if partition else None)
    release(instance, result.run_id)
    if result.success:
        return result
    failures = step_failures(result.all_events)
    if verbose:
        for failure in failures:
            print(failure.trace, file=sys.stderr)
    raise RunFailed(explain(failures, AssetGraph.of(config), dict(result.dagster_run.tags), result.run_id,
                            job.name, profile))


def run_pipeline(profile: str, config_file: str | None, until: date | None = None, verbose: bool = False) -> int:
    started = time.monotonic()
    home = state_home(profile)
    dagster_home = ensure_dagster_home(home)
    config = load_config(profile, config_file)
    os.environ.setdefault("RECDISTILL_PROFILE", profile)

    from dagster import AssetKey, DagsterInstance

    from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
    from recdistill_dagster.graph import AssetGraph
    from recdistill_dagster.progress import TerminalProgress, attached, duration, remaining_seconds

    defs = build_definitions(profile, home, config_file)
    instance = DagsterInstance.get()
    data_job = defs.resolve_job_def(SAMPLE_STREAMS_JOB)
    training_job = defs.resolve_job_def(DAILY_TRAINING_JOB)
    calendar = config.calendar
    training_days = [d for d in calendar.training_days() if until is None or d <= until]
    if not training_days:
        print(f"error: no training day of profile {profile!r} is complete yet (the batch window ends "
              f"{calendar.batch_end}; a day is trained once it is over)", file=sys.stderr)
        return 2
    # Report d scores the models after d on day d+1: an open-ended calendar has that day only tomorrow.
    last_data_day = min(training_days[-1] + timedelta(days=1), calendar.last_data_day)
    data_days = [d for d in calendar.data_days() if d <= last_data_day]
    reports = {AssetKey.from_user_string(k) for k in AssetGraph.of(config).keys("report")}
    without_reports = [k for k in training_job.asset_layer.executable_asset_keys if k not in reports]

    def kind(day: date) -> str:
        return "batch phase" if day == calendar.batch_end else "streaming"

    steps = [(data_job, day, "sample streams", f"sample streams {day}", None) for day in data_days] + [
        (training_job, day, kind(day), f"training {day} ({kind(day)})",
         None if day < last_data_day else without_reports) for day in training_days
    ]
    terminal = TerminalProgress(tty=False if verbose else None)
    streaming = f"{len(training_days) - 1} streaming day(s)" + (" so far (open-ended)" if calendar.open_ended else "")
    terminal.line(f"profile {profile}: {len(data_days)} data days, batch window {calendar.start_date}.."
                  f"{calendar.batch_end}, {streaming}; state in {home}")
    done: list[tuple[str, float]] = []
    with attached(terminal):
        try:
            for index, (job, day, step_kind, title, selection) in enumerate(steps, start=1):
                t0 = time.monotonic()
                terminal.phase(f"[{index}/{len(steps)}] {title}")
                _execute(job, instance, config, profile, verbose, "cli run", partition=day, asset_selection=selection)
                done.append((step_kind, time.monotonic() - t0))
                left = remaining_seconds(done, [k for _, _, k, _, _ in steps[index:]])
                terminal.line(f"  [{index}/{len(steps)}] {title}  {done[-1][1]:6.1f}s   elapsed "
                              f"{duration(time.monotonic() - started)}"
                              + (f", about {duration(left)} left" if left else ""))
        except RunFailed as failed:
            terminal.close()
            print(str(failed), file=sys.stderr)
            return 1
    terminal.close()
    wall = time.monotonic() - started
    print()
    print(summaries(config, home))
    print()
    if training_days[-1] >= last_data_day:
        print(f"report {training_days[-1]} runs once {last_data_day + timedelta(days=1)} is complete (it scores the "
              f"models after {training_days[-1]} on that day)")
    print(f"wall time: {wall:.1f}s ({wall / 60:.1f} min)")
    print(f"report:    {home / 'reports' / 'index.html'}  (the students side by side; self-contained HTML)")
    print(f"           {home / 'reports'}/<student>/index.html, <student>/<day>/transferability.json, plots/")
    print("\n".join(_ui_hints(profile, home, dagster_home)))
    return 0


def backfill(profile: str, config_file: str | None, start: date, end: date, verbose: bool = False) -> int:
    """Rebuild training partitions start..end: their data days, then the training range, one run each."""
    from dagster import DagsterInstance

    from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions

    home = state_home(profile)
    ensure_dagster_home(home)
    config = load_config(profile, config_file)
    calendar = config.calendar
    if not calendar.batch_end <= start <= end <= calendar.last_training_day:
        print(f"error: {start}..{end} is not inside the training calendar {calendar.batch_end}.."
              f"{calendar.last_training_day} of profile {profile!r}; nothing was run", file=sys.stderr)
        return 2
    defs = build_definitions(profile, home, config_file)
    instance = DagsterInstance.get()
    data_start = calendar.start_date if start == calendar.batch_end else start
    # Report d scores on day d+1: an open-ended calendar may not have that day yet.
    data_end = min(end + timedelta(days=1), calendar.last_data_day)
    steps = [(SAMPLE_STREAMS_JOB, data_start, data_end), (DAILY_TRAINING_JOB, start, end)]
    for job_name, first, last in steps:
        t0 = time.monotonic()
        try:
            result = _execute(defs.resolve_job_def(job_name), instance, config, profile, verbose, "cli backfill",
                              start=first, end=last)
        except RunFailed as failed:
            print(f"  {job_name} {first}..{last}: FAILED in {time.monotonic() - t0:.1f}s", flush=True)
            print(str(failed), file=sys.stderr)
            return 1
        print(f"  {job_name} {first}..{last}: ok in {time.monotonic() - t0:.1f}s (run {result.run_id})", flush=True)
    print(summaries(config, home))
    return 0


def mark_bad(profile: str, config_file: str | None, snapshot: str, reason: str) -> int:
    """An operator's rollback: record a teacher snapshot as bad, and say what will follow (and what will not)."""
    from dagster import DagsterInstance

    from recdistill_dagster.home import store_url
    from recdistill_dagster.operator import explain_mark_bad, operator_identity
    from recdistill_dagster.registry import SnapshotRegistry
    from recdistill_dagster.storage import ArtifactStore

    config = load_config(profile, config_file)
    home = state_home(profile)
    ensure_dagster_home(home)
    registry = SnapshotRegistry(ArtifactStore(store_url(home)))
    try:
        before = registry.get(snapshot)
        if before is None:
            raise KeyError(f"teacher snapshot {snapshot} is not in the registry of {home} (profile {profile}); "
                           "`python -m recdistill_dagster lineage teacher_checkpoint <day>` lists the current ones")
        record = registry.mark_bad(snapshot, reason=reason, detected_by=f"operator ({operator_identity()})")
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print("\n".join(explain_mark_bad(DagsterInstance.get(), config, registry, before, record, profile)))
    return 0


def lineage(profile: str, config_file: str | None, asset: str, day: date, as_json: bool) -> int:
    import json

    from dagster import DagsterInstance

    from recdistill_dagster.home import store_url
    from recdistill_dagster.lineage import render, snapshot_statuses, to_json, trace
    from recdistill_dagster.registry import SnapshotRegistry
    from recdistill_dagster.storage import ArtifactStore

    config = load_config(profile, config_file)
    home = state_home(profile)
    ensure_dagster_home(home)
    nodes = trace(DagsterInstance.get(), config, asset, day)
    statuses = snapshot_statuses(SnapshotRegistry(ArtifactStore(store_url(home))), nodes)
    print(json.dumps(to_json(asset, day, nodes, statuses), indent=2, default=str) if as_json
          else render(asset, day, nodes, statuses))
    return 0 if all(node.materialized for node in nodes) else 1


class _RangeGating(logging.Filter):
    """Drop Dagster's notice that a blocking check "emitted no result" in a range run: every day's evaluation
    is recorded, and a failing day stops the step itself, so nothing downstream runs on it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "emitted no result" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("dagster._core.execution.plan.active").addFilter(_RangeGating())
    parser = argparse.ArgumentParser(prog="recdistill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize the whole graph in date order")
    summary = sub.add_parser("summary", help="print the transferability table of the reports written so far")
    audit = sub.add_parser("lineage", help="print the upstream chain of one partition from Dagster's event log")
    audit.add_argument("asset", help="an asset key, e.g. ranker/student_checkpoint or teacher_logits")
    audit.add_argument("day", type=date.fromisoformat)
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--graphql-url", default=None,
                       help="read through a running Dagster webserver's GraphQL API instead of the local "
                            "instance, e.g. http://127.0.0.1:3000/graphql")
    refill = sub.add_parser("backfill", help="rebuild training partitions START..END in one run, in date order")
    refill.add_argument("start", type=date.fromisoformat)
    refill.add_argument("end", type=date.fromisoformat)
    bad = sub.add_parser("mark-bad", help="record a teacher snapshot as bad (the rollback sensor repairs)")
    bad.add_argument("snapshot", help="teacher snapshot id, e.g. teacher@2026-01-08#1a2b3c4d")
    bad.add_argument("--reason", required=True)
    for command in (run, summary, audit, refill, bad):
        command.add_argument("--profile", default=active_profile())
        command.add_argument("--config", dest="config_file", default=active_config_file(),
                             help="YAML file of overrides (default: $RECDISTILL_CONFIG)")
        command.add_argument("--verbose", action="store_true",
                             help="Dagster's INFO log lines and full stack traces (run: plain progress lines "
                                  "instead of the redrawn bar)")
    run.add_argument("--until", type=date.fromisoformat, default=None, help="last training day to run")
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.verbose:
            raise
        print(f"error: {args.command} failed: {type(exc).__name__}: {exc}. The pipeline did not expect this error: "
              "rerun with --verbose for the trace.", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    if args.command == "run":
        return run_pipeline(args.profile, args.config_file, args.until, args.verbose)
    if args.command == "mark-bad":
        return mark_bad(args.profile, args.config_file, args.snapshot, args.reason)
    if args.command == "backfill":
        return backfill(args.profile, args.config_file, args.start, args.end, args.verbose)
    if args.command == "lineage" and args.graphql_url:
        from recdistill_dagster.lineage_graphql import run as graphql_lineage

        return graphql_lineage(args.graphql_url, args.asset, args.day, args.json)
    if args.command == "lineage":
        return lineage(args.profile, args.config_file, args.asset, args.day, args.json)
    config = load_config(args.profile, args.config_file)
    print(summaries(config, state_home(args.profile)))
    return 0
