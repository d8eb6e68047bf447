"""Launching runs in-process: one partition, or a whole range in one run (single-run backfill).

The training assets carry `BackfillPolicy.single_run()`: a run tagged with a partition range
materializes every day of it, in date order, inside each asset. This is what the rollback sensor
launches, what `python -m recdistill_dagster backfill` runs, and what a UI asset backfill becomes.
"""

import logging
from collections.abc import Sequence
from datetime import date
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    Field,
    InitLoggerContext,
    JobDefinition,
    logger,
)

from recdistill_dagster.progress import notice
from recdistill_dagster.sensors import RANGE_END_TAG, RANGE_START_TAG

TERMINAL_LOGGER = "recdistill_terminal"
ENTRY_TAG = "recdistill/entry"  # which command of this project executed a run (named by the chain lock)


class _TerminalHandler(logging.Handler):
    """A run's own warnings and errors as one line each; Dagster's events (and their stack traces) are left
    out: the CLI ends a failure with one paragraph of its own."""

    def emit(self, record: logging.LogRecord) -> None:
        meta = record.__dict__.get("dagster_meta") or {}
        message = str(meta.get("orig_message") or record.getMessage())
        # Dagster's own notices that a step is skipped because an upstream one failed: the paragraph
        # that ends the run names what failed.
        if meta.get("dagster_event") is not None or message.startswith("Dependencies for step"):
            return
        where = meta.get("step_key") or meta.get("job_name") or "run"
        notice(f"  {record.levelname.lower()}: {where}: {message}")


@logger(config_schema={"log_level": Field(str, default_value="WARNING")},
        description="The CLI's terminal: the run's warnings and errors, one line each, without stack traces.")
def terminal_logger(init_context: InitLoggerContext) -> logging.Logger:
    log = logging.Logger(TERMINAL_LOGGER, level=init_context.logger_config["log_level"])
    log.addHandler(_TerminalHandler())
    return log


def cli_run_config(verbose: bool) -> dict[str, Any]:
    """The CLI's loggers: one line per warning (and no traces) by default, Dagster's console with --verbose."""
    if verbose:
        return {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    return {"loggers": {TERMINAL_LOGGER: {"config": {"log_level": "WARNING"}}}}


def subset(job: JobDefinition, asset_selection: Sequence[AssetKey] | None) -> JobDefinition:
    """`job` restricted to `asset_selection` with the checks of the job's own steps: a bare asset selection
    would also pull in every check that targets a selected asset (the freshness checks, which their sensor
    evaluates), as an extra step of the run."""
    if not asset_selection:
        return job
    selected = set(asset_selection)
    checks = {key for key in job.asset_layer.asset_graph.asset_check_keys if key.asset_key in selected}
    return job.get_subset(asset_selection=selected, asset_check_selection=checks)


def execute_range(defs: Definitions, job_name: str, start: date, end: date, instance: DagsterInstance,
                  run_config: dict[str, Any] | None = None, asset_selection: Sequence[AssetKey] | None = None,
                  tags: dict[str, str] | None = None) -> ExecuteInProcessResult:
    """One run of `job_name` over the partitions start..end (inclusive)."""
    if end < start:
        raise ValueError(f"empty range {start}..{end}")
    job = subset(defs.resolve_job_def(job_name), asset_selection)
    return job.execute_in_process(
        instance=instance,
        run_config=run_config,
        tags={**(tags or {}), RANGE_START_TAG: start.isoformat(), RANGE_END_TAG: end.isoformat()},
        raise_on_error=False,
    )
