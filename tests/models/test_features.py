"""Frames → tensors: the right-aligned history, NaN teacher columns, batches."""

import numpy as np
import polars as pl
import torch

from models.features import frame_to_tensors, history_matrix
from recdistill_dagster.data.schema import DENSE_FEATURES, SAMPLE_SCHEMA, SPARSE_FEATURES
from tests.models.conftest import make_frame, with_teacher_columns


def test_history_matrix_right_aligns_and_pads() -> None:
    series = pl.Series([[1, 2, 3], [], None, [4, 5, 6, 7, 8], [9, None, 10]], dtype=pl.List(pl.Int32))
    out = history_matrix(series, 4)
    assert out.dtype == np.int64
    assert out.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [0, 0, 0, 0], [5, 6, 7, 8], [0, 9, 0, 10]]
    assert history_matrix(series, 4, np.int32).dtype == np.int32
    # A sliced series (offsets not starting at zero) and a multi-chunk series.
    assert history_matrix(series.slice(3, 2), 2).tolist() == [[7, 8], [0, 10]]
    chunked = pl.concat([series.slice(0, 1), series.slice(3, 1)], rechunk=False)
    assert history_matrix(chunked, 3).tolist() == [[1, 2, 3], [6, 7, 8]]
    assert history_matrix(series.clear(), 4).shape == (0, 4)


def test_history_matrix_matches_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 100, rng.integers(0, 40)).tolist() for _ in range(300)]
    out = history_matrix(pl.Series(rows, dtype=pl.List(pl.Int32)), 16)
    for row, got in zip(rows, out, strict=True):
        tail = row[-16:]
        assert got.tolist() == [0] * (16 - len(tail)) + tail


def test_sample_frames_have_no_teacher_signal(vocab) -> None:
    frame = make_frame(vocab, 20, seed=0)
    assert frame.schema == pl.Schema(SAMPLE_SCHEMA)
    tensors = frame_to_tensors(frame, history_len=6)
    assert len(tensors) == 20
    assert tensors.sparse.shape == (20, len(SPARSE_FEATURES)) and tensors.sparse.dtype == torch.int64
    assert tensors.dense.shape == (20, len(DENSE_FEATURES)) and tensors.dense.dtype == torch.float32
    assert tensors.history.shape == (20, 6) and tensors.history.dtype == torch.int64
    assert tensors.sampling.shape == (20, 4) and not torch.isnan(tensors.sampling).any()
    assert torch.isnan(tensors.teacher_logit).all() and torch.isnan(tensors.teacher_sampling).all()
    assert tensors.sparse[:, SPARSE_FEATURES.index("item_id")].tolist() == frame["item_id"].to_list()
    assert np.array_equal(tensors.sample_id, frame["sample_id"].to_numpy())


def test_student_dataset_frames_carry_teacher_logits_and_nulls_become_nan(vocab) -> None:
    frame = make_frame(vocab, 8, seed=1)
    logits = np.array([0.5, np.nan, -1.0, 2.0, np.nan, 0.0, 1.0, 3.0])
    tensors = frame_to_tensors(with_teacher_columns(frame, logits, r_s=2.0, p_x=0.5), history_len=4)
    assert np.allclose(tensors.teacher_logit.numpy(), logits, equal_nan=True)
    assert torch.isnan(tensors.teacher_sampling[[1, 4]]).all()
    assert tensors.teacher_sampling[0].tolist() == [2.0, 1.0, 0.5, 0.0]


def test_batches_widen_compact_history(vocab) -> None:
    tensors = frame_to_tensors(make_frame(vocab, 30, seed=2), history_len=5, compact_history=True)
    assert tensors.history.dtype == torch.int32
    idx = torch.tensor([4, 0, 29])
    batch = tensors.slice(idx)
    assert batch.history.dtype == torch.int64 and len(batch) == 3
    assert batch.sample_id.tolist() == tensors.sample_id[[4, 0, 29]].tolist()
    assert torch.equal(batch.history, tensors.history[idx].long())
    assert tensors.index(idx).sample_id.tolist() == batch.sample_id.tolist()
    assert batch.to(torch.device("cpu")).sparse.device.type == "cpu"
