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
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from recdistill_dagster.config import ConfigError, PipelineConfig, load_config
from recdistill_dagster.home import active_profile, ensure_dagster_home, mlflow_tracking_uri, state_home


def summaries(config: PipelineConfig, home: Path) -> str:
    """Every student's transferability table from its stored reports."""
    from recdistill_dagster.home import store_url
    from recdistill_dagster.report.history import report_history
    from recdistill_dagster.report.text import summary_table
    from recdistill_dagster.storage import ArtifactStore

    store = ArtifactStore(store_url(home))
    return "\n\n".join(summary_table(report_history(config, store, s.name)) for s in config.active_students)


def run_pipeline(profile: str, config_file: str | None, until: date | None = None, verbose: bool = False) -> int:
    started = time.monotonic()
    home = state_home(profile)
    dagster_home = ensure_dagster_home(home)
    config = load_config(profile, config_file)
    os.environ.setdefault("RECDISTILL_PROFILE", profile)

    from dagster import DagsterInstance

    from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
    from recdistill_dagster.progress import TerminalProgress, attached, duration, remaining_seconds

    defs = build_definitions(profile, home, config_file)
    instance = DagsterInstance.get()
    # Progress comes through the terminal bar; Dagster's console shows warnings and errors only
    # (--verbose: its INFO lines too, with plain progress lines instead of the redrawn bar).
    log_level = "INFO" if verbose else "WARNING"
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    data_job = defs.resolve_job_def(SAMPLE_STREAMS_JOB)
    training_job = defs.resolve_job_def(DAILY_TRAINING_JOB)
    calendar = config.calendar
    training_days = [d for d in calendar.training_days() if until is None or d <= until]
    last_data_day = training_days[-1] + timedelta(days=1)  # report d evaluates on day d+1
    data_days = [d for d in calendar.data_days() if d <= last_data_day]
    def kind(day: date) -> str:
        return "batch phase" if day == calendar.batch_end else "streaming"

    steps = [(data_job, day, "sample streams", f"sample streams {day}") for day in data_days] + [
        (training_job, day, kind(day), f"training {day} ({kind(day)})") for day in training_days
    ]
    terminal = TerminalProgress(tty=False if verbose else None)
    terminal.line(f"profile {profile}: {len(data_days)} data days, batch window {calendar.start_date}.."
                  f"{calendar.batch_end}, {len(training_days) - 1} streaming day(s); state in {home}")
    done: list[tuple[str, float]] = []
    with attached(terminal):
        for index, (job, day, step_kind, title) in enumerate(steps, start=1):
            t0 = time.monotonic()
            terminal.phase(f"[{index}/{len(steps)}] {title}")
            job.execute_in_process(partition_key=day.isoformat(), instance=instance, run_config=run_config)
            done.append((step_kind, time.monotonic() - t0))
            left = remaining_seconds(done, [k for _, _, k, _ in steps[index:]])
            terminal.line(f"  [{index}/{len(steps)}] {title}  {done[-1][1]:6.1f}s   elapsed "
                          f"{duration(time.monotonic() - started)}"
                          + (f", about {duration(left)} left" if left else ""))
    terminal.close()
    wall = time.monotonic() - started
    print()
    print(summaries(config, home))
    print()
    print(f"wall time: {wall:.1f}s ({wall / 60:.1f} min)")
    print(f"report:    {home / 'reports' / 'index.html'}  (the students side by side; self-contained HTML)")
    print(f"           {home / 'reports'}/<student>/index.html, <student>/<day>/transferability.json, plots/")
    print(f"Dagster:   DAGSTER_HOME={dagster_home}  →  make ui  (http://127.0.0.1:3000)")
    print(f"MLflow:    {mlflow_tracking_uri(home)}  →  make mlflow-ui  (http://127.0.0.1:5000)")
    return 0


def backfill(profile: str, config_file: str | None, start: date, end: date) -> int:
    """Rebuild training partitions start..end: their data days, then the training range, one run each."""
    from dagster import DagsterInstance

    from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
    from recdistill_dagster.runs import QUIET, execute_range

    home = state_home(profile)
    ensure_dagster_home(home)
    config = load_config(profile, config_file)
    calendar = config.calendar
    if not calendar.batch_end <= start <= end <= calendar.last_training_day:
        print(f"error: {start}..{end} is not inside the training calendar {calendar.batch_end}.."
              f"{calendar.last_training_day}", file=sys.stderr)
        return 2
    defs = build_definitions(profile, home, config_file)
    instance = DagsterInstance.get()
    data_start = calendar.start_date if start == calendar.batch_end else start
    steps = [(SAMPLE_STREAMS_JOB, data_start, end + timedelta(days=1)), (DAILY_TRAINING_JOB, start, end)]
    for job_name, first, last in steps:
        t0 = time.monotonic()
        result = execute_range(defs, job_name, first, last, instance, run_config=QUIET)
        status = "ok" if result.success else "FAILED"
        print(f"  {job_name} {first}..{last}: {status} in {time.monotonic() - t0:.1f}s (run {result.run_id})",
              flush=True)
        if not result.success:
            failure = next((e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"), "")
            print(f"error: {failure}", file=sys.stderr)
            return 1
    print(summaries(config, home))
    return 0


def mark_bad(profile: str, snapshot: str, reason: str) -> int:
    """An operator's rollback: record a teacher snapshot as bad; the rollback sensor does the rest."""
    from recdistill_dagster.home import store_url
    from recdistill_dagster.registry import SnapshotRegistry
    from recdistill_dagster.storage import ArtifactStore

    registry = SnapshotRegistry(ArtifactStore(store_url(state_home(profile))))
    try:
        record = registry.mark_bad(snapshot, reason=reason, detected_by=f"operator ({os.environ.get('USER', '?')})")
    except (KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{record.snapshot_id} (partition {record.partition}, produced by run {record.dagster_run_id}) is now "
          f"bad: {record.reason}. The teacher_rollback_sensor re-materializes what descends from it.")
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


def main(argv: list[str] | None = None) -> int:
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
        command.add_argument("--config", dest="config_file", default=None, help="YAML file of overrides")
    run.add_argument("--until", type=date.fromisoformat, default=None, help="last training day to run")
    run.add_argument("--verbose", action="store_true",
                     help="Dagster's INFO log lines too, and plain progress lines instead of the redrawn bar")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run_pipeline(args.profile, args.config_file, args.until, args.verbose)
        if args.command == "mark-bad":
            return mark_bad(args.profile, args.snapshot, args.reason)
        if args.command == "backfill":
            return backfill(args.profile, args.config_file, args.start, args.end)
        if args.command == "lineage" and args.graphql_url:
            from recdistill_dagster.lineage_graphql import run as graphql_lineage

            return graphql_lineage(args.graphql_url, args.asset, args.day, args.json)
        if args.command == "lineage":
            return lineage(args.profile, args.config_file, args.asset, args.day, args.json)
        config = load_config(args.profile, args.config_file)
        print(summaries(config, state_home(args.profile)))
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
