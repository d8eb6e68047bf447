"""The MovieLens releases as GroupLens publishes them, read in place into one canonical form.

A folder is recognised by its files (the first format whose required files are all there):

| format | files | layout |
|---|---|---|
| parquet | ratings/items/users.parquet | this project's conversion (columns as in ML-100K) |
| ML-100K | u.data, u.item, u.user | u.data tab-separated; u.item, u.user `|`-separated, latin-1 |
| ML-1M | ratings.dat, movies.dat, users.dat | `::`-separated, latin-1; genres `|`-joined names |
| CSV (ml-latest, ml-20m/25m/32m) | ratings.csv, movies.csv [, users.csv] | comma-separated with header, UTF-8 |

Canonical tables (`MovieLensTables`):
    ratings  user_id i64, movie_id i64, rating f64 (half stars in the CSV releases), timestamp i64 (Unix s)
    items    movie_id i64, category i32 (1 + index in GENRES of the first genre in that order; 1 when
             none), release date (ML-100K: the release date; ML-1M/CSV: 1 January of the title's year)
    users    user_id i64, occupation str (ML-1M: its occupation code; CSV: only with users.csv)

`write_published_ml100k` writes a canonical parquet folder back in the published ML-100K layout
(byte format as GroupLens publishes it), e.g. to run the pipeline on "the published files" from
the shared parquet copy: the data set's terms forbid committing either form.
"""

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recdistill_dagster.data.schema import DataContractError

GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
# Genre names of the later releases that mean one of GENRES; others (IMAX) carry no category.
GENRE_ALIASES = {"Children": "Children's", "(no genres listed)": "unknown"}
UNKNOWN_CATEGORY = 1  # 1 + GENRES.index("unknown"); 0 is the padding item's
LATIN_1 = "latin-1"
PUBLISHED_DATE_FORMAT = "%d-%b-%Y"  # ML-100K release dates: 01-Jan-1995
TITLE_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{4})?\)\s*$")  # "Toy Story (1995)", "Show (2006–2007)"
FIELD_SEPARATOR_1M = "::"
UNIT_SEPARATOR = "\x1f"  # one-byte stand-in for "::" (polars splits on one byte); never in the data

RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
ITEM_COLUMNS_100K = ("movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL", *GENRES)
USER_COLUMNS_100K = ("user_id", "age", "gender", "occupation", "zip_code")
REQUIRED_PARQUET_COLUMNS: dict[str, tuple[str, ...]] = {
    "ratings.parquet": RATING_COLUMNS,
    "items.parquet": ("movie_id", "release_date", *GENRES),
    "users.parquet": ("user_id", "occupation"),
}


@dataclass(frozen=True)
class MovieLensTables:
    ratings: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    format: str


@dataclass(frozen=True)
class MovieLensFormat:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    read: Callable[[Path], MovieLensTables]

    def matches(self, folder: Path) -> bool:
        return all((folder / name).is_file() for name in self.required)

    def describe(self) -> str:
        extra = f" (optional: {', '.join(self.optional)})" if self.optional else ""
        return f"{self.name}: {', '.join(self.required)}{extra}"


# --------------------------------------------------------------------------- shared pieces


def _category_from_flags(items: pl.DataFrame) -> pl.Expr:
    return pl.coalesce(
        [pl.when(pl.col(g) == 1).then(pl.lit(i + 1)) for i, g in enumerate(GENRES)] + [pl.lit(UNKNOWN_CATEGORY)]
    ).cast(pl.Int32)


def _category_from_names(genres: pl.Expr) -> pl.Expr:
    """`|`-joined genre names → the category of the first of them in GENRES order."""
    index = {name: i + 1 for i, name in enumerate(GENRES)}
    index.update({alias: index[target] for alias, target in GENRE_ALIASES.items()})
    codes = genres.str.split("|").list.eval(pl.element().replace_strict(index, default=None, return_dtype=pl.Int32))
    return codes.list.min().fill_null(UNKNOWN_CATEGORY).cast(pl.Int32)


def _release_from_title(title: pl.Expr) -> pl.Expr:
    year = title.str.extract(TITLE_YEAR.pattern, 1).cast(pl.Int32, strict=False)
    return pl.date(year, 1, 1)


