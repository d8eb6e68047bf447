"""Small helpers shared by the asset definitions: partition keys, MLflow tags, progress, metadata."""

import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from dagster import AssetExecutionContext, MetadataValue

from models.training import TrainStats
from recdistill_dagster.partitions import parse_day

GROUP_DATA = "data"
GROUP_TEACHER = "teacher"
GROUP_STUDENT = "student"
GROUP_EVALUATION = "evaluation"
OWNERS = ["team:ml-platform"]


def partition_day(context: AssetExecutionContext) -> date:
    return parse_day(context.partition_key)


def mlflow_tags(context: AssetExecutionContext, role: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags that tie an MLflow run to the Dagster run, partition and asset that produced it."""
    tags = {
        "dagster.run_id": context.run.run_id,
        "dagster.partition": context.partition_key,
        "dagster.job": context.job_def.name,
        "recdistill.role": role,
    }
    tags.update(extra or {})
    return tags


def progress_logger(
    context: AssetExecutionContext, label: str, min_interval_s: float = 5.0
) -> Callable[[dict[str, Any]], None]:
    """Log training progress to the Dagster run log, at most every `min_interval_s` seconds."""
    last = [0.0]

    def report(progress: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last[0] < min_interval_s:
            return
        last[0] = now
        eta = progress.get("eta_seconds")
        context.log.info(
            f"{label}: step {progress.get('step')} epoch {progress.get('epoch')} · "
            f"{progress.get('samples', 0):,} samples · {progress.get('samples_per_s', 0):,.0f} samples/s · "
            f"loss {progress.get('loss', float('nan')):.4f}" + (f" · ETA {eta:.0f}s" if eta is not None else "")
        )

    return report


def train_stats_metadata(stats: TrainStats) -> dict[str, Any]:
    return {
        "train_steps": stats.steps,
        "train_samples": stats.samples,
        "train_epochs": stats.epochs,
        "train_seconds": MetadataValue.float(round(stats.seconds, 2)),
        "samples_per_second": MetadataValue.float(round(stats.samples_per_second, 1)),
        "mean_loss": MetadataValue.float(float(stats.mean_loss)),
    }


def train_stats_metrics(stats: TrainStats) -> dict[str, float]:
    values = {
        "train_steps": stats.steps,
        "train_samples": stats.samples,
        "train_seconds": stats.seconds,
        "samples_per_second": stats.samples_per_second,
        "mean_loss": stats.mean_loss,
    }
    for name in ("task_loss", "distill_loss", "aux_loss", "distill_matched_fraction"):
        value = getattr(stats, name, None)
        if value is not None:
            values[name] = value
    return values


def markdown_table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)

