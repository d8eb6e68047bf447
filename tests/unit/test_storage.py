"""Artifact store: atomic replace, fsspec URLs, clear errors for missing artifacts."""

from pathlib import Path

import polars as pl
import pytest

from recdistill_dagster.storage import ArtifactNotFoundError, ArtifactStore


def test_local_roundtrip_and_replace(tmp_path: Path) -> None:
    store = ArtifactStore(base_url=str(tmp_path))
    frame = pl.DataFrame({"a": [1, 2, 3]})
    url = store.write_parquet("t/x.parquet", frame)
    assert Path(url).exists()
    assert store.read_parquet("t/x.parquet").equals(frame)
    store.write_parquet("t/x.parquet", frame.head(1))  # re-materialization replaces completely
    assert store.read_parquet("t/x.parquet").height == 1
    store.sink_parquet("t/y.parquet", frame.lazy().filter(pl.col("a") > 1))
    assert store.read_parquet("t/y.parquet")["a"].to_list() == [2, 3]
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_failed_write_keeps_previous_version(tmp_path: Path) -> None:
    store = ArtifactStore(base_url=str(tmp_path))
    store.write_bytes("c.bin", b"old")

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), store._atomic_target("c.bin") as tmp:
        Path(tmp).write_bytes(b"half")
        raise Boom
    assert store.read_bytes("c.bin") == b"old"
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_fsspec_memory_url() -> None:
    store = ArtifactStore(base_url="memory://recdistill-test")
    frame = pl.DataFrame({"a": [1.5, 2.5]})
    url = store.write_parquet("d/x.parquet", frame)
    assert url.startswith("memory://")
    assert store.read_parquet("d/x.parquet").equals(frame)
    store.write_json("r.json", {"eta": 0.5})
    assert store.read_json("r.json") == {"eta": 0.5}
    assert store.list("d") == ["d/x.parquet"]


def test_missing_artifact_is_a_clear_error(tmp_path: Path) -> None:
    store = ArtifactStore(base_url=str(tmp_path))
    with pytest.raises(ArtifactNotFoundError, match="teacher_checkpoint 2026-01-02 is missing"):
        store.read_bytes("checkpoints/teacher/2026-01-02.pt", what="teacher_checkpoint 2026-01-02")
