"""Training partitions and the data days behind them (no Dagster; the partitions definitions,
the stages and the asset graph all read the calendar through these functions).

The first training partition is the last day of the batch window and *is* the batch phase: it
trains on the whole window. Every later partition is one streaming day that continues from the
previous day's checkpoint.
"""

from datetime import date, timedelta

from recdistill_dagster.config import CalendarConfig
from recdistill_dagster.errors import PipelineStepError


def is_batch_partition(calendar: CalendarConfig, partition: date) -> bool:
    return partition == calendar.batch_end


def require_training_partition(calendar: CalendarConfig, partition: date) -> None:
    if calendar.open_ended and partition > calendar.last_training_day:
        raise PipelineStepError(
            f"partition {partition} is not complete yet: the open-ended calendar trains a day once it is over "
            f"(the last complete day is {calendar.last_training_day})"
        )
    if partition < calendar.batch_end or partition > calendar.last_training_day:
        raise PipelineStepError(
            f"partition {partition} is outside the training calendar {calendar.batch_end}..{calendar.last_training_day}"
        )


def days_of_partition(calendar: CalendarConfig, partition: date) -> list[date]:
    """The data days a training partition trains on: the batch window or the single day."""
    require_training_partition(calendar, partition)
    return calendar.batch_window() if is_batch_partition(calendar, partition) else [partition]


def previous_partition(calendar: CalendarConfig, partition: date) -> date | None:
    return None if is_batch_partition(calendar, partition) else partition - timedelta(days=1)
