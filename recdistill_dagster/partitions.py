"""Daily partitions derived from the calendar of the active profile.

Two partition sets share the same day keys:
- `data`: every day with samples, from the first day of the batch window to one day past the last
  training day (report d evaluates on day d+1); open-ended: to the last complete day by the clock;
- `training`: the first key is the last day of the batch window and *is* the batch phase; every
  later key is one streaming day that continues from the previous day's checkpoint.
"""

import warnings
from dataclasses import dataclass
from datetime import date, timedelta

from dagster import BetaWarning, DailyPartitionsDefinition, TimeWindowPartitionMapping

from recdistill_dagster.config import CalendarConfig
from recdistill_dagster.graph import DayMapping


@dataclass(frozen=True)
class PipelinePartitions:
    data: DailyPartitionsDefinition
    training: DailyPartitionsDefinition


def build_partitions(calendar: CalendarConfig) -> PipelinePartitions:
    if calendar.open_ended:  # no end date: Dagster's daily partitions run to the last complete day
        return PipelinePartitions(
            data=DailyPartitionsDefinition(start_date=calendar.start_date.isoformat()),
            training=DailyPartitionsDefinition(start_date=calendar.batch_end.isoformat()),
        )
    day_after = timedelta(days=1)
    return PipelinePartitions(
        data=DailyPartitionsDefinition(
            start_date=calendar.start_date.isoformat(),
            end_date=(calendar.last_data_day + day_after).isoformat(),  # end is exclusive
        ),
        training=DailyPartitionsDefinition(
            start_date=calendar.batch_end.isoformat(),
            end_date=(calendar.last_training_day + day_after).isoformat(),
        ),
    )


# The previous day's partition of a self-dependent chain; the first partition has none. The flag
# is beta in Dagster 1.13 and its warning says so on every import.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)
    PREVIOUS_DAY = TimeWindowPartitionMapping(
        start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
    )
SAME_DAY = TimeWindowPartitionMapping()
NEXT_DAY = TimeWindowPartitionMapping(start_offset=1, end_offset=1)
# How each edge of the asset graph is declared to Dagster. A training partition's trained days (the
# batch window) are declared as the same day: Dagster only needs the edge, the lineage audit reads the
# window from the calendar.
PARTITION_MAPPINGS: dict[DayMapping, TimeWindowPartitionMapping] = {
    DayMapping.SAME_DAY: SAME_DAY,
    DayMapping.TRAINED_DAYS: SAME_DAY,
    DayMapping.PREVIOUS_DAY: PREVIOUS_DAY,
    DayMapping.NEXT_DAY: NEXT_DAY,
}


def parse_day(partition_key: str) -> date:
    return date.fromisoformat(partition_key)
