"""The published MovieLens layouts (ML-100K, ML-1M, CSV) and the parquet form, detected and read in place.

One small data set is written in every layout (tests/data/movielens_fixtures.py); every layout
must give the same day frames and vocabulary as the parquet form.
"""

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recdistill_dagster.config import MOVIELENS_ENV, MovieLensConfig
from recdistill_dagster.data.movielens import MovieLensSource
from recdistill_dagster.data.movielens_formats import FORMATS, write_published_ml100k
from recdistill_dagster.data.schema import SAMPLE_SCHEMA, DataContractError, validate_samples
from tests.data import movielens_fixtures as fx

WRITERS = {"ML-100K": fx.write_ml100k, "ML-1M": fx.write_ml1m, "CSV": fx.write_csv}


def _source(folder: Path) -> MovieLensSource:
    return MovieLensSource(MovieLensConfig(path=str(folder)))


def _all_days(source: MovieLensSource) -> pl.DataFrame:
    return pl.concat([source.impressions(day) for day in source.days_with_data()])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> MovieLensSource:
    return _source(fx.write_parquet(tmp_path_factory.mktemp("parquet")))


@pytest.mark.parametrize("layout", list(WRITERS))
def test_every_layout_reads_like_the_parquet_form(layout: str, tmp_path: Path, reference: MovieLensSource) -> None:
    source = _source(WRITERS[layout](tmp_path / layout))
    assert source.format == layout and reference.format == "parquet"
    frame = _all_days(source)
    assert frame.height == len(fx.ratings()) and len(source.days_with_data()) == 3
    for day in source.days_with_data():
        validate_samples(source.impressions(day), table=f"movielens {layout}", partition=str(day))
    assert list(frame.schema.items()) == list(SAMPLE_SCHEMA.items())
    expected = _all_days(reference)
    assert frame.equals(expected), frame.join(expected, on="sample_id", suffix="_parquet")
    ours, theirs = source.vocab(), reference.vocab()
    for name, value in vars(theirs).items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(getattr(ours, name), value), name
        else:
            assert getattr(ours, name) == value, name


def test_side_information_from_titles_and_genre_names(tmp_path: Path) -> None:
    source = _source(fx.write_ml1m(tmp_path / "ml-1m"))
    vocab = source.vocab()
    # Toy Story: Animation (index 3) comes first in GENRES order → category 4; Lost Reel: unknown → 1.
    assert vocab.item_category[1] == 4 and vocab.item_category[5] == 1
    # Two release years (1937, 1977, 1995 → three creators ≥ 2); no year → the unknown-year creator 1.
    assert vocab.item_creator[5] == 1 and len({vocab.item_creator[m] for m in (1, 2, 6)}) == 3
    segments = _all_days(source).select("user_id", "user_segment").unique().sort("user_id")
    assert segments["user_segment"].to_list() == [0, 1, 2, 0]  # occupation codes 1, 2, 3, 1


def test_csv_half_stars_and_no_users_file(tmp_path: Path) -> None:
    half = _all_days(_source(fx.write_csv(tmp_path / "half", rating_scale=0.9)))  # 4 → 3.6, 5 → 4.5
    ratings = {(u * 10_000 + m): r * 0.9 for u, m, r, _ in fx.ratings()}
    expected = [int(ratings[s] >= 4) for s in half["sample_id"].to_list()]
    assert half["label"].to_list() == expected and 0 < sum(expected) < len(expected)
    no_users = _all_days(_source(fx.write_csv(tmp_path / "plain", with_users=False)))
    assert (no_users["user_segment"] == 0).all()


def test_large_movie_ids_widen_the_sample_id_stride(tmp_path: Path) -> None:
    folder = fx.write_csv(tmp_path / "latest")
    big = 193_609  # the largest movieId of ml-latest-small
    for name in ("ratings.csv", "movies.csv"):
        table = pl.read_csv(folder / name, infer_schema=False)
        table.with_columns(pl.col("movieId").replace("1", str(big))).write_csv(folder / name)
    frame = _all_days(_source(folder))
    assert frame["sample_id"].n_unique() == frame.height
    rows = frame.filter(pl.col("item_id") == big)
    assert rows.height > 0 and (rows["sample_id"] == rows["user_id"].cast(pl.Int64) * 1_000_000 + big).all()


def test_published_ml100k_export_is_byte_identical_to_the_layout(tmp_path: Path) -> None:
    written = write_published_ml100k(fx.write_parquet(tmp_path / "parquet"), tmp_path / "exported")
    by_hand = fx.write_ml100k(tmp_path / "by-hand")
    for name in ("u.data", "u.item", "u.user"):
        assert (written / name).read_bytes() == (by_hand / name).read_bytes(), name
    assert "Café".encode("latin-1") in (written / "u.item").read_bytes()  # latin-1, not UTF-8


def test_folder_matching_no_format_lists_what_each_needs(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(FileNotFoundError) as error:
        _source(tmp_path)
    message = str(error.value)
    for layout in FORMATS:
        assert layout.name in message and all(name in message for name in layout.required)
    assert "found: ratings.csv" in message and MOVIELENS_ENV in message


def test_malformed_files_name_the_file(tmp_path: Path) -> None:
    folder = fx.write_ml100k(tmp_path / "short-line")
    with (folder / "u.data").open("a") as out:
        out.write("5\t1\t4\n")  # three fields
    with pytest.raises(DataContractError, match=r"u\.data"):
        _source(folder)
    folder = fx.write_ml1m(tmp_path / "text-rating")
    lines = (folder / "ratings.dat").read_text().splitlines()
    lines[0] = "1::2::five::893286638"
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataContractError, match=r"ratings\.dat.*not numeric"):
        _source(folder)


@pytest.mark.movielens
def test_published_layout_of_the_real_data_reads_like_its_parquet(movielens_path: Path, tmp_path: Path) -> None:
    exported = write_published_ml100k(movielens_path, tmp_path / "ml-100k")
    assert sorted(os.listdir(exported)) == ["u.data", "u.item", "u.user"]
    published, parquet = _source(exported), _source(movielens_path)
    assert published.format == "ML-100K"
    assert _all_days(published).equals(_all_days(parquet))
