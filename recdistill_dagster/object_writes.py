"""Atomic writes by each store's own semantics, for the artifact store (no Dagster import).

A reader must never see a half-written artifact, and a failed write must leave the previous version:

    local disk           temporary name in the same folder, fsync, then rename over the target
    object store (S3…)   one PUT of the whole object: S3 makes an object visible only when its PUT
                         (or multipart upload) completes, so a temporary object, listings, HEAD,
                         server-side copy and delete (what rename costs there) buy nothing

and parquet from a lazy query is streamed by polars straight to the target (`sink_parquet` on the
`s3://` URL: a multipart upload, visible on completion), never collected into memory first.

    fs, path = fsspec.core.url_to_fs("s3://bucket/prefix/x.parquet", **s3fs_options)
    write_bytes(fs, path, data)
    sink_parquet(fs, path, lazy, polars_options)
"""

import os
from pathlib import Path
from typing import Any

import polars as pl
from fsspec.implementations.local import LocalFileSystem

from recdistill_dagster.files import replacing

# Stores where one PUT is atomic and polars writes natively (object_store); others use temp + rename.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def protocol_of(fs: Any) -> str:
    protocol = fs.protocol
    return str(protocol[0] if isinstance(protocol, tuple | list) else protocol)


def is_object_store(fs: Any) -> bool:
    return protocol_of(fs) in OBJECT_STORE_PROTOCOLS


def url_of(fs: Any, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else f"{protocol_of(fs)}://{path}"


def write_bytes(fs: Any, path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically: one PUT on an object store, temp + rename locally."""
    if isinstance(fs, LocalFileSystem):
        with replacing(Path(path)) as temp, temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return
    if not is_object_store(fs):
        raise ValueError(f"no atomic write known for {protocol_of(fs)}:// (local disk or an object store)")
    fs.pipe_file(path, data)  # a single PutObject


def sink_parquet(fs: Any, path: str, lazy: pl.LazyFrame, polars_options: dict[str, str] | None = None) -> None:
    """Stream `lazy` to parquet at `path` without collecting it; atomic as `write_bytes`."""
    if isinstance(fs, LocalFileSystem):
        with replacing(Path(path)) as temp:
            lazy.sink_parquet(temp)
        return
    if not is_object_store(fs):
        raise ValueError(f"polars cannot stream to {protocol_of(fs)}://")
    lazy.sink_parquet(url_of(fs, path), storage_options=polars_options)


def scan_parquet(fs: Any, path: str, polars_options: dict[str, str] | None = None) -> pl.LazyFrame:
    if isinstance(fs, LocalFileSystem):
        return pl.scan_parquet(path)
    return pl.scan_parquet(url_of(fs, path), storage_options=polars_options)
