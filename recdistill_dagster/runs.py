"""Launching runs in-process: one partition, or a whole range in one run (single-run backfill).

The training assets carry `BackfillPolicy.single_run()`: a run tagged with a partition range
materializes every day of it, in date order, inside each asset. This is what the rollback sensor
launches, what `python -m recdistill_dagster backfill` runs, and what a UI asset backfill becomes.
"""

from datetime import date
from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from recdistill_dagster.sensors import RANGE_END_TAG, RANGE_START_TAG

QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def execute_range(defs: Definitions, job_name: str, start: date, end: date, instance: DagsterInstance,
                  run_config: dict[str, Any] | None = None, asset_selection: list | None = None,
                  tags: dict[str, str] | None = None) -> ExecuteInProcessResult:
    """One run of `job_name` over the partitions start..end (inclusive)."""
    if end < start:
        raise ValueError(f"empty range {start}..{end}")
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance,
        run_config=run_config,
        asset_selection=asset_selection,
        tags={**(tags or {}), RANGE_START_TAG: start.isoformat(), RANGE_END_TAG: end.isoformat()},
        raise_on_error=False,
    )
