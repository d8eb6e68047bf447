"""Sampling a stream from impressions, and joining the student stream with teacher logits."""

from datetime import date

import numpy as np
import polars as pl
import pytest

from recdistill_dagster.config import (
    DEFAULT_STUDENT_SAMPLING,
    SamplingConfig,
    SamplingPolicy,
    SyntheticWorldConfig,
    load_config,
)
from recdistill_dagster.data.join import (
    drop_logit_fraction,
    join_stats,
    join_student_dataset,
    join_student_dataset_in_chunks,
    oracle_soft_labels,
    teacher_stream_soft_label_rows,
)
from recdistill_dagster.data.sampling import row_uniforms, sample_stream
from recdistill_dagster.data.schema import (
    STUDENT_DATASET_SCHEMA,
    TEACHER_LOGIT_SCHEMA,
    DataContractError,
    validate_samples,
    validate_teacher_logits,
)
from recdistill_dagster.data.source import DaySource, make_source
from recdistill_dagster.data.synthetic import SyntheticWorld

DAY = date(2026, 1, 1)
POLICIES = SamplingConfig()
SEED = POLICIES.seed
STUDENT_POLICY = DEFAULT_STUDENT_SAMPLING


@pytest.fixture(scope="module")
def impressions() -> pl.DataFrame:
    config = SyntheticWorldConfig(
        n_users=300, n_items_initial=400, n_creators=60, n_categories=8, impressions_per_day=20000,
        logged_history_len=32,
    )  # fmt: skip
    frame = SyntheticWorld(config, DAY).impressions(DAY)
    # Balanced labels give every (label, source) cell enough rows to check keep rates tightly.
    return frame.with_columns(label=(pl.col("sample_id") % 2).cast(pl.Int8))


def fake_logits(samples: pl.DataFrame, snapshot: str = "teacher-0001") -> pl.DataFrame:
    n = samples.height
    return pl.DataFrame(
        {
            "sample_id": samples["sample_id"],
            "day": samples["day"],
            "teacher_logit": np.linspace(-3, 3, n, dtype=np.float32),
            "teacher_snapshot": [snapshot] * n,
            "recorded_step": np.arange(n, dtype=np.int64),
            "teacher_r_s": samples["r_s"],
            "teacher_r_pos": samples["r_pos"],
            "teacher_p_x": samples["p_x"],
            "teacher_b_s": samples["b_s"],
        },
        schema=TEACHER_LOGIT_SCHEMA,
    )


# --------------------------------------------------------------------------- sampling


def test_row_uniforms_are_uniform_and_seeded() -> None:
    ids = np.arange(200_000, dtype=np.int64)
    u = row_uniforms(ids, seed=3)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and np.histogram(u, bins=10)[0].min() > 19_000
    assert (row_uniforms(ids[::-1], seed=3) == u[::-1]).all()  # a function of the id, not the position
    assert np.corrcoef(u, row_uniforms(ids, seed=4))[0, 1] < 0.01
    assert np.corrcoef(u[:-1], u[1:])[0, 1] < 0.01  # consecutive ids are unrelated


def test_keep_rates_match_the_policy(impressions: pl.DataFrame) -> None:
    policy = SamplingPolicy(negative_keep=0.2, positive_keep_by_source=(1.0, 0.8, 0.5), r_pos=0.9, b_s=0.1)
    sampled = sample_stream(impressions, policy, seed=SEED)
    validate_samples(sampled, table="stream", partition=str(DAY))
    before = impressions.group_by("label", "traffic_source").len()
    after = sampled.group_by("label", "traffic_source").len()
    rates = before.join(after, on=["label", "traffic_source"], suffix="_kept")
    for label, source, n, kept in rates.iter_rows():
        expected = policy.p_x(source) if label == 1 else policy.negative_keep
        assert kept / n == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / n) + 1e-9)
    expected_p_x = pl.col("traffic_source").replace_strict([0, 1, 2], [1.0, 0.8, 0.5]).cast(pl.Float32)
    columns = sampled.select(
        (pl.col("r_s") == np.float32(5.0)).all(), (pl.col("r_pos") == np.float32(0.9)).all(),
        (pl.col("b_s") == np.float32(0.1)).all(),
        (pl.col("p_x") == expected_p_x).all(),
    ).row(0)  # fmt: skip
    assert all(columns)
    # Everything but the sampling columns is passed through untouched.
    untouched = [c for c in impressions.columns if c not in ("r_s", "r_pos", "p_x", "b_s")]
    original = impressions.join(sampled.select("sample_id"), on="sample_id", how="semi")
    assert sampled.select(untouched).equals(original.select(untouched))


def test_student_stream_is_a_subset_of_the_teacher_stream(impressions: pl.DataFrame) -> None:
    teacher = sample_stream(impressions, POLICIES.teacher, seed=SEED)
    student = sample_stream(impressions, STUDENT_POLICY, seed=SEED)
    assert student.height < teacher.height
    assert student.join(teacher, on="sample_id", how="anti").height == 0
    assert sample_stream(impressions, STUDENT_POLICY, seed=SEED).equals(student)
    assert not sample_stream(impressions, STUDENT_POLICY, seed=SEED + 1).equals(student)
    # Row order does not change which rows are kept.
    shuffled = impressions.sample(fraction=1.0, shuffle=True, seed=0)
    again = sample_stream(shuffled, STUDENT_POLICY, seed=SEED).sort("sample_id")
    assert again.equals(student.sort("sample_id"))


