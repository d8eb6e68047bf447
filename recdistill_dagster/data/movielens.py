"""MovieLens-format ratings read as a day-partitioned CTR source.

Each rating is an impression on the UTC day of its timestamp; label = rating >= label_min_rating.
A row's history is the user's strictly earlier ratings (ties in timestamp broken by movie id), in
time order with the newest last. Features only use information from before the row's day (counts)
or static side information (genre, release year, occupation).

The folder may hold any published release (ML-100K `u.data`/`u.item`/`u.user`, ML-1M `*.dat`,
the CSV releases `ratings.csv`/`movies.csv`) or this project's parquet conversion: the format is
detected from its files (`movielens_formats.py`). The data set's terms forbid redistribution: it
is read in place from `config.path` (default from $RECDISTILL_MOVIELENS or the shared dataset
folder) and never copied.
"""

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from recdistill_dagster.config import MOVIELENS_ENV, MovieLensConfig
from recdistill_dagster.data.movielens_formats import FORMATS, GENRES, read_tables
from recdistill_dagster.data.schema import SAMPLE_SCHEMA, DataContractError, FeatureVocab

# sample_id = user_id * stride + movie_id: unique because a user rates a movie once. The stride is
# this, or the next power of ten above the largest movie id (the CSV releases number up to ~300,000).
MOVIE_ID_STRIDE = 10_000
# log1p(count) / this keeps the count features roughly in [0, 1] (ML-100K: up to ~740 ratings).
LOG_COUNT_SCALE = 6.0
UNKNOWN_YEAR_CREATOR = 1  # creator id of items without a release date; 0 is the padding item's
N_HOURS = 24


def movie_id_stride(max_movie_id: int) -> int:
    stride = MOVIE_ID_STRIDE
    while stride <= max_movie_id:
        stride *= 10
    return stride


