"""One small MovieLens data set written in every published layout (and the parquet form), by hand.

The serializers here are written independently of `movielens_formats.py` from the GroupLens
README's description of each release, so a reader and the exporter are checked against them.
"""

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from recdistill_dagster.data.movielens_formats import GENRES

USERS = [  # user_id, age, gender, occupation (ML-100K name), ML-1M occupation code (same order), zip
    (1, 24, "M", "artist", "1", "85711"),
    (2, 53, "F", "doctor", "2", "94043"),
    (3, 23, "M", "writer", "3", "32067"),
    (4, 33, "F", "artist", "1", "43537"),
]
MOVIES = [  # movie_id, title, genres (ML-1M names), CSV genres (later names)
    (1, "Toy Story (1995)", "Animation|Children's|Comedy", "Animation|Children|Comedy"),
    (2, "Star Wars: Episode IV - A New Hope (1977)", "Action|Sci-Fi", "Action|IMAX|Sci-Fi"),
    (3, "American President, The (1995)", "Comedy|Drama|Romance", "Comedy|Drama|Romance"),
    (4, "Café Society (1995)", "Documentary", "Documentary"),
    (5, "Lost Reel", "unknown", "(no genres listed)"),
    (6, 'Shall We "Dance"? (1937)', "Musical|Romance", "Musical|Romance"),
]
DAY_SECONDS = 86_400
START = int(datetime(1998, 3, 1, tzinfo=UTC).timestamp())


def ratings() -> list[tuple[int, int, int, int]]:
    """(user, movie, rating, timestamp): every user rates most movies over three days."""
    rows = []
    for user, *_ in USERS:
        for movie, *_ in MOVIES:
            if (user + movie) % 5 == 0:
                continue
            day = (user * 7 + movie) % 3
            timestamp = START + day * DAY_SECONDS + user * 3_600 + movie * 60
            rows.append((user, movie, 1 + (user * movie) % 5, timestamp))
    return rows


def _year(title: str) -> str | None:
    return title[-5:-1] if title.endswith(")") and title[-5:-1].isdigit() else None


def _release(title: str) -> str:
    year = _year(title)
    return f"01-Jan-{year}" if year else ""


def _flags(genres: str) -> list[int]:
    names = set(genres.split("|"))
    return [int(g in names) for g in GENRES]


def _write(path: Path, lines: list[str], encoding: str) -> None:
    path.write_bytes("".join(line + "\n" for line in lines).encode(encoding))


def write_parquet(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(ratings(), schema=["user_id", "movie_id", "rating", "timestamp"], orient="row").write_parquet(
        folder / "ratings.parquet")
    items = [(m, title, _release(title), None, f"http://example.org/{m}", *_flags(g)) for m, title, g, _ in MOVIES]
    pl.DataFrame(items, schema=["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL", *GENRES],
                 orient="row").write_parquet(folder / "items.parquet")
    pl.DataFrame([(u, a, g, occ, z) for u, a, g, occ, _, z in USERS],
                 schema=["user_id", "age", "gender", "occupation", "zip_code"], orient="row").write_parquet(
        folder / "users.parquet")
    return folder


def write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "u.data", ["\t".join(map(str, row)) for row in ratings()], "latin-1")
    _write(folder / "u.item", ["|".join([str(m), title, _release(title), "", f"http://example.org/{m}",
                                         *map(str, _flags(g))]) for m, title, g, _ in MOVIES], "latin-1")
    _write(folder / "u.user", [f"{u}|{a}|{g}|{occ}|{z}" for u, a, g, occ, _, z in USERS], "latin-1")
    return folder


def write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "ratings.dat", ["::".join(map(str, row)) for row in ratings()], "latin-1")
    _write(folder / "movies.dat", [f"{m}::{title}::{g}" for m, title, g, _ in MOVIES], "latin-1")
    _write(folder / "users.dat", [f"{u}::{g}::{a}::{code}::{z}" for u, a, g, _, code, z in USERS], "latin-1")
    return folder


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


def write_csv(folder: Path, *, with_users: bool = True, rating_scale: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "ratings.csv", ["userId,movieId,rating,timestamp"]
           + [f"{u},{m},{r * rating_scale:.1f},{t}" for u, m, r, t in ratings()], "utf-8")
    _write(folder / "movies.csv", ["movieId,title,genres"]
           + [f"{m},{_csv_field(title)},{g}" for m, title, _, g in MOVIES], "utf-8")
    if with_users:
        _write(folder / "users.csv", ["userId,occupation"] + [f"{u},{occ}" for u, _, _, occ, _, _ in USERS], "utf-8")
    return folder
