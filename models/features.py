"""Polars frames (SAMPLE_SCHEMA / STUDENT_DATASET_SCHEMA) → model tensors.

Sample frames have no teacher columns; their teacher logit and teacher sampling come out NaN, which
the distillation loss treats as "no teacher signal". A frame without a `student_row` column is all
task rows. Everything is vectorized: the history list
column is read through its arrow offsets, with no per-row Python.
"""

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from recdistill_dagster.data.schema import (
    DENSE_FEATURES,
    PADDING_ITEM,
    SAMPLING_COLUMNS,
    SPARSE_FEATURES,
    STUDENT_ROW,
    TEACHER_SAMPLING_COLUMNS,
)


@dataclass
class FeatureTensors:
    sample_id: np.ndarray  # (B,) int64
    sparse: torch.Tensor  # (B, len(SPARSE_FEATURES)) int64, SPARSE_FEATURES order
    dense: torch.Tensor  # (B, len(DENSE_FEATURES)) float32
    history: torch.Tensor  # (B, L) int64 (int32 in a compact day tensor), newest last, left-padded with 0
    label: torch.Tensor  # (B,) float32
    sampling: torch.Tensor  # (B, 4) float32, SAMPLING_COLUMNS order
    teacher_logit: torch.Tensor  # (B,) float32, NaN where the teacher has no logit
    teacher_sampling: torch.Tensor  # (B, 4) float32, TEACHER_SAMPLING_COLUMNS order, NaN where absent
    # (B,) bool: rows of the student's own stream (task loss); False for rows only the teacher's stream
    # holds, which carry a soft label and train the distillation loss only.
    task_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.sparse.shape[0])

    def slice(self, idx: torch.Tensor) -> "FeatureTensors":
        """Rows `idx` (a 1-d index tensor, e.g. a shuffled batch); history comes out int64."""
        idx = idx.cpu()
        return FeatureTensors(
            sample_id=self.sample_id[idx.numpy()],
            sparse=self.sparse[idx],
            dense=self.dense[idx],
            history=self.history[idx].long(),  # compact int32 day tensors are widened per batch
            label=self.label[idx],
            sampling=self.sampling[idx],
            teacher_logit=self.teacher_logit[idx],
            teacher_sampling=self.teacher_sampling[idx],
            task_mask=self.task_mask[idx],
        )

    index = slice

    def to(self, device: torch.device | str) -> "FeatureTensors":
        return FeatureTensors(
            sample_id=self.sample_id,
            sparse=self.sparse.to(device),
            dense=self.dense.to(device),
            history=self.history.to(device),
            label=self.label.to(device),
            sampling=self.sampling.to(device),
            teacher_logit=self.teacher_logit.to(device),
            teacher_sampling=self.teacher_sampling.to(device),
            task_mask=self.task_mask.to(device),
        )


def history_matrix(history: pl.Series, length: int, dtype: type[np.integer] = np.int64) -> np.ndarray:
    """List column → (n, length): the last `length` items right-aligned (newest in the last column),
    left-padded with PADDING_ITEM. Null lists and null items count as padding.

    Vectorized over the arrow offsets: row i's items are values[offsets[i]:offsets[i+1]], so column j
    of row i reads values[offsets[i+1] − length + j] when that lies inside the row.
    """
    n_rows = history.len()
    if n_rows == 0 or length == 0:
        return np.full((n_rows, length), PADDING_ITEM, dtype=dtype)
    array = history.rechunk().to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    offsets = np.asarray(array.offsets, dtype=np.int64)  # (n + 1,), absolute into array.values
    values = array.values.fill_null(PADDING_ITEM).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    lengths = np.diff(offsets)
    if array.null_count:
        lengths[np.asarray(array.is_null())] = 0
    kept = np.minimum(lengths, length)  # (n,)
    columns = np.arange(length)
    source = offsets[1:, None] - length + columns  # (n, length) positions into values
    inside = columns >= (length - kept)[:, None]
    if values.size == 0:
        return np.full((n_rows, length), PADDING_ITEM, dtype=dtype)
    np.clip(source, 0, values.size - 1, out=source)
    return np.where(inside, values[source], np.asarray(PADDING_ITEM, dtype=dtype))


def _writable(array: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    # polars may hand out read-only views; torch tensors over them would warn (and must not be written).
    return np.require(array, dtype=dtype, requirements=["C_CONTIGUOUS", "WRITEABLE"])


def _float_matrix(frame: pl.DataFrame, columns: tuple[str, ...]) -> torch.Tensor:
    """(n, len(columns)) float32, nulls → NaN; all NaN when the frame lacks any of the columns."""
    if not all(c in frame.columns for c in columns):
        return torch.full((frame.height, len(columns)), float("nan"))
    array = frame.select([pl.col(c).cast(pl.Float32).fill_null(float("nan")) for c in columns]).to_numpy()
    return torch.from_numpy(_writable(array, np.float32))


def frame_to_tensors(frame: pl.DataFrame, history_len: int, *,
                     compact_history: bool = False) -> FeatureTensors:
    """A sample or student-dataset frame → tensors; the last `history_len` history items per row.

    `compact_history` keeps the (n, history_len) history int32 (half the memory of a day's rows);
    `FeatureTensors.slice` widens each batch to int64.
    """
    sparse = frame.select([pl.col(c).cast(pl.Int64) for c in SPARSE_FEATURES]).to_numpy()
    if "teacher_logit" in frame.columns:
        teacher_logit = torch.from_numpy(
            frame["teacher_logit"].cast(pl.Float32).fill_null(float("nan")).to_numpy().astype(np.float32)
        )
    else:
        teacher_logit = torch.full((frame.height,), float("nan"))
    history = history_matrix(frame["history"], history_len, np.int32 if compact_history else np.int64)
    if STUDENT_ROW in frame.columns:
        task_mask = torch.from_numpy(frame[STUDENT_ROW].fill_null(True).to_numpy().astype(bool))
    else:
        task_mask = torch.ones(frame.height, dtype=torch.bool)
    return FeatureTensors(
        sample_id=frame["sample_id"].to_numpy().astype(np.int64),
        sparse=torch.from_numpy(_writable(sparse, np.int64)),
        dense=_float_matrix(frame, DENSE_FEATURES),
        history=torch.from_numpy(np.ascontiguousarray(history)),
        label=torch.from_numpy(frame["label"].cast(pl.Float32).to_numpy().astype(np.float32)),
        sampling=_float_matrix(frame, SAMPLING_COLUMNS),
        teacher_logit=teacher_logit,
        teacher_sampling=_float_matrix(frame, TEACHER_SAMPLING_COLUMNS),
        task_mask=task_mask,
    )
