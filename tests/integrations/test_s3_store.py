"""Artifact writes on S3 (a moto server on 127.0.0.1) and on local disk, atomic by each store's semantics.

S3 requests are counted from the moto server's own access log (one line per HTTP request).
"""

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
import polars as pl
import pytest
import s3fs

from recdistill_dagster.object_writes import scan_parquet, sink_parquet, write_bytes
from recdistill_dagster.services import S3Server
from recdistill_dagster.storage import ArtifactStore
from tests.integrations.conftest import Report

pytestmark = pytest.mark.integrations

REQUEST_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP')
ROWS = 200_000  # enough for polars to stream in several batches


class RequestLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.requests: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = REQUEST_LINE.search(record.getMessage())
        if match:
            self.requests.append((match.group(1), match.group(2)))


@contextmanager
def counted_requests() -> Iterator[RequestLog]:
    """Every HTTP request the moto server (werkzeug, in this process) answers inside the block."""
    server_log = logging.getLogger("werkzeug")
    handler, level = RequestLog(), server_log.level
    server_log.setLevel(logging.INFO)
    server_log.addHandler(handler)
    try:
        yield handler
    finally:
        server_log.removeHandler(handler)
        server_log.setLevel(level)


@pytest.fixture
def fs(s3: S3Server) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(**s3.s3fs_options(), skip_instance_cache=True)  # type: ignore[arg-type]


def _frame(rows: int, version: int) -> pl.LazyFrame:
    return pl.LazyFrame({"sample_id": range(rows)}).with_columns(version=pl.lit(version))


def _failing(rows: int) -> pl.LazyFrame:
    def boom(batch: pl.Series) -> pl.Series:
        raise RuntimeError("writer died mid-stream")

    return pl.LazyFrame({"sample_id": range(rows)}).with_columns(
        version=pl.col("sample_id").map_batches(boom, return_dtype=pl.Int64))


def test_s3_write_is_one_put_and_replaces(fs: s3fs.S3FileSystem, s3: S3Server, report: Report,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = f"{s3.bucket}/store/checkpoints/teacher/2026-01-02.pt"
    for version in (b"first", b"second"):
        with counted_requests() as log:
            write_bytes(fs, path, version)
        assert log.requests == [("PUT", f"/{path}")], log.requests
        assert fs.cat_file(path) == version
    assert fs.ls(f"{s3.bucket}/store/checkpoints/teacher", refresh=True) == [path]

    for name, value in s3.env().items():  # the pipeline's store reaches S3 through the environment
        monkeypatch.setenv(name, value)
    store = ArtifactStore(s3.url("store"))
    with counted_requests() as store_log:
        store.write_bytes("checkpoints/teacher/2026-01-02.pt", b"second")
    # The store's own writes on s3:// (9 requests with its former temporary object + copy + delete).
    assert [method for method, _ in store_log.requests] == ["PUT"], store_log.requests
    report("s3", "one write of a checkpoint: 1 request (PUT) with object_writes.write_bytes and with the "
                 "pipeline's ArtifactStore on s3://")


def test_s3_sink_streams_and_a_failed_write_keeps_the_previous_object(fs: s3fs.S3FileSystem, s3: S3Server,
                                                                       report: Report) -> None:
    folder = f"{s3.bucket}/store/student_dataset/2026-01-03"
    path = f"{folder}/2026-01-03.parquet"
    options = s3.storage_options()
    sink_parquet(fs, path, _frame(ROWS, 1), options)
    assert scan_parquet(fs, path, options).select(pl.len(), pl.col("version").max()).collect().row(0) == (ROWS, 1)
    with pytest.raises(Exception, match="writer died mid-stream"):
        sink_parquet(fs, path, _failing(ROWS), options)
    assert fs.ls(folder, refresh=True) == [path]  # no temporary or partial object
    assert scan_parquet(fs, path, options).select(pl.len(), pl.col("version").max()).collect().row(0) == (ROWS, 1)
    sink_parquet(fs, path, _frame(ROWS, 2), options)
    assert scan_parquet(fs, path, options).filter(pl.col("version") == 2).select(pl.len()).collect().item() == ROWS
    report("s3", f"polars sink_parquet straight to s3:// ({ROWS:,} rows), scan_parquet back; a writer failing "
                 "mid-stream left the previous object intact and nothing else")


def test_local_writes_replace_by_rename_and_leave_no_temporary(tmp_path: Path) -> None:
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    target = f"{root}/samples/teacher/2026-01-02.parquet"
    sink_parquet(fs, target, _frame(1000, 1))
    with pytest.raises(Exception, match="writer died mid-stream"):
        sink_parquet(fs, target, _failing(1000))
    assert pl.read_parquet(target)["version"].unique().to_list() == [1]
    write_bytes(fs, f"{root}/registry/x.json", b"{}")
    write_bytes(fs, f"{root}/registry/x.json", b'{"status": "bad"}')
    assert Path(root, "registry", "x.json").read_bytes() == b'{"status": "bad"}'
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["2026-01-02.parquet", "x.json"]


def test_unknown_protocols_are_refused() -> None:
    fs = fsspec.filesystem("memory")
    with pytest.raises(ValueError, match="memory://"):
        write_bytes(fs, "/x", b"")
