"""Small frames and vocab for model tests (no Dagster, no world generator)."""

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest

from recdistill_dagster.data.schema import SAMPLE_SCHEMA, FeatureVocab

N_ITEMS = 50


@pytest.fixture
def vocab() -> FeatureVocab:
    rng = np.random.default_rng(0)
    category = rng.integers(1, 5, N_ITEMS)
    creator = rng.integers(1, 9, N_ITEMS)
    category[0] = creator[0] = 0
    return FeatureVocab(n_users=30, n_items=N_ITEMS, n_categories=5, n_creators=9, n_traffic_sources=3,
                        n_hours=24, n_segments=2, item_category=category, item_creator=creator)


def make_frame(vocab: FeatureVocab, n_rows: int, seed: int, day: date = date(2026, 1, 1),
               signal: float = 3.0) -> pl.DataFrame:
    """Rows whose label depends on whether the candidate item appears in the history."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, N_ITEMS, n_rows)
    hist_len = rng.integers(0, 12, n_rows)
    histories = [rng.integers(1, N_ITEMS, k).astype(np.int32).tolist() for k in hist_len]
    for i in range(0, n_rows, 2):  # half the rows: the candidate is in the history
        histories[i] = [*histories[i], int(items[i])]
    in_history = np.array([int(items[i]) in histories[i] for i in range(n_rows)], dtype=np.float64)
    logit = -1.0 + signal * (in_history - 0.5)
    label = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    source = rng.integers(0, 3, n_rows)
    frame = pl.DataFrame(
        {
            "sample_id": np.arange(n_rows, dtype=np.int64) + seed * 1_000_000,
            "event_time": [datetime(day.year, day.month, day.day, 12, tzinfo=UTC)] * n_rows,
            "day": [day] * n_rows,
            "user_id": rng.integers(0, 30, n_rows),
            "item_id": items,
            "category": vocab.item_category[items],
            "creator": vocab.item_creator[items],
            "traffic_source": source,
            "hour": rng.integers(0, 24, n_rows),
            "user_segment": rng.integers(0, 2, n_rows),
            "item_age_days": rng.random(n_rows),
            "item_popularity": rng.normal(size=n_rows),
            "user_activity": rng.normal(size=n_rows),
            "history": histories,
            "label": label,
            "r_s": np.full(n_rows, 2.0),
            "r_pos": np.ones(n_rows),
            "p_x": np.where(source == 2, 0.5, 1.0),
            "b_s": np.zeros(n_rows),
            "p_true": 1 / (1 + np.exp(-logit)),
        }
    )
    return frame.select([pl.col(name).cast(dtype) for name, dtype in SAMPLE_SCHEMA.items()])


def with_teacher_columns(frame: pl.DataFrame, teacher_logit: np.ndarray, *, r_s: float = 2.0,
                         p_x: float = 1.0) -> pl.DataFrame:
    """A sample frame → STUDENT_DATASET_SCHEMA; NaN logits become nulls (rows the teacher missed)."""
    from recdistill_dagster.data.schema import STUDENT_DATASET_SCHEMA

    logit = pl.Series(teacher_logit, dtype=pl.Float32).fill_nan(None)
    missing = logit.is_null()
    extra = pl.DataFrame({"teacher_logit": logit}).with_columns(
        teacher_snapshot=pl.when(missing).then(None).otherwise(pl.lit("teacher@test")),
        **{name: pl.when(missing).then(None).otherwise(pl.lit(value, dtype=pl.Float32))
           for name, value in (("teacher_r_s", r_s), ("teacher_r_pos", 1.0), ("teacher_p_x", p_x),
                               ("teacher_b_s", 0.0))},
        student_row=pl.lit(True),
    )
    joined = pl.concat([frame, extra], how="horizontal")
    return joined.select([pl.col(name).cast(dtype) for name, dtype in STUDENT_DATASET_SCHEMA.items()])


def make_vocab(n_users: int, n_items: int, n_categories: int, n_creators: int, n_sources: int = 3,
               n_hours: int = 24, n_segments: int = 8, seed: int = 0) -> FeatureVocab:
    rng = np.random.default_rng(seed)
    return FeatureVocab(n_users=n_users, n_items=n_items, n_categories=n_categories, n_creators=n_creators,
                        n_traffic_sources=n_sources, n_hours=n_hours, n_segments=n_segments,
                        item_category=rng.integers(0, n_categories, n_items),
                        item_creator=rng.integers(0, n_creators, n_items))
