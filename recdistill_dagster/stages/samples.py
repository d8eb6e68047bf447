"""Stage: one day's sample streams (the unsampled evaluation log, the teacher's and each student's)."""

from dataclasses import dataclass
from datetime import date

import polars as pl

from models.metrics import auc
from recdistill_dagster import layout
from recdistill_dagster.data.sampling import sample_stream
from recdistill_dagster.data.schema import validate_samples
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.stages.context import StageContext

EVAL = "eval"
TEACHER = "teacher"


@dataclass(frozen=True)
class StreamStats:
    rows: int
    positives: int
    url: str

    @property
    def label_rate(self) -> float:
        return self.positives / self.rows if self.rows else float("nan")


@dataclass(frozen=True)
class StreamsResult:
    day: date
    streams: dict[str, StreamStats]  # "eval", "teacher", then one per student name
    base_rate: float  # the unsampled click rate
    bayes_auc: float | None  # AUC of p_true on the unsampled log (synthetic data only)


def stream_path(stream: str, day: date) -> str:
    """The shared streams at the top of the store, a student's below its own folder."""
    if stream == EVAL:
        return layout.samples_path("eval", day)
    if stream == TEACHER:
        return layout.samples_path("teacher", day)
    return layout.student_samples_path(stream, day)


def materialize_sample_streams(ctx: StageContext, day: date) -> StreamsResult:
    """Read (or generate) the day's impressions and write every stream, each validated first."""
    config = ctx.config
    if day in config.faults.missing_data_days:
        raise PipelineStepError(
            f"data partition {day}: the upstream impressions for {day} have not arrived (outage drill: "
            "faults.missing_data_days); backfill this day once the data is there"
        )
    impressions = ctx.source.impressions(day)
    validate_samples(impressions, table="impressions", partition=day.isoformat())
    if impressions.height == 0:
        raise PipelineStepError(f"data partition {day}: the source has no impressions for this day")
    seed = config.sampling.seed
    frames: dict[str, pl.DataFrame] = {
        EVAL: impressions,
        TEACHER: sample_stream(impressions, config.sampling.teacher, seed=seed),
        **{s.name: sample_stream(impressions, s.sampling, seed=seed) for s in config.active_students},
    }
    streams = {}
    for stream, frame in frames.items():
        validate_samples(frame, table=f"{stream}_samples", partition=day.isoformat())
        url = ctx.store.write_parquet(stream_path(stream, day), frame)
        streams[stream] = StreamStats(rows=frame.height, positives=int(frame["label"].sum()), url=url)
    p_true = impressions["p_true"]
    bayes = auc(p_true.to_numpy(), impressions["label"].to_numpy()) if p_true.null_count() == 0 else None
    return StreamsResult(day=day, streams=streams, base_rate=streams[EVAL].label_rate, bayes_auc=bayes)
