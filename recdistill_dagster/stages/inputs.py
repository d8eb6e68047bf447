"""Reading a stage's inputs from the store, with errors that say which partition to build first."""

from datetime import date

import polars as pl

from recdistill_dagster.data.schema import SAMPLE_SCHEMA, validate_samples
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.storage import Store


def require_files(store: Store, paths: dict[date, str], what: str, consumer: str, fix: str) -> None:
    """Every day's file exists, or one error naming the missing days and what to materialize."""
    missing = [d.isoformat() for d, path in paths.items() if not store.exists(path)]
    if missing:
        raise PipelineStepError(f"{consumer}: {what} missing for day(s) {', '.join(missing)}; {fix}")


def load_samples(store: Store, path: str, table: str, day: date) -> pl.DataFrame:
    """A table whose rows follow the sample contract (a student dataset carries teacher columns too)."""
    frame = store.read_parquet(path, what=f"{table} {day}")
    # The contract's columns only; missing ones are left for the validator to name.
    present = [column for column in SAMPLE_SCHEMA if column in frame.columns]
    validate_samples(frame.select(present), table=table, partition=day.isoformat())
    return frame
