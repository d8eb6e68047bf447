"""Data contracts (DESIGN.md §3): column names, dtypes and validation of every table.

Pure polars; no Dagster. Every writer validates before writing and every reader validates after
reading, so a wrong schema, NaN features or labels, or duplicate sample ids fail with a message
that names the table, the partition and the problem.
"""

from dataclasses import dataclass

import numpy as np
import polars as pl

SPARSE_FEATURES: tuple[str, ...] = (
    "user_id",
    "item_id",
    "category",
    "creator",
    "traffic_source",
    "hour",
    "user_segment",
)
# Already transformed (log1p / scaled) by the source so models need no statistics.
DENSE_FEATURES: tuple[str, ...] = ("item_age_days", "item_popularity", "user_activity")
SAMPLING_COLUMNS: tuple[str, ...] = ("r_s", "r_pos", "p_x", "b_s")
TEACHER_SAMPLING_COLUMNS: tuple[str, ...] = tuple(f"teacher_{c}" for c in SAMPLING_COLUMNS)
PADDING_ITEM = 0  # item id 0 is never a real item: it pads short histories

SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.Int64(),
    "event_time": pl.Datetime("us", "UTC"),
    "day": pl.Date(),
    **{name: pl.Int32() for name in SPARSE_FEATURES},
    **{name: pl.Float32() for name in DENSE_FEATURES},
    "history": pl.List(pl.Int32()),  # item ids, newest last
    "label": pl.Int8(),
    **{name: pl.Float32() for name in SAMPLING_COLUMNS},
    "p_true": pl.Float32(),  # null on real data
}

TEACHER_LOGIT_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.Int64(),
    "day": pl.Date(),
    "teacher_logit": pl.Float32(),  # raw, pre-correction
    "teacher_snapshot": pl.String(),
    "recorded_step": pl.Int64(),
    # The teacher's own sampling parameters for the row (needed by f_T and the exact mode).
    **{name: pl.Float32() for name in TEACHER_SAMPLING_COLUMNS},
}

# True for rows of the student's own sampled stream (task loss and distillation); False for rows
# that only the teacher's stream holds, joined to carry a soft label (distillation only,
# `distill.soft_label_rows: teacher_stream`). Their sampling columns are the student policy's, the
# space the teacher logit is moved into.
STUDENT_ROW = "student_row"

STUDENT_DATASET_SCHEMA: dict[str, pl.DataType] = {
    **SAMPLE_SCHEMA,
    "teacher_logit": pl.Float32(),  # null when the teacher has no logit for the row
    "teacher_snapshot": pl.String(),
    **{name: pl.Float32() for name in TEACHER_SAMPLING_COLUMNS},
    STUDENT_ROW: pl.Boolean(),
}

# Columns that must never be null / NaN in a sample table.
REQUIRED_FINITE: tuple[str, ...] = (*DENSE_FEATURES, *SAMPLING_COLUMNS)


class DataContractError(ValueError):
    """A table violates its contract; the message names table, partition and problem."""


@dataclass(frozen=True)
class FeatureVocab:
    """Vocabulary sizes of the sparse features plus item side information.

    `item_category[i]` and `item_creator[i]` give the side features of item id i, so models can
    enrich history item ids without storing them per row. Index 0 is the padding item.
    """

    n_users: int
    n_items: int
    n_categories: int
    n_creators: int
    n_traffic_sources: int
    n_hours: int
    n_segments: int
    item_category: np.ndarray  # int64, shape (n_items,)
    item_creator: np.ndarray  # int64, shape (n_items,)

    def size_of(self, feature: str) -> int:
        sizes = {
            "user_id": self.n_users,
            "item_id": self.n_items,
            "category": self.n_categories,
            "creator": self.n_creators,
            "traffic_source": self.n_traffic_sources,
            "hour": self.n_hours,
            "user_segment": self.n_segments,
        }
        return sizes[feature]

    def as_dict(self) -> dict[str, int]:
        return {feature: self.size_of(feature) for feature in SPARSE_FEATURES}


def check_schema(frame: pl.DataFrame | pl.LazyFrame, expected: dict[str, pl.DataType], *, table: str,
                 partition: str) -> None:
    """Raise DataContractError unless every expected column exists with the expected dtype."""
    actual = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    missing = [name for name in expected if name not in actual]
    wrong = [
        f"{name}: expected {expected[name]}, found {actual[name]}"
        for name in expected
        if name in actual and actual[name] != expected[name]
    ]
    if missing or wrong:
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if wrong:
            problems.append("wrong dtypes [" + "; ".join(wrong) + "]")
        raise DataContractError(f"{table} partition {partition}: schema mismatch: " + ", ".join(problems))


def validate_samples(frame: pl.DataFrame, *, table: str, partition: str) -> None:
    """Schema, unique sample ids, no null/NaN labels or features, valid labels."""
    check_schema(frame, SAMPLE_SCHEMA, table=table, partition=partition)
    if frame.height == 0:
        return
    checks = frame.select(
        duplicate_ids=pl.col("sample_id").is_duplicated().sum(),
        null_ids=pl.col("sample_id").null_count(),
        bad_labels=(pl.col("label").is_null() | ~pl.col("label").is_in([0, 1])).sum(),
        null_sparse=pl.sum_horizontal(pl.col(SPARSE_FEATURES).null_count()),
        bad_dense=pl.sum_horizontal(
            [(pl.col(c).is_null() | pl.col(c).is_nan() | pl.col(c).is_infinite()).sum() for c in REQUIRED_FINITE]
        ),
        null_history=pl.col("history").null_count(),
    ).row(0, named=True)
    problems = []
    if checks["duplicate_ids"]:
        dupes = frame.filter(pl.col("sample_id").is_duplicated())["sample_id"].unique().head(5).to_list()
        problems.append(f"{checks['duplicate_ids']} rows with duplicate sample_id (e.g. {dupes})")
    if checks["null_ids"]:
        problems.append(f"{checks['null_ids']} null sample_id")
    if checks["bad_labels"]:
        problems.append(f"{checks['bad_labels']} labels that are null or not 0/1")
    if checks["null_sparse"]:
        problems.append(f"{checks['null_sparse']} null sparse feature values")
    if checks["bad_dense"]:
        problems.append(f"{checks['bad_dense']} null/NaN/inf dense features or sampling parameters")
    if checks["null_history"]:
        problems.append(f"{checks['null_history']} null histories")
    if problems:
        raise DataContractError(f"{table} partition {partition}: " + "; ".join(problems))


def validate_teacher_logits(frame: pl.DataFrame, *, partition: str, allow_nonfinite: bool = False) -> None:
    """Contract of recorded logits. The teacher's own write allows NaN/inf (`allow_nonfinite`): the
    blocking health check judges the snapshot and keeps such logits away from the student."""
    check_schema(frame, TEACHER_LOGIT_SCHEMA, table="teacher_logits", partition=partition)
    if frame.height == 0:
        return
    dupes = int(frame["sample_id"].is_duplicated().sum())
    non_finite = int((frame["teacher_logit"].is_nan() | frame["teacher_logit"].is_infinite()).sum())
    nulls = int(frame["teacher_logit"].null_count())
    problems = []
    if dupes:
        problems.append(f"{dupes} rows with duplicate sample_id")
    if nulls:
        problems.append(f"{nulls} null logits")
    if non_finite and not allow_nonfinite:
        problems.append(f"{non_finite} NaN/inf logits")
    if problems:
        raise DataContractError(f"teacher_logits partition {partition}: " + "; ".join(problems))
