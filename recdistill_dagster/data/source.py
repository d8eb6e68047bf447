"""The interface every day-partitioned data source offers, and the factory that picks one."""

from datetime import date
from typing import Protocol, runtime_checkable

import polars as pl

from recdistill_dagster.config import MovieLensConfig, PipelineConfig, SyntheticWorldConfig
from recdistill_dagster.data.movielens import MovieLensSource
from recdistill_dagster.data.schema import FeatureVocab
from recdistill_dagster.data.synthetic import SyntheticWorld


@runtime_checkable
class DaySource(Protocol):
    """A source of full, unsampled impressions per UTC day, matching SAMPLE_SCHEMA."""

    def vocab(self) -> FeatureVocab: ...

    def impressions(self, day: date) -> pl.DataFrame: ...


def make_source(config: PipelineConfig) -> DaySource:
    """The source configured by `config.data.kind`."""
    data = config.data
    if isinstance(data, SyntheticWorldConfig):
        return SyntheticWorld(data, config.calendar.start_date)
    if isinstance(data, MovieLensConfig):
        return MovieLensSource(data)
    raise TypeError(f"unsupported data source config {type(data).__name__}")