def _items_table(items: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Canonical items (movie_id, category, release) → + creator (release-year index)."""
    table = items.select(pl.col("movie_id").cast(pl.Int64), pl.col("category").cast(pl.Int32), "release")
    years = table["release"].dt.year().drop_nulls().unique().sort()
    year_to_creator = pl.DataFrame(
        {
            "year": years,
            "creator": pl.Series(np.arange(len(years)) + UNKNOWN_YEAR_CREATOR + 1, dtype=pl.Int32),
        }
    )
    table = (
        table.with_columns(year=pl.col("release").dt.year())
        .join(year_to_creator, on="year", how="left")
        .with_columns(pl.col("creator").fill_null(UNKNOWN_YEAR_CREATOR))
        .drop("year")
    )
    return table, len(years) + UNKNOWN_YEAR_CREATOR + 1


def _with_rank_before(frame: pl.DataFrame, group: str, period: str, name: str) -> pl.DataFrame:
    """Add `name` = rows of the same `group` strictly before this row's `period`.

    `frame` must be sorted by group, then time: the first row of a (group, period) block has as
    many earlier rows in its group as its position within the group.
    """
    position = frame.with_columns(_position=pl.int_range(pl.len()).over(group))
    return position.with_columns(pl.col("_position").min().over(group, period).alias(name)).drop("_position")


def _max_id(ids: pl.Series) -> int:
    return int(ids.cast(pl.Int64).max() or 0)  # type: ignore[arg-type]


class MovieLensSource:
    """Day source over MovieLens ratings: `vocab()`, `impressions(day)`, `days_with_data()`."""

    def __init__(self, config: MovieLensConfig) -> None:
        self.config = config
        self.folder = Path(config.path)
        formats = "; ".join(f.describe() for f in FORMATS)
        tables = read_tables(self.folder, hint=f"set ${MOVIELENS_ENV} (or data.path) to a folder with {formats}")
        self.format = tables.format
        rows, items, users = tables.ratings, tables.items, tables.users
        self._items, n_creators = _items_table(items)
        occupations = users["occupation"].drop_nulls().unique().sort()
        self._segments = users.select(
            pl.col("user_id").cast(pl.Int64),
            user_segment=pl.col("occupation").cast(pl.Enum(occupations)).to_physical().cast(pl.Int32),
        )
        self._check_tables(rows, items, users)
        self._stride = movie_id_stride(max(_max_id(rows["movie_id"]), _max_id(items["movie_id"])))
        self._history_items, table = self._index(rows)
        self._by_day = table.partition_by("day", as_dict=True, maintain_order=True)
        max_user = max(_max_id(rows["user_id"]), _max_id(users["user_id"]))
        max_movie = max(_max_id(rows["movie_id"]), _max_id(self._items["movie_id"]))
        self._vocab = self._build_vocab(max_user + 1, max_movie + 1, n_creators, len(occupations))

    # ------------------------------------------------------------------ public API

    def vocab(self) -> FeatureVocab:
        return self._vocab

    def days_with_data(self) -> list[date]:
        return sorted(key[0] for key in self._by_day)

    def impressions(self, day: date) -> pl.DataFrame:
        """All ratings of `day` (UTC) in time order, matching SAMPLE_SCHEMA; empty if none."""
        rows = self._by_day.get((day,))
        if rows is None:
            return pl.DataFrame(schema=SAMPLE_SCHEMA)
        history = self._history_series(rows["hist_start"].to_numpy(), rows["hist_end"].to_numpy())
        return rows.with_columns(history=history).select(
            pl.col(name).cast(dtype) for name, dtype in SAMPLE_SCHEMA.items()
        )

    # ------------------------------------------------------------------ preprocessing

    def _check_tables(self, rows: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame) -> None:
        """Key problems that would silently duplicate or corrupt rows in the joins below."""
        for name, table, key in (("items", items, "movie_id"), ("users", users, "user_id")):
            repeated = int(table[key].is_duplicated().sum())
            if repeated:
                raise DataContractError(f"movielens {name}: {repeated} rows with a repeated {key}")
        bad_movie = rows.filter(pl.col("movie_id") <= 0).height
        if bad_movie:
            raise DataContractError(f"movielens ratings: {bad_movie} movie ids below 1 (0 pads histories)")
        duplicates = rows.select(pl.struct("user_id", "movie_id").is_duplicated().sum()).item()
        if duplicates:
            raise DataContractError(f"movielens ratings: {duplicates} repeated (user_id, movie_id) pairs")

    def _index(self, rows: pl.DataFrame) -> tuple[np.ndarray, pl.DataFrame]:
        """Flat per-user rating sequence + one feature row per rating (history as index ranges)."""
        length = self.config.logged_history_len
        rows = rows.with_columns(
            event_time=pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC"),
        ).with_columns(day=pl.col("event_time").dt.date())
        # Per-user time order; ties in timestamp are broken by movie id (stable, data-independent).
        by_user = rows.sort("user_id", "timestamp", "movie_id").with_row_index("_row")
        by_user = by_user.with_columns(user_start=pl.col("_row").min().over("user_id").cast(pl.Int64))
        by_user = _with_rank_before(by_user, "user_id", "timestamp", "n_before")
        by_user = _with_rank_before(by_user, "user_id", "day", "user_before_day")
        history_items = by_user["movie_id"].to_numpy().astype(np.int32)
        by_item = _with_rank_before(
            by_user.sort("movie_id", "timestamp", "user_id"), "movie_id", "day", "item_before_day"
        )
        table = (
            by_item.join(self._items, on="movie_id", how="left")
            .join(self._segments, on="user_id", how="left")
            .sort("timestamp", "user_id", "movie_id")
            .select(
                sample_id=pl.col("user_id") * self._stride + pl.col("movie_id"),
                event_time=pl.col("event_time"),
                day=pl.col("day"),
                user_id=pl.col("user_id"),
                item_id=pl.col("movie_id"),
                category=pl.col("category").fill_null(1),
                creator=pl.col("creator").fill_null(UNKNOWN_YEAR_CREATOR),
                traffic_source=pl.lit(0),
                hour=pl.col("event_time").dt.hour(),
                user_segment=pl.col("user_segment").fill_null(0),
                item_age_days=(
                    (pl.col("day") - pl.col("release")).dt.total_days().clip(0).fill_null(0) + 1
                ).log(),
                item_popularity=(pl.col("item_before_day") + 1).log() / LOG_COUNT_SCALE,
                user_activity=(pl.col("user_before_day") + 1).log() / LOG_COUNT_SCALE,
                label=pl.col("rating") >= self.config.label_min_rating,
                r_s=pl.lit(1.0),
                r_pos=pl.lit(1.0),
                p_x=pl.lit(1.0),
                b_s=pl.lit(0.0),
                p_true=pl.lit(None, dtype=pl.Float32),
                hist_start=pl.col("user_start") + (pl.col("n_before") - length).clip(0),
                hist_end=pl.col("user_start") + pl.col("n_before"),
            )
        )
        return history_items, table

    def _history_series(self, start: np.ndarray, end: np.ndarray) -> pl.Series:
        """List(Int32) column of history_items[start:end] per row, built from flat values + offsets."""
        lengths = end - start
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        index = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
        values = self._history_items[index]
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))
        return pl.Series("history", lists).cast(pl.List(pl.Int32))

    def _build_vocab(self, n_users: int, n_items: int, n_creators: int, n_segments: int) -> FeatureVocab:
        item_category = np.zeros(n_items, dtype=np.int64)
        item_creator = np.zeros(n_items, dtype=np.int64)
        ids = self._items["movie_id"].to_numpy()
        item_category[ids] = self._items["category"].to_numpy()
        item_creator[ids] = self._items["creator"].to_numpy()
        # Rated movies missing from items.parquet get the same fallbacks as their rows.
        unknown = np.ones(n_items, dtype=bool)
        unknown[0] = False
        unknown[ids] = False
        item_category[unknown] = 1
        item_creator[unknown] = UNKNOWN_YEAR_CREATOR
        return FeatureVocab(
            n_users=n_users,
            n_items=n_items,
            n_categories=len(GENRES) + 1,
            n_creators=n_creators,
            n_traffic_sources=1,
            n_hours=N_HOURS,
            n_segments=max(n_segments, 1),
            item_category=item_category,
            item_creator=item_creator,
        )