def test_sampling_rejects_sources_without_a_rate(impressions: pl.DataFrame) -> None:
    policy = SamplingPolicy(negative_keep=0.5, positive_keep_by_source=(1.0,))
    with pytest.raises(ValueError, match="traffic_source"):
        sample_stream(impressions, policy, seed=SEED)


def test_sampling_an_empty_day(impressions: pl.DataFrame) -> None:
    empty = sample_stream(impressions.head(0), STUDENT_POLICY, seed=SEED)
    assert empty.height == 0 and empty.schema == impressions.schema


# --------------------------------------------------------------------------- join


def test_join_keeps_rows_without_logits(impressions: pl.DataFrame) -> None:
    teacher = sample_stream(impressions, POLICIES.teacher, seed=SEED)
    student = sample_stream(impressions, STUDENT_POLICY, seed=SEED)
    logits = drop_logit_fraction(fake_logits(teacher), 0.2, seed=5)
    validate_teacher_logits(logits, partition=str(DAY))
    dataset = join_student_dataset(student.lazy(), logits.lazy()).collect()

    assert list(dataset.schema.items()) == list(STUDENT_DATASET_SCHEMA.items())
    assert dataset["sample_id"].equals(student["sample_id"])  # no row dropped, order kept
    matched = dataset.filter(pl.col("teacher_logit").is_not_null())
    unmatched = dataset.filter(pl.col("teacher_logit").is_null())
    assert unmatched.height > 0
    assert unmatched.select(pl.col("teacher_snapshot", "teacher_r_s").null_count().sum()).row(0) == (
        unmatched.height, unmatched.height,
    )  # fmt: skip
    assert set(matched["sample_id"]) <= set(logits["sample_id"])
    assert (matched["teacher_r_s"] == POLICIES.teacher.r_s).all()  # teacher's, not student's, r_s
    assert (matched["r_s"] == STUDENT_POLICY.r_s).all()

    stats = join_stats(dataset.lazy())
    assert stats["n_rows"] == student.height and stats["n_matched"] == matched.height
    assert stats["coverage"] == pytest.approx(matched.height / student.height)
    assert 0.7 < stats["coverage"] < 0.9  # ~20% of the teacher's logits were dropped
    assert stats["matched_label_rate"] == pytest.approx(matched["label"].cast(pl.Float64).mean())
    assert stats["unmatched_label_rate"] == pytest.approx(unmatched["label"].cast(pl.Float64).mean())


def test_join_stats_edge_cases(impressions: pl.DataFrame) -> None:
    student = sample_stream(impressions, STUDENT_POLICY, seed=SEED)
    full = join_stats(join_student_dataset(student.lazy(), fake_logits(student).lazy()))
    assert full["coverage"] == 1.0 and full["unmatched_label_rate"] is None
    none = join_stats(join_student_dataset(student.lazy(), fake_logits(student).head(0).lazy()))
    assert none["coverage"] == 0.0 and none["matched_label_rate"] is None
    empty = join_stats(join_student_dataset(student.head(0).lazy(), fake_logits(student).lazy()))
    assert empty == {
        "n_rows": 0,
        "n_matched": 0,
        "coverage": 0.0,
        "matched_label_rate": None,
        "unmatched_label_rate": None,
        "n_soft_label_rows": 0,
    }


def test_join_refuses_duplicate_logits(impressions: pl.DataFrame) -> None:
    student = sample_stream(impressions, STUDENT_POLICY, seed=SEED)
    logits = fake_logits(student)
    with pytest.raises(pl.exceptions.ComputeError):
        join_student_dataset(student.lazy(), pl.concat([logits, logits.head(3)]).lazy()).collect()