def _ratings(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    try:
        ratings = frame.select(
            pl.col("user_id").cast(pl.Int64), pl.col("movie_id").cast(pl.Int64),
            pl.col("rating").cast(pl.Float64), pl.col("timestamp").cast(pl.Int64),
        )
    except pl.exceptions.PolarsError as exc:
        raise DataContractError(f"movielens {source}: ratings are not numeric ({exc})") from None
    incomplete = ratings.filter(pl.any_horizontal(pl.all().is_null())).height
    if incomplete:
        raise DataContractError(f"movielens {source}: {incomplete} ratings with missing fields "
                                f"(expected {', '.join(RATING_COLUMNS)} on every line)")
    return ratings


def _read_text(path: Path, encoding: str, separator: str, columns: tuple[str, ...], *,
               header: bool = False, quoted: bool = False, schema: dict[str, pl.DataType] | None = None,
               ) -> pl.DataFrame:
    """A delimited text file as strings (or `schema`), decoded from `encoding`; a multi-byte
    separator ("::") is mapped to a one-byte one first."""
    text = path.read_bytes().decode(encoding)
    if len(separator) > 1:
        if UNIT_SEPARATOR in text:
            raise DataContractError(f"movielens {path}: unexpected control character U+001F")
        text = text.replace(separator, UNIT_SEPARATOR)
        separator = UNIT_SEPARATOR
    try:
        frame = pl.read_csv(io.BytesIO(text.encode()), separator=separator, has_header=header,
                            quote_char='"' if quoted else None, infer_schema=False,
                            new_columns=None if header else list(columns))
    except pl.exceptions.PolarsError as exc:
        raise DataContractError(f"movielens {path}: cannot be read as {separator!r}-separated text ({exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing or (not header and frame.width != len(columns)):
        raise DataContractError(f"movielens {path}: expected columns {list(columns)}, found {frame.columns}")
    frame = frame.select(columns)
    return frame.cast(schema) if schema else frame  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the formats


def _read_parquet(folder: Path) -> MovieLensTables:
    frames = {}
    for name, required in REQUIRED_PARQUET_COLUMNS.items():
        frame = pl.read_parquet(folder / name)
        missing = [column for column in required if column not in frame.columns]
        if missing:
            raise DataContractError(f"movielens {folder / name}: missing columns {missing}")
        frames[name] = frame
    items = frames["items.parquet"]
    return MovieLensTables(
        ratings=_ratings(frames["ratings.parquet"], str(folder / "ratings.parquet")),
        items=_items_100k(items),
        users=frames["users.parquet"].select(pl.col("user_id").cast(pl.Int64), pl.col("occupation").cast(pl.String)),
        format="parquet",
    )


def _items_100k(items: pl.DataFrame) -> pl.DataFrame:
    return items.select(
        pl.col("movie_id").cast(pl.Int64),
        category=_category_from_flags(items),
        release=pl.col("release_date").str.strptime(pl.Date, PUBLISHED_DATE_FORMAT, strict=False),
    )


def _read_100k(folder: Path) -> MovieLensTables:
    ratings = _read_text(folder / "u.data", LATIN_1, "\t", RATING_COLUMNS)
    items = _read_text(folder / "u.item", LATIN_1, "|", ITEM_COLUMNS_100K)
    users = _read_text(folder / "u.user", LATIN_1, "|", USER_COLUMNS_100K)
    try:
        items = items.with_columns(pl.col(g).cast(pl.Int8) for g in GENRES)
    except pl.exceptions.PolarsError:
        raise DataContractError(f"movielens {folder / 'u.item'}: genre flags must be 0 or 1") from None
    return MovieLensTables(
        ratings=_ratings(ratings, str(folder / "u.data")),
        items=_items_100k(items),
        users=users.select(pl.col("user_id").cast(pl.Int64, strict=False), "occupation"),
        format="ML-100K",
    )


def _items_from_titles(movies: pl.DataFrame) -> pl.DataFrame:
    return movies.select(
        pl.col("movie_id").cast(pl.Int64, strict=False),
        category=_category_from_names(pl.col("genres")),
        release=_release_from_title(pl.col("title")),
    )


def _read_1m(folder: Path) -> MovieLensTables:
    ratings = _read_text(folder / "ratings.dat", LATIN_1, FIELD_SEPARATOR_1M, RATING_COLUMNS)
    movies = _read_text(folder / "movies.dat", LATIN_1, FIELD_SEPARATOR_1M, ("movie_id", "title", "genres"))
    users = _read_text(folder / "users.dat", LATIN_1, FIELD_SEPARATOR_1M,
                       ("user_id", "gender", "age", "occupation", "zip_code"))
    return MovieLensTables(
        ratings=_ratings(ratings, str(folder / "ratings.dat")),
        items=_items_from_titles(movies),
        users=users.select(pl.col("user_id").cast(pl.Int64, strict=False), "occupation"),
        format="ML-1M",
    )


def _read_csv(folder: Path) -> MovieLensTables:
    ratings = _read_text(folder / "ratings.csv", "utf-8", ",", ("userId", "movieId", "rating", "timestamp"),
                         header=True)
    movies = _read_text(folder / "movies.csv", "utf-8", ",", ("movieId", "title", "genres"), header=True, quoted=True)
    renamed = {"userId": "user_id", "movieId": "movie_id"}
    if (folder / "users.csv").is_file():
        users = _read_text(folder / "users.csv", "utf-8", ",", ("userId", "occupation"), header=True, quoted=True)
        users = users.rename(renamed, strict=False).with_columns(pl.col("user_id").cast(pl.Int64, strict=False))
    else:
        users = pl.DataFrame(schema={"user_id": pl.Int64, "occupation": pl.String})
    return MovieLensTables(
        ratings=_ratings(ratings.rename(renamed, strict=False), str(folder / "ratings.csv")),
        items=_items_from_titles(movies.rename(renamed, strict=False)),
        users=users,
        format="CSV",
    )


FORMATS: tuple[MovieLensFormat, ...] = (
    MovieLensFormat("parquet", tuple(REQUIRED_PARQUET_COLUMNS), (), _read_parquet),
    MovieLensFormat("ML-100K", ("u.data", "u.item", "u.user"), (), _read_100k),
    MovieLensFormat("ML-1M", ("ratings.dat", "movies.dat", "users.dat"), (), _read_1m),
    MovieLensFormat("CSV", ("ratings.csv", "movies.csv"), ("users.csv",), _read_csv),
)


def detect_format(folder: Path, hint: str = "") -> MovieLensFormat:
    """The first format whose required files are all in `folder`; else FileNotFoundError listing
    what each format needs and what the folder holds."""
    if not folder.is_dir():
        raise FileNotFoundError(f"MovieLens folder {folder} does not exist{'; ' + hint if hint else ''}")
    for candidate in FORMATS:
        if candidate.matches(folder):
            return candidate
    present = sorted(p.name for p in folder.iterdir())[:20]
    needs = "\n".join(f"  - {f.describe()}" for f in FORMATS)
    raise FileNotFoundError(
        f"MovieLens folder {folder} matches no known format; one of these sets of files is needed:\n{needs}\n"
        f"found: {', '.join(present) or 'nothing'}{'; ' + hint if hint else ''}"
    )


def read_tables(folder: Path, hint: str = "") -> MovieLensTables:
    """The folder's ratings, items and users in the canonical form, whatever its format."""
    tables = detect_format(folder, hint).read(folder)
    for name, frame, key in (("items", tables.items, "movie_id"), ("users", tables.users, "user_id"),
                             ("ratings", tables.ratings, "user_id")):
        unreadable = int(frame[key].null_count())
        if unreadable:
            raise DataContractError(f"movielens {folder} ({tables.format}): {unreadable} {name} rows without a "
                                    f"numeric {key}")
    return tables


# --------------------------------------------------------------------------- the published ML-100K layout


def write_published_ml100k(parquet_folder: Path, target: Path) -> Path:
    """Write the parquet form's tables as GroupLens publishes ML-100K: `u.data` (tab-separated user,
    item, rating, timestamp), `u.item` and `u.user` (`|`-separated, latin-1), rows in stored order."""
    target.mkdir(parents=True, exist_ok=True)
    ratings = pl.read_parquet(parquet_folder / "ratings.parquet").select(RATING_COLUMNS)
    items = pl.read_parquet(parquet_folder / "items.parquet").select(ITEM_COLUMNS_100K)
    users = pl.read_parquet(parquet_folder / "users.parquet").select(USER_COLUMNS_100K)
    _write_lines(target / "u.data", ratings, "\t")
    _write_lines(target / "u.item", items.with_columns(
        pl.col("video_release_date").cast(pl.Int64, strict=False)), "|")
    _write_lines(target / "u.user", users, "|")
    return target


def _write_lines(path: Path, frame: pl.DataFrame, separator: str) -> None:
    """Fields joined by `separator`, nulls as empty fields, "\\n" line ends, latin-1; no quoting."""
    as_text = frame.select(pl.col(c).cast(pl.String).fill_null("") for c in frame.columns)
    lines = as_text.select(pl.concat_str(pl.all(), separator=separator))
    body = "".join(f"{line}\n" for line in lines.to_series())
    path.write_bytes(body.encode(LATIN_1))
