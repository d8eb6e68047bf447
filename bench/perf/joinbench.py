"""The join case: one student day's rows ⟕ the teacher's logits, built by the project's own stage
(`stages.dataset.build_student_dataset`: scan, left join on sample_id, sink, coverage stats), against a
pandas baseline doing the same work (read both files, `merge`, write, coverage).

Inputs are generated in chunks (never a whole day in memory) with the contracts' schemas: the student
day has `rows` rows, the logit table `logit_factor` × as many (the teacher's stream is a superset of
the student's; every student row has its logit). `history_len` sets the row width.
"""

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recdistill_dagster import layout
from recdistill_dagster.data.schema import SAMPLE_SCHEMA, STUDENT_DATASET_SCHEMA, STUDENT_ROW, TEACHER_LOGIT_SCHEMA

STUDENT = "ranker"
CHUNK_ROWS = 1_000_000
# Row groups as polars writes them by default (≈ 2^18 rows at most): a streaming reader holds one at a time.
ROW_GROUP_ROWS = 131_072
SNAPSHOT = "teacher@2026-01-02#perf0000"


def join_overrides() -> dict[str, Any]:
    """A calendar whose second training partition is one streaming day (the day the join builds)."""
    return {"calendar": {"batch_days": 1, "streaming_days": 1}}


def join_day(config_start: date) -> date:
    return config_start + timedelta(days=1)


def _write_chunks(path: Path, chunks: Any) -> int:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    total = 0
    try:
        for frame in chunks:
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            total += frame.height
    finally:
        if writer is not None:
            writer.close()
    return path.stat().st_size


def _sample_chunk(rng: np.random.Generator, ids: np.ndarray, day: date, history_len: int) -> pl.DataFrame:
    n = ids.size
    start = datetime(day.year, day.month, day.day)
    history = pl.Series(rng.integers(1, 3000, size=(n, history_len), dtype=np.int32)).cast(pl.List(pl.Int32))
    columns: dict[str, Any] = {
        "sample_id": ids,
        "event_time": (np.datetime64(start, "us") + rng.integers(0, 86_400_000_000, n).astype("timedelta64[us]")),
        "day": np.full(n, np.datetime64(day, "D")),
        "user_id": rng.integers(0, 4000, n), "item_id": rng.integers(1, 3000, n),
        "category": rng.integers(0, 24, n), "creator": rng.integers(0, 600, n),
        "traffic_source": rng.integers(0, 3, n), "hour": rng.integers(0, 24, n),
        "user_segment": rng.integers(0, 8, n),
        "item_age_days": rng.random(n), "item_popularity": rng.random(n), "user_activity": rng.random(n),
        "history": history,
        "label": (rng.random(n) < 0.04).astype(np.int8),
        "r_s": np.full(n, 10.0), "r_pos": np.ones(n), "p_x": np.ones(n), "b_s": np.zeros(n),
        "p_true": rng.random(n) * 0.1,
    }
    frame = pl.DataFrame(columns)
    return frame.with_columns(pl.col("event_time").dt.replace_time_zone("UTC")).select(
        pl.col(name).cast(dtype) for name, dtype in SAMPLE_SCHEMA.items())


def _logit_chunk(rng: np.random.Generator, ids: np.ndarray, day: date) -> pl.DataFrame:
    n = ids.size
    frame = pl.DataFrame({
        "sample_id": ids, "day": np.full(n, np.datetime64(day, "D")),
        "teacher_logit": rng.normal(-3.0, 1.0, n), "teacher_snapshot": pl.repeat(SNAPSHOT, n, eager=True),
        "recorded_step": np.arange(n) // 512,
        "teacher_r_s": np.full(n, 2.0), "teacher_r_pos": np.ones(n), "teacher_p_x": np.ones(n),
        "teacher_b_s": np.zeros(n),
    })
    return frame.select(pl.col(name).cast(dtype) for name, dtype in TEACHER_LOGIT_SCHEMA.items())


