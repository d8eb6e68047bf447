"""Artifact storage: parquet tables, checkpoints and reports under one base URL.

The base is a local folder by default (the project's state folder) and may be any fsspec URL
(`s3://bucket/prefix`, `gs://…`, `memory://…`: an in-memory store, as the stage tests use). A reader
never sees a half-written artifact, a crash leaves the previous version in place, and re-writing a
path replaces it completely, each by the store's own semantics (`object_writes`):

    local disk, memory://   temporary name in the same folder, then rename (fsync on disk; the
                            next write of a target removes a killed writer's temporary)
    object store (s3://…)   one PUT of the whole object (visible only when complete); parquet from a
                            lazy query is streamed by polars straight to the `s3://` URL (a multipart
                            upload, also visible only on completion), never collected first

and polars scans object-store parquet lazily on its URL (predicates and projections pushed down).
Credentials and the endpoint come from the environment, as every AWS client reads them
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, … or an instance role): none in code or configuration.

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

from recdistill_dagster import object_writes

# Environment variables polars' object_store client needs beside the standard AWS ones: a plain-http
# endpoint (a local S3 such as the test's moto server) must be allowed explicitly.
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


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
            protocol = self.base_url.split("://", 1)[0] if "://" in self.base_url else "file"
            # Object stores: no listing cache, since polars writes objects behind fsspec's back.
            options = {"use_listings_cache": False} if protocol in object_writes.OBJECT_STORE_PROTOCOLS else {}
            fs, root = fsspec.core.url_to_fs(self.base_url, **options)
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs, self._root

    @property
    def is_local(self) -> bool:
        return isinstance(self._filesystem()[0], LocalFileSystem)

    @property
    def is_object_store(self) -> bool:
        """One PUT is atomic and polars reads and writes the URL itself (s3, gs, az)."""
        return object_writes.is_object_store(self._filesystem()[0])

    def polars_options(self) -> dict[str, str] | None:
        """polars `storage_options` for an object store: None (its own environment lookup) except that
        an `http://` endpoint from the environment must be allowed explicitly."""
        endpoint = next((os.environ[name] for name in ENDPOINT_ENV if os.environ.get(name)), None)
        if not self.is_object_store or endpoint is None:
            return None
        return {"aws_endpoint_url": endpoint, **({"aws_allow_http": "true"} if endpoint.startswith("http://") else {})}

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
        if self.is_object_store:  # one PUT (a temporary object + copy + delete would buy nothing)
            object_writes.write_bytes(fs, self.path(relative), data)
            return self.url(relative)
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
        """An in-memory frame: renamed into place locally, one PUT of the encoded file on an object store."""
        if self.is_local:
            with self._atomic_target(relative) as tmp:
                frame.write_parquet(tmp)
            return self.url(relative)
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        return self.write_bytes(relative, buffer.getvalue())

    def sink_parquet(self, relative: str, lazy: pl.LazyFrame) -> str:
        """Stream a lazy query to parquet without collecting it, atomically (local disk and object stores)."""
        fs, _ = self._filesystem()
        if self.is_object_store:
            object_writes.sink_parquet(fs, self.path(relative), lazy, self.polars_options())
            return self.url(relative)
        if self.is_local:
            with self._atomic_target(relative) as tmp:
                lazy.sink_parquet(tmp)
            return self.url(relative)
        return self.write_parquet(relative, lazy.collect())  # memory:// and other fsspec stores

    def scan_parquet(self, relative: str, what: str = "table") -> pl.LazyFrame:
        self.require(relative, what)
        if self.is_local:
            return pl.scan_parquet(self.path(relative))
        if self.is_object_store:  # lazily, on the URL itself
            return object_writes.scan_parquet(self._filesystem()[0], self.path(relative), self.polars_options())
        return pl.read_parquet(self.read_bytes(relative, what)).lazy()  # anything else fsspec knows

    def read_parquet(self, relative: str, what: str = "table") -> pl.DataFrame:
        return self.scan_parquet(relative, what).collect()

    def remove(self, relative: str) -> None:
        fs, _ = self._filesystem()
        path = self.path(relative)
        if fs.exists(path):
            fs.rm(path, recursive=True)
