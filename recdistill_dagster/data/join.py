"""Joining the student's sample stream with the teacher's recorded logits.

A left join: a student row without a teacher logit (teacher lag, dropped records) is kept with null
teacher columns so it still trains the task loss; the distill loss masks it. Coverage and the label
rate of matched vs unmatched rows are reported so a biased gap (e.g. only positives lost) is visible.

Two options of a student's distillation (`distill` in its config) change what the join yields:
`soft_label_rows: teacher_stream` appends the teacher-stream rows the student's sampler dropped, which
still have a recorded logit (`teacher_stream_soft_label_rows`, `student_row` False: distillation
only), and `source: oracle` replaces every recorded logit by the oracle's (`oracle_soft_labels`).
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
from polars.io.plugins import register_io_source

from recdistill_dagster.config import SamplingPolicy
from recdistill_dagster.data.sampling import row_uniforms
from recdistill_dagster.data.schema import STUDENT_DATASET_SCHEMA, STUDENT_ROW, TEACHER_SAMPLING_COLUMNS

_TEACHER_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "teacher_logit",
    "teacher_snapshot",
    *TEACHER_SAMPLING_COLUMNS,
)


def join_student_dataset(student_samples: pl.LazyFrame, teacher_logits: pl.LazyFrame) -> pl.LazyFrame:
    """Student rows left-joined with teacher logits on sample_id, columns = STUDENT_DATASET_SCHEMA."""
    teacher = teacher_logits.select(_TEACHER_COLUMNS)
    # m:1 validation: a duplicated logit would silently duplicate a training row otherwise.
    joined = student_samples.join(teacher, on="sample_id", how="left", validate="m:1", maintain_order="left")
    joined = joined.with_columns(pl.lit(True).alias(STUDENT_ROW))
    return joined.select(pl.col(name).cast(dtype) for name, dtype in STUDENT_DATASET_SCHEMA.items())


# Student rows per chunk of the bounded-memory join (≈ 30 MB of rows with a 16-event history, ≈ 300 MB with 256).
JOIN_CHUNK_ROWS = 262_144


def join_student_dataset_in_chunks(student_samples: pl.LazyFrame, teacher_logits: pl.LazyFrame,
                                   chunk_rows: int = JOIN_CHUNK_ROWS) -> pl.LazyFrame:
    """`join_student_dataset`, the same rows in the same order, computed chunk by chunk: memory is bounded by
    one chunk of student rows and the logits in that chunk's sample_id range, never by the day.

    A hash join holds its whole build side (a day's logits) in memory, so its peak grows with the day. Here
    each chunk of `chunk_rows` student rows (in file order) is joined with the logit rows whose sample_id lies
    between the chunk's smallest and largest id: a filter, so the result does not depend on the order of the
    files; when both are in sample_id order, as the pipeline writes them, that filter reads only the logit
    row groups of the range (parquet statistics). A duplicated logit inside a chunk's range fails the m:1
    validation as before; the teacher stage already refuses to write duplicated logits at all.

    The result is a lazy frame over those chunks (a polars IO source), so `sink_parquet` streams it.
    """
    teacher = teacher_logits.select(_TEACHER_COLUMNS)
    casts = [pl.col(name).cast(dtype) for name, dtype in STUDENT_DATASET_SCHEMA.items()]

    def chunks(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
               batch_size: int | None) -> Iterator[pl.DataFrame]:
        offset = produced = 0
        while n_rows is None or produced < n_rows:
            chunk = student_samples.slice(offset, chunk_rows).collect()
            if chunk.height == 0:
                return
            low, high = chunk["sample_id"].min(), chunk["sample_id"].max()
            logits = teacher.filter(pl.col("sample_id").is_between(low, high)).collect()
            joined = chunk.lazy().join(logits.lazy(), on="sample_id", how="left", validate="m:1",
                                       maintain_order="left").with_columns(pl.lit(True).alias(STUDENT_ROW))
            joined = joined.select(casts)
            if predicate is not None:
                joined = joined.filter(predicate)
            if with_columns is not None:
                joined = joined.select(with_columns)
            frame = joined.collect()
            if n_rows is not None:
                frame = frame.head(n_rows - produced)
            produced += frame.height
            yield frame
            if chunk.height < chunk_rows:
                return
            offset += chunk_rows

    return register_io_source(chunks, schema=STUDENT_DATASET_SCHEMA, validate_schema=True,
                              explain_name="student ⟕ teacher logits, chunked")


def teacher_stream_soft_label_rows(teacher_samples: pl.LazyFrame, student_samples: pl.LazyFrame,
                                   teacher_logits: pl.LazyFrame, student_policy: SamplingPolicy) -> pl.LazyFrame:
    """The teacher-stream rows the student's sampler dropped, with their recorded logits (STUDENT_DATASET_SCHEMA,
    `student_row` False), joined chunk by chunk like the student's own rows.

    They train the distillation loss only. Their sampling columns are the student policy's, so their target
    is the teacher logit moved into the student's sampling space like any other row's. Rows without a logit
    would carry nothing and are left out. Memory: one chunk plus the student's sample ids of the day.
    """
    student_ids = student_samples.select("sample_id").collect()["sample_id"]
    rates = list(student_policy.positive_keep_by_source)
    return (
        join_student_dataset_in_chunks(teacher_samples, teacher_logits)
        .filter(pl.col("teacher_logit").is_not_null() & ~pl.col("sample_id").is_in(student_ids.implode()))
        .with_columns(
            r_s=pl.lit(student_policy.r_s, dtype=pl.Float32), r_pos=pl.lit(student_policy.r_pos, dtype=pl.Float32),
            p_x=pl.col("traffic_source").replace_strict(list(range(len(rates))), rates, return_dtype=pl.Float32),
            b_s=pl.lit(student_policy.b_s, dtype=pl.Float32),
            **{STUDENT_ROW: pl.lit(False)},
        )
        .select(pl.col(name).cast(dtype) for name, dtype in STUDENT_DATASET_SCHEMA.items())
    )


# p_true is clipped to [ε, 1 − ε] before its logit: a float32 probability can round to 0 or 1.
ORACLE_PROB_EPS = 1e-7


def oracle_soft_labels(dataset: pl.LazyFrame) -> pl.LazyFrame:
    """A perfect teacher's record (synthetic worlds): every recorded logit replaced by logit(p_true) moved into
    the teacher's sampling space, logit(p_true) + log(teacher_r_s · teacher_p_x) (the exact inverse of the
    calibration, models/debias.py). Rows without a recorded logit keep none, so lineage, coverage and fault
    drills are the teacher's; only the values are the oracle's. Distilling from it measures the transfer
    ceiling G*: the most any teacher can add to this student, stream and loss."""
    p_true = pl.col("p_true").cast(pl.Float64).clip(ORACLE_PROB_EPS, 1.0 - ORACLE_PROB_EPS)
    logit = (p_true.log() - (1.0 - p_true).log()
             + (pl.col("teacher_r_s").cast(pl.Float64) * pl.col("teacher_p_x").cast(pl.Float64)).log())
    return dataset.with_columns(
        teacher_logit=pl.when(pl.col("teacher_logit").is_not_null()).then(logit).otherwise(None).cast(pl.Float32))


def join_stats(dataset: pl.LazyFrame) -> dict[str, Any]:
    """Coverage and matched/unmatched label rates of the student's own rows, in one collect; soft-label rows of
    the teacher's stream (which all have a logit) are only counted."""
    matched = pl.col("teacher_logit").is_not_null()
    own = pl.col(STUDENT_ROW)
    row = (
        dataset.select(
            n_rows=own.sum(),
            n_matched=(matched & own).sum(),
            matched_label_rate=pl.col("label").filter(matched & own).cast(pl.Float64).mean(),
            unmatched_label_rate=pl.col("label").filter(~matched & own).cast(pl.Float64).mean(),
            n_soft_label_rows=(~own).sum(),
        )
        .collect()
        .row(0, named=True)
    )
    n_rows, n_matched = int(row["n_rows"] or 0), int(row["n_matched"] or 0)
    return {
        "n_rows": n_rows,
        "n_matched": n_matched,
        # An empty dataset has no coverage to speak of; 0.0 keeps a coverage check failing loudly.
        "coverage": n_matched / n_rows if n_rows else 0.0,
        "matched_label_rate": row["matched_label_rate"],  # None when no matched rows
        "unmatched_label_rate": row["unmatched_label_rate"],  # None when no unmatched rows
        "n_soft_label_rows": int(row["n_soft_label_rows"] or 0),
    }


def drop_logit_fraction(logits: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """Fault knob: drop exactly round(fraction * n) logit rows, chosen by a hash of (seed, sample_id).

    The choice does not depend on row order, so the same fault is injected on every re-run.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n_drop = round(fraction * logits.height)
    if n_drop == 0:
        return logits
    u = row_uniforms(logits["sample_id"], seed)
    # Rank by (u, sample_id) so ties (practically impossible) still break deterministically.
    order = np.lexsort((logits["sample_id"].to_numpy(), u))
    keep = np.ones(logits.height, dtype=bool)
    keep[order[:n_drop]] = False
    return logits.filter(pl.Series(keep))