@pytest.mark.parametrize("chunk_rows", [1, 37, 10_000_000])
def test_chunked_join_equals_the_hash_join(impressions: pl.DataFrame, tmp_path, chunk_rows: int) -> None:
    teacher = sample_stream(impressions, POLICIES.teacher, seed=SEED)
    student = sample_stream(impressions, STUDENT_POLICY, seed=SEED).head(300)
    logits = drop_logit_fraction(fake_logits(teacher), 0.2, seed=5)
    expected = join_student_dataset(student.lazy(), logits.lazy()).collect()
    assert join_student_dataset_in_chunks(student.lazy(), logits.lazy(), chunk_rows).collect().equals(expected)
    # Order of neither file matters (the logits of a chunk are a filter on its sample_id range).
    shuffled_student = student.sample(fraction=1.0, shuffle=True, seed=1)
    shuffled = join_student_dataset_in_chunks(shuffled_student.lazy(), logits.sample(fraction=1.0, shuffle=True,
                                                                                     seed=2).lazy(), chunk_rows)
    assert shuffled.collect().equals(join_student_dataset(shuffled_student.lazy(), logits.lazy()).collect())
    # Streamed to parquet (as the stage sinks it); an empty day keeps the schema.
    student.write_parquet(tmp_path / "student.parquet")
    logits.write_parquet(tmp_path / "logits.parquet")
    join_student_dataset_in_chunks(pl.scan_parquet(tmp_path / "student.parquet"),
                                   pl.scan_parquet(tmp_path / "logits.parquet"), chunk_rows).sink_parquet(
        tmp_path / "out.parquet")
    assert pl.read_parquet(tmp_path / "out.parquet").equals(expected)
    empty = join_student_dataset_in_chunks(student.head(0).lazy(), logits.lazy(), chunk_rows).collect()
    assert empty.height == 0 and list(empty.schema.items()) == list(STUDENT_DATASET_SCHEMA.items())
    with pytest.raises(pl.exceptions.ComputeError):  # a duplicated logit of a student row still fails
        join_student_dataset_in_chunks(student.lazy(), pl.concat([logits, logits.filter(
            pl.col("sample_id") == student["sample_id"][0])]).lazy(), chunk_rows).collect()


def test_drop_logit_fraction_is_exact_and_deterministic(impressions: pl.DataFrame) -> None:
    logits = fake_logits(sample_stream(impressions, POLICIES.teacher, seed=SEED))
    kept = drop_logit_fraction(logits, 0.25, seed=9)
    assert kept.height == logits.height - round(0.25 * logits.height)
    assert kept.equals(drop_logit_fraction(logits, 0.25, seed=9))
    shuffled = drop_logit_fraction(logits.reverse(), 0.25, seed=9)
    assert set(shuffled["sample_id"]) == set(kept["sample_id"])
    assert drop_logit_fraction(logits, 0.0, seed=9).equals(logits)
    assert drop_logit_fraction(logits, 1.0, seed=9).height == 0
    with pytest.raises(ValueError):
        drop_logit_fraction(logits, 1.5, seed=9)


# --------------------------------------------------------------------------- source factory


def test_make_source_picks_the_synthetic_world() -> None:
    config = load_config("tiny")
    source = make_source(config)
    assert isinstance(source, SyntheticWorld) and isinstance(source, DaySource)
    assert source.start_date == config.calendar.start_date
    frame = source.impressions(config.calendar.start_date)
    validate_samples(frame, table="tiny", partition="day0")
    with pytest.raises(DataContractError):
        validate_samples(frame.drop("p_true"), table="tiny", partition="day0")


def test_soft_label_rows_are_the_teacher_rows_the_student_sampler_dropped(impressions: pl.DataFrame) -> None:
    teacher = sample_stream(impressions, POLICIES.teacher, seed=SEED)
    student = sample_stream(impressions, STUDENT_POLICY, seed=SEED)
    logits = drop_logit_fraction(fake_logits(teacher), 0.1, seed=5)
    own = join_student_dataset(student.lazy(), logits.lazy()).collect()
    extra = teacher_stream_soft_label_rows(teacher.lazy(), student.lazy(), logits.lazy(), STUDENT_POLICY).collect()
    assert extra.schema == own.schema and not extra["student_row"].any() and own["student_row"].all()
    dropped = set(teacher["sample_id"]) - set(student["sample_id"])
    assert set(extra["sample_id"]) == dropped & set(logits["sample_id"])  # only rows with a logit
    assert extra["teacher_logit"].null_count() == 0
    # Their sampling columns are the student policy's (the space the target is moved into).
    assert (extra["r_s"] == STUDENT_POLICY.r_s).all() and (extra["teacher_r_s"] == POLICIES.teacher.r_s).all()
    expected_p_x = np.asarray(STUDENT_POLICY.positive_keep_by_source, dtype=np.float32)[
        extra["traffic_source"].to_numpy()]
    assert np.array_equal(extra["p_x"].to_numpy(), expected_p_x)
    stats = join_stats(pl.concat([own, extra]).lazy())
    assert stats == {**join_stats(own.lazy()), "n_soft_label_rows": extra.height}
    assert join_stats(own.lazy())["n_soft_label_rows"] == 0


def test_oracle_soft_labels_are_p_true_in_the_teacher_sampling_space(impressions: pl.DataFrame) -> None:
    student = sample_stream(impressions, STUDENT_POLICY, seed=SEED)
    logits = drop_logit_fraction(fake_logits(student), 0.2, seed=3)
    recorded = join_student_dataset(student.lazy(), logits.lazy()).collect()
    oracle = oracle_soft_labels(recorded.lazy()).collect()
    assert oracle.drop("teacher_logit").equals(recorded.drop("teacher_logit"))
    assert oracle["teacher_logit"].is_null().equals(recorded["teacher_logit"].is_null())  # drops stay drops
    matched = oracle.filter(pl.col("teacher_logit").is_not_null())
    calibrated = matched["teacher_logit"].to_numpy() - np.log(matched["teacher_r_s"] * matched["teacher_p_x"])
    assert np.allclose(1 / (1 + np.exp(-calibrated)), matched["p_true"].to_numpy(), rtol=1e-4)
