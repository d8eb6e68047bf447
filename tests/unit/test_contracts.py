"""Bad input gets a clear error naming the table, the partition and the problem."""

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from recdistill_dagster.config import load_config
from recdistill_dagster.data.schema import DataContractError, validate_samples, validate_teacher_logits
from recdistill_dagster.data.source import make_source
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.stages.chain import load_checkpoint
from recdistill_dagster.stages.teacher import TEACHER
from recdistill_dagster.storage import ArtifactStore

DAY = date(2026, 1, 1)


@pytest.fixture(scope="module")
def good() -> pl.DataFrame:
    return make_source(load_config("tiny")).impressions(DAY).head(200)


def test_valid_frame_passes(good: pl.DataFrame) -> None:
    validate_samples(good, table="eval_samples", partition="2026-01-01")


def test_duplicate_sample_ids(good: pl.DataFrame) -> None:
    with pytest.raises(DataContractError, match=r"eval_samples partition 2026-01-01: .*duplicate sample_id"):
        validate_samples(pl.concat([good, good.head(3)]), table="eval_samples", partition="2026-01-01")


def test_nan_features_and_null_labels(good: pl.DataFrame) -> None:
    nan_feature = good.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(float("nan"))
                                    .otherwise(pl.col("item_popularity")).cast(pl.Float32).alias("item_popularity"))
    with pytest.raises(DataContractError, match="null/NaN/inf dense features"):
        validate_samples(nan_feature, table="teacher_samples", partition="2026-01-01")
    null_label = good.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None)
                                   .otherwise(pl.col("label")).cast(pl.Int8).alias("label"))
    with pytest.raises(DataContractError, match="labels that are null or not 0/1"):
        validate_samples(null_label, table="teacher_samples", partition="2026-01-01")


def test_schema_mismatch(good: pl.DataFrame) -> None:
    with pytest.raises(DataContractError, match=r"missing columns \['label'\]"):
        validate_samples(good.drop("label"), table="student_samples", partition="2026-01-01")
    with pytest.raises(DataContractError, match="user_id: expected Int32, found Int64"):
        validate_samples(good.with_columns(pl.col("user_id").cast(pl.Int64)), table="student_samples",
                         partition="2026-01-01")


def test_nan_teacher_logits() -> None:
    from recdistill_dagster.data.schema import TEACHER_LOGIT_SCHEMA

    frame = pl.DataFrame({"sample_id": [1, 2], "day": [DAY, DAY], "teacher_logit": [0.1, float("nan")],
                          "teacher_snapshot": ["t", "t"], "recorded_step": [0, 1], "teacher_r_s": [2.0, 2.0],
                          "teacher_r_pos": [1.0, 1.0], "teacher_p_x": [1.0, 1.0], "teacher_b_s": [0.0, 0.0]},
                         schema=TEACHER_LOGIT_SCHEMA)
    with pytest.raises(DataContractError, match="1 NaN/inf logits"):
        validate_teacher_logits(frame, partition="2026-01-02")


def test_corrupted_checkpoint_names_the_partition(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    store.write_bytes("checkpoints/teacher/2026-01-02.pt", b"not a checkpoint")
    with pytest.raises(PipelineStepError, match=r"teacher_checkpoint partition 2026-01-02 .* is unreadable"):
        load_checkpoint(store, TEACHER, date(2026, 1, 2))
    assert (tmp_path / "checkpoints/teacher/2026-01-02.pt").read_bytes() == b"not a checkpoint"  # nothing lost
