"""Materialization metadata that reads well in the Dagster UI: rounded numbers, intervals, tables."""

from collections.abc import Sequence

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from recdistill_dagster.report.models import BAYES, REPORT_MODELS
from recdistill_dagster.report.schema import TransferabilityReport


def number(value: float | None, digits: int = 4) -> MetadataValue | None:
    """A float rounded for reading (the exact value stays in the report JSON); None when absent."""
    return MetadataValue.float(round(float(value), digits)) if value is not None else None


def interval(ci: Sequence[float] | None, digits: int = 4) -> MetadataValue | None:
    return MetadataValue.json([round(float(x), digits) for x in ci]) if ci is not None else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return round(float(value), digits) if value is not None else None


def models_table(report: TransferabilityReport) -> MetadataValue:
    """One row per model: AUC on the day, AUC cumulated, LogLoss and mean prediction on the day."""
    day, cumulative = report.daily, report.cumulative
    records = [
        TableRecord({
            "model": model.label,
            "AUC (day)": _rounded(day.auc.get(model.key)),
            "AUC (cumulated)": _rounded(cumulative.auc.get(model.key)),
            "LogLoss (day)": _rounded(day.logloss.get(model.key)),
            "mean predicted (day)": _rounded(day.mean_predicted.get(model.key)),
        })
        for model in REPORT_MODELS
    ]
    records.append(TableRecord({
        "model": BAYES.label, "AUC (day)": _rounded(day.auc.get(BAYES.key)),
        "AUC (cumulated)": _rounded(cumulative.auc.get(BAYES.key)), "LogLoss (day)": None,
        "mean predicted (day)": _rounded(day.mean_p_true),
    }))
    columns = [TableColumn("model", "string")] + [
        TableColumn(name, "float") for name in ("AUC (day)", "AUC (cumulated)", "LogLoss (day)", "mean predicted (day)")
    ]
    return MetadataValue.table(records=records, schema=TableSchema(columns=columns))