def write_inputs(base: Path, day: date, rows: int, history_len: int, logit_factor: int,
                 seed: int = 5) -> dict[str, Any]:
    """The student's sample file and the partition's logit file at their layout paths below `base`."""
    rng = np.random.default_rng(seed)
    samples = base / layout.student_samples_path(STUDENT, day)
    logits = base / layout.teacher_logits_path(day, day)

    def sample_chunks() -> Any:
        for start in range(0, rows, CHUNK_ROWS):
            # Student rows are every logit_factor-th teacher row, in sample_id order (as the sampler keeps them).
            ids = np.arange(start, min(start + CHUNK_ROWS, rows), dtype=np.int64) * logit_factor
            yield _sample_chunk(rng, ids, day, history_len)

    def logit_chunks() -> Any:
        total = rows * logit_factor
        for start in range(0, total, CHUNK_ROWS):
            yield _logit_chunk(rng, np.arange(start, min(start + CHUNK_ROWS, total), dtype=np.int64), day)

    _register_snapshot(base, day)
    return {"samples_bytes": _write_chunks(samples, sample_chunks()),
            "logits_bytes": _write_chunks(logits, logit_chunks()),
            "samples": str(samples), "logits": str(logits)}


def _register_snapshot(base: Path, day: date) -> None:
    """The logits' teacher snapshot as a good registry record (the stage refuses unregistered ones)."""
    from datetime import UTC

    from recdistill_dagster.registry import SnapshotRecord, SnapshotRegistry
    from recdistill_dagster.storage import ArtifactStore

    SnapshotRegistry(ArtifactStore(str(base))).register(SnapshotRecord(
        snapshot_id=SNAPSHOT, partition=day, attempt=1, status="good", dagster_run_id="perf",
        created_at=datetime.now(UTC)))


class _NoSource:
    """The join stage never reads the data source; this stands in for it without building a world."""

    def vocab(self) -> Any:
        raise RuntimeError("the join benchmark has no data source")

    def impressions(self, day: date) -> pl.DataFrame:
        raise RuntimeError("the join benchmark has no data source")


def polars_join(base: Path, day: date, threads: int) -> dict[str, Any]:
    """The project's stage, exactly as the asset calls it."""
    from recdistill_dagster.config import load_config
    from recdistill_dagster.stages.context import RunIdentity, StageContext
    from recdistill_dagster.stages.dataset import build_student_dataset
    from recdistill_dagster.storage import ArtifactStore

    config = load_config("demo", overrides={**join_overrides(), "runtime": {"threads": threads}})
    ctx = StageContext(config=config, store=ArtifactStore(str(base)), source=_NoSource(),
                       identity=RunIdentity("perfjoin"))
    manifest = build_student_dataset(ctx, config.student(STUDENT), day)
    output = base / layout.student_dataset_path(STUDENT, day, day)
    return {"n_rows": manifest.stats["n_rows"], "coverage": manifest.stats["coverage"],
            "output_bytes": output.stat().st_size, "output": str(output)}


def pandas_join(base: Path, day: date) -> dict[str, Any]:
    """The same day with pandas (Arrow-backed dtypes, so list columns stay columnar): read, merge, write."""
    import pandas as pd  # type: ignore[import-untyped]

    samples = pd.read_parquet(base / layout.student_samples_path(STUDENT, day), dtype_backend="pyarrow")
    columns = ["sample_id", "teacher_logit", "teacher_snapshot", "teacher_r_s", "teacher_r_pos", "teacher_p_x",
               "teacher_b_s"]
    logits = pd.read_parquet(base / layout.teacher_logits_path(day, day), columns=columns, dtype_backend="pyarrow")
    joined = samples.merge(logits, on="sample_id", how="left", validate="m:1")
    joined[STUDENT_ROW] = True
    joined = joined[list(STUDENT_DATASET_SCHEMA)]
    output = base / "pandas" / f"{day.isoformat()}.parquet"
    output.parent.mkdir(parents=True, exist_ok=True)
    joined.to_parquet(output, index=False)
    matched = joined["teacher_logit"].notna()
    return {"n_rows": len(joined), "coverage": float(matched.mean()) if len(joined) else 0.0,
            "output_bytes": output.stat().st_size, "output": str(output)}


def stage_parts(base: Path, day: date) -> dict[str, Any]:
    """What bounds the stage: reading the day alone, and reading + writing it (no join), timed."""
    import time

    samples = base / layout.student_samples_path(STUDENT, day)
    started = time.perf_counter()
    pl.scan_parquet(samples).collect()
    read = time.perf_counter() - started
    output = base / "parts" / "copy.parquet"
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pl.scan_parquet(samples).sink_parquet(output)
    copy = time.perf_counter() - started
    output.unlink()
    return {"read_seconds": read, "read_write_seconds": copy}
