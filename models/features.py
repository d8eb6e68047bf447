"""Polars frames (SAMPLE_SCHEMA / STUDENT_DATASET_SCHEMA) → model tensors."""

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from recdistill_dagster.data.schema import (
    DENSE_FEATURES,
    PADDING_ITEM,
    SAMPLING_COLUMNS,
    SPARSE_FEATURES,
    TEACHER_SAMPLING_COLUMNS,
)


@dataclass
class FeatureTensors:
    sample_id: np.ndarray  # (B,) int64
    sparse: torch.Tensor  # (B, n_sparse) int64, SPARSE_FEATURES order
    dense: torch.Tensor  # (B, n_dense) float32
    history: torch.Tensor  # (B, L) int64, newest last, left-padded with PADDING_ITEM
    label: torch.Tensor  # (B,) float32
    sampling: torch.Tensor  # (B, 4) float32, SAMPLING_COLUMNS order
    teacher_logit: torch.Tensor  # (B,) float32, NaN where the teacher has no logit
    teacher_sampling: torch.Tensor  # (B, 4) float32, NaN where absent

    def __len__(self) -> int:
        return int(self.sparse.shape[0])

    def index(self, idx: torch.Tensor) -> "FeatureTensors":
        idx_np = idx.cpu().numpy()
        return FeatureTensors(
            sample_id=self.sample_id[idx_np],
            sparse=self.sparse[idx],
            dense=self.dense[idx],
            history=self.history[idx],
            label=self.label[idx],
            sampling=self.sampling[idx],
            teacher_logit=self.teacher_logit[idx],
            teacher_sampling=self.teacher_sampling[idx],
        )

    def to(self, device: torch.device) -> "FeatureTensors":
        return FeatureTensors(
            sample_id=self.sample_id,
            sparse=self.sparse.to(device),
            dense=self.dense.to(device),
            history=self.history.to(device),
            label=self.label.to(device),
            sampling=self.sampling.to(device),
            teacher_logit=self.teacher_logit.to(device),
            teacher_sampling=self.teacher_sampling.to(device),
        )


def history_matrix(history: pl.Series, length: int) -> np.ndarray:
    """List column → (n, length) int64, the last `length` items right-aligned, left-padded.

    Vectorized over the arrow offsets: no per-row Python loop.
    """
    n_rows = history.len()
    out = np.full((n_rows, length), PADDING_ITEM, dtype=np.int64)
    if n_rows == 0:
        return out
    tails = history.list.tail(length)
    lengths = tails.list.len().fill_null(0).to_numpy().astype(np.int64)
    values = tails.explode().drop_nulls().to_numpy().astype(np.int64)
    if values.size == 0:
        return out
    rows = np.repeat(np.arange(n_rows), lengths)
    # Position of each value within its row, then shifted so the row ends at the last column.
    starts = np.cumsum(lengths) - lengths
    within = np.arange(values.size) - np.repeat(starts, lengths)
    cols = within + np.repeat(length - lengths, lengths)
    out[rows, cols] = values
    return out


def _float_matrix(frame: pl.DataFrame, columns: tuple[str, ...]) -> torch.Tensor:
    if all(c in frame.columns for c in columns):
        array = frame.select([pl.col(c).cast(pl.Float32).fill_null(float("nan")) for c in columns]).to_numpy()
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return torch.full((frame.height, len(columns)), float("nan"))


def frame_to_tensors(frame: pl.DataFrame, history_len: int) -> FeatureTensors:
    sparse = frame.select([pl.col(c).cast(pl.Int64) for c in SPARSE_FEATURES]).to_numpy()
    if "teacher_logit" in frame.columns:
        teacher_logit = torch.from_numpy(
            frame["teacher_logit"].cast(pl.Float32).fill_null(float("nan")).to_numpy().astype(np.float32)
        )
    else:
        teacher_logit = torch.full((frame.height,), float("nan"))
    return FeatureTensors(
        sample_id=frame["sample_id"].to_numpy().astype(np.int64),
        sparse=torch.from_numpy(np.ascontiguousarray(sparse, dtype=np.int64)),
        dense=_float_matrix(frame, DENSE_FEATURES),
        history=torch.from_numpy(history_matrix(frame["history"], history_len)),
        label=torch.from_numpy(frame["label"].cast(pl.Float32).to_numpy().astype(np.float32)),
        sampling=_float_matrix(frame, SAMPLING_COLUMNS),
        teacher_logit=teacher_logit,
        teacher_sampling=_float_matrix(frame, TEACHER_SAMPLING_COLUMNS),
    )
