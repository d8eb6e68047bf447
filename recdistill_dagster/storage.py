"""Artifact storage: parquet tables, checkpoints and reports under one base URL.

The base is a local folder by default (the project's state folder) and may be any fsspec URL
(`s3://bucket/prefix`, `gs://…`, `memory://…`: an in-memory store, as the stage tests use). Every
write goes to a temporary name in the same folder and is then renamed, so a reader never sees a
half-written file and a crash leaves the previous version in place; re-writing a path replaces it
completely.

No Dagster here: the stages take any `Store`; `resources.storage` wraps `ArtifactStore` as the
Dagster resource.
"""

import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem


class ArtifactNotFoundError(FileNotFoundError):
    """An artifact the caller needs has not been written (yet)."""


class Store(Protocol):
    """What the stages need of a store: relative paths in, URLs (for people and metadata) out."""

    def url(self, relative: str) -> str: ...
    def exists(self, relative: str) -> bool: ...
    def list(self, relative_dir: str) -> list[str]: ...
    def write_bytes(self, relative: str, data: bytes) -> str: ...
    def read_bytes(self, relative: str, what: str = ...) -> bytes: ...
    def write_json(self, relative: str, payload: Any) -> str: ...
    def read_json(self, relative: str, what: str = ...) -> Any: ...
    def write_parquet(self, relative: str, frame: pl.DataFrame) -> str: ...
    def sink_parquet(self, relative: str, lazy: pl.LazyFrame) -> str: ...
    def scan_parquet(self, relative: str, what: str = ...) -> pl.LazyFrame: ...
    def read_parquet(self, relative: str, what: str = ...) -> pl.DataFrame: ...
    def remove(self, relative: str) -> None: ...


class ArtifactStore:
    """Reads and writes the pipeline's files below `base_url`, atomically."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._fs: Any = None
        self._root = ""

    def __repr__(self) -> str:
        return f"ArtifactStore({self.base_url!r})"

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            fs, root = fsspec.core.url_to_fs(self.base_url)
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs, self._root

    @property
    def is_local(self) -> bool:
        return isinstance(self._filesystem()[0], LocalFileSystem)

    def path(self, relative: str) -> str:
        """Filesystem path of an artifact (without protocol)."""
        _, root = self._filesystem()
        return f"{root}/{relative.lstrip('/')}"

    def url(self, relative: str) -> str:
        """Full URL of an artifact, as shown to people and recorded in metadata."""
        fs, _ = self._filesystem()
        path = self.path(relative)
        if self.is_local:
            return path
        protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
        return f"{protocol}://{path}"

    def exists(self, relative: str) -> bool:
        fs, _ = self._filesystem()
        return fs.exists(self.path(relative))

    def require(self, relative: str, what: str) -> None:
        if not self.exists(relative):
            raise ArtifactNotFoundError(f"{what} is missing: no file at {self.url(relative)}")

    def list(self, relative_dir: str) -> list[str]:
        """Relative paths of the files directly below a folder (empty if it does not exist)."""
        fs, root = self._filesystem()
        folder = self.path(relative_dir)
        if not fs.exists(folder):
            return []
        names = [p for p in fs.ls(folder, detail=False) if ".tmp-" not in p]
        return sorted(p[len(root) + 1 :] if p.startswith(root) else p for p in names)

    @contextmanager
    def _atomic_target(self, relative: str) -> Iterator[str]:
        """Yield a temporary path next to the target; rename it over the target on success."""
        fs, _ = self._filesystem()
        final = self.path(relative)
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        # A writer killed mid-write (kill -9, OOM) leaves its temporary behind; the next write of the
        # same target removes it. Readers never see temporaries: they only open the final name.
        for stale in fs.glob(f"{final}.tmp-*"):
            fs.rm(stale)
        try:
            yield tmp
            if self.is_local:
                os.replace(tmp, final)  # atomic on POSIX
            else:
                fs.mv(tmp, final)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)

    def write_bytes(self, relative: str, data: bytes) -> str:
        fs, _ = self._filesystem()
        with self._atomic_target(relative) as tmp, fs.open(tmp, "wb") as handle:
            handle.write(data)
            if self.is_local:
                handle.flush()
                os.fsync(handle.fileno())
        return self.url(relative)

    def read_bytes(self, relative: str, what: str = "artifact") -> bytes:
        self.require(relative, what)
        fs, _ = self._filesystem()
        with fs.open(self.path(relative), "rb") as handle:
            return handle.read()

    def write_json(self, relative: str, payload: Any) -> str:
        return self.write_bytes(relative, json.dumps(payload, indent=2, sort_keys=True).encode())

    def read_json(self, relative: str, what: str = "artifact") -> Any:
        return json.loads(self.read_bytes(relative, what))

    def write_parquet(self, relative: str, frame: pl.DataFrame) -> str:
        if self.is_local:
            with self._atomic_target(relative) as tmp:
                frame.write_parquet(tmp)
            return self.url(relative)
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        return self.write_bytes(relative, buffer.getvalue())

    def sink_parquet(self, relative: str, lazy: pl.LazyFrame) -> str:
        """Stream a lazy query to parquet without collecting it (local), atomically."""
        if not self.is_local:
            return self.write_parquet(relative, lazy.collect())
        with self._atomic_target(relative) as tmp:
            lazy.sink_parquet(tmp)
        return self.url(relative)

    def scan_parquet(self, relative: str, what: str = "table") -> pl.LazyFrame:
        self.require(relative, what)
        if self.is_local:
            return pl.scan_parquet(self.path(relative))
        # Object stores polars reads natively (s3, gs, az, http) are scanned lazily; anything
        # else fsspec knows is read through a file handle.
        url = self.url(relative)
        if url.split("://", 1)[0] in {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "http", "https"}:
            return pl.scan_parquet(url)
        return pl.read_parquet(self.read_bytes(relative, what)).lazy()

    def read_parquet(self, relative: str, what: str = "table") -> pl.DataFrame:
        return self.scan_parquet(relative, what).collect()

    def remove(self, relative: str) -> None:
        fs, _ = self._filesystem()
        path = self.path(relative)
        if fs.exists(path):
            fs.rm(path, recursive=True)
