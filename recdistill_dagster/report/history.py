"""Reading stored reports back (pages, terminal tables, the benchmark)."""

from datetime import date

from recdistill_dagster import layout
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.report.schema import TransferabilityReport
from recdistill_dagster.storage import Store


def report_history(config: PipelineConfig, store: Store, student: str,
                   up_to: date | None = None) -> list[TransferabilityReport]:
    """Every stored report of one student up to a day (default: all), in date order."""
    days = [d for d in config.calendar.training_days() if up_to is None or d <= up_to]
    paths = [layout.report_path(student, d) for d in days]
    return [TransferabilityReport.model_validate(store.read_json(p)) for p in paths if store.exists(p)]
