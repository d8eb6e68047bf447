"""Materialization metadata that reads well in the Dagster UI: rounded numbers, intervals, tables."""

from typing import Any

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

# Report key prefix → the model's name for people (the report's per-model AUC and LogLoss keys).
REPORT_MODELS = {
    "teacher": "teacher",
    "student_raw": "baseline student (P_S_raw)",
    "student_distill": "distilled student, main tower",
    "student_aux": "distilled student, aux tower",
}


def number(value: float | None, digits: int = 4) -> MetadataValue | None:
    """A float rounded for reading (the exact value stays in the report JSON); None when absent."""
    return MetadataValue.float(round(float(value), digits)) if value is not None else None


def interval(ci: list[float] | tuple[float, float] | None, digits: int = 4) -> MetadataValue | None:
    return MetadataValue.json([round(float(x), digits) for x in ci]) if ci is not None else None


def _rounded(value: Any, digits: int = 4) -> float | None:
    return round(float(value), digits) if value is not None else None


def models_table(report: dict[str, Any]) -> MetadataValue:
    """One row per model: AUC on the day, AUC cumulated, LogLoss and mean prediction on the day."""
    cumulative = report["cumulative"]
    records = [
        TableRecord({
            "model": label,
            "AUC (day)": _rounded(report.get(f"{key}_auc")),
            "AUC (cumulated)": _rounded(cumulative.get(f"{key}_auc")),
            "LogLoss (day)": _rounded((report.get("logloss") or {}).get(key)),
            "mean predicted (day)": _rounded((report.get("mean_predicted") or {}).get(key)),
        })
        for key, label in REPORT_MODELS.items()
    ]
    records.append(TableRecord({
        "model": "Bayes limit (p_true)", "AUC (day)": _rounded(report.get("bayes_auc")),
        "AUC (cumulated)": _rounded(cumulative.get("bayes_auc")), "LogLoss (day)": None,
        "mean predicted (day)": _rounded(report.get("mean_p_true")),
    }))
    columns = [TableColumn("model", "string")] + [
        TableColumn(name, "float") for name in ("AUC (day)", "AUC (cumulated)", "LogLoss (day)", "mean predicted (day)")
    ]
    return MetadataValue.table(records=records, schema=TableSchema(columns=columns))
