"""MovieLens read as a day-partitioned CTR source (skipped where the data set is absent)."""

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recdistill_dagster.config import MOVIELENS_ENV, MovieLensConfig, load_config
from recdistill_dagster.data.movielens import MovieLensSource
from recdistill_dagster.data.schema import SAMPLE_SCHEMA, DataContractError, validate_samples
from recdistill_dagster.data.source import make_source

pytestmark = pytest.mark.movielens


@pytest.fixture(scope="module")
def source(movielens_path: Path) -> MovieLensSource:
    return MovieLensSource(MovieLensConfig(path=str(movielens_path)))


@pytest.fixture(scope="module")
def ratings(movielens_path: Path) -> pl.DataFrame:
    return pl.read_parquet(movielens_path / "ratings.parquet").with_columns(
        day=pl.from_epoch("timestamp", time_unit="s").dt.date()
    )


@pytest.fixture(scope="module")
def all_days(source: MovieLensSource) -> pl.DataFrame:
    return pl.concat([source.impressions(d) for d in source.days_with_data()])


def test_every_rating_appears_once_with_the_right_label(
    all_days: pl.DataFrame, ratings: pl.DataFrame
) -> None:
    assert all_days.height == ratings.height
    assert all_days["sample_id"].n_unique() == all_days.height
    assert all_days["label"].cast(pl.Float64).mean() == pytest.approx(0.554, abs=0.001)
    joined = all_days.join(
        ratings.select(sample_id=pl.col("user_id") * 10_000 + pl.col("movie_id"), rating="rating"),
        on="sample_id",
    )
    assert ((joined["rating"] >= 4) == (joined["label"] == 1)).all()


def test_day_filter_and_schema(source: MovieLensSource, ratings: pl.DataFrame) -> None:
    days = source.days_with_data()
    assert days == sorted(ratings["day"].unique().to_list())
    some_day = days[40]
    frame = source.impressions(some_day)
    validate_samples(frame, table="movielens", partition=str(some_day))
    assert list(frame.schema.items()) == list(SAMPLE_SCHEMA.items())
    assert frame.height == ratings.filter(pl.col("day") == some_day).height
    assert (frame["day"] == some_day).all() and (frame["event_time"].dt.date() == some_day).all()
    assert (frame["event_time"].dt.hour().cast(pl.Int32) == frame["hour"]).all()
    assert frame["event_time"].is_sorted() and frame["p_true"].null_count() == frame.height
    constant = frame.select(
        (pl.col("r_s") == 1).all(), (pl.col("b_s") == 0).all(), (pl.col("traffic_source") == 0).all()
    ).row(0)
    assert constant == (True, True, True)
    assert source.impressions(date(2001, 1, 1)).height == 0


def test_history_is_strictly_earlier_and_time_ordered(source: MovieLensSource, ratings: pl.DataFrame) -> None:
    rng = np.random.default_rng(0)
    users = rng.choice(ratings["user_id"].unique().to_numpy(), size=5, replace=False)
    limit = source.config.logged_history_len
    for user in users:
        mine = ratings.filter(pl.col("user_id") == user).sort("timestamp", "movie_id")
        for d in mine["day"].unique().sort().to_list()[:4]:
            rows = source.impressions(d).filter(pl.col("user_id") == int(user))
            for row in rows.iter_rows(named=True):
                ts = int(row["event_time"].timestamp())
                expected = mine.filter(pl.col("timestamp") < ts)["movie_id"].to_list()[-limit:]
                assert row["history"] == expected, (user, row["item_id"])


def test_features_use_only_the_past(source: MovieLensSource, all_days: pl.DataFrame) -> None:
    first_day = all_days.filter(pl.col("day") == source.days_with_data()[0])
    assert (first_day["item_popularity"] == 0).all() and (first_day["user_activity"] == 0).all()
    for column in ("item_popularity", "user_activity"):
        assert all_days[column].min() >= 0 and all_days[column].max() < 1.5  # type: ignore[operator]
    vocab = source.vocab()
    item = all_days["item_id"].to_numpy()
    assert (vocab.item_category[item] == all_days["category"].to_numpy()).all()
    assert (vocab.item_creator[item] == all_days["creator"].to_numpy()).all()
    for feature in ("user_id", "item_id", "category", "creator", "traffic_source", "hour", "user_segment"):
        assert all_days[feature].max() < vocab.size_of(feature), feature
    assert vocab.item_category[0] == 0 and vocab.item_creator[0] == 0


def test_make_source_picks_movielens(movielens_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MOVIELENS_ENV, str(movielens_path))
    assert isinstance(make_source(load_config("movielens")), MovieLensSource)


def test_missing_folder_names_path_and_env_var(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        MovieLensSource(MovieLensConfig(path=str(missing)))
    assert str(missing) in str(error.value) and MOVIELENS_ENV in str(error.value)


def test_missing_file_and_missing_columns(tmp_path: Path) -> None:
    pl.DataFrame({"user_id": [1], "movie_id": [1], "rating": [5]}).write_parquet(tmp_path / "ratings.parquet")
    pl.DataFrame({"user_id": [1], "occupation": ["writer"]}).write_parquet(tmp_path / "users.parquet")
    with pytest.raises(FileNotFoundError, match=r"items\.parquet"):
        MovieLensSource(MovieLensConfig(path=str(tmp_path)))
    pl.DataFrame({"movie_id": [1], "release_date": ["01-Jan-1995"]}).write_parquet(tmp_path / "items.parquet")
    with pytest.raises(DataContractError, match="missing columns"):
        MovieLensSource(MovieLensConfig(path=str(tmp_path)))
