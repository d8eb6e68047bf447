"""Models and loops: shapes, logit recording, learning, checkpoints, the exported serving tower."""

from datetime import date

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError, checkpoint_bytes, load_checkpoint_bytes, restore
from models.features import frame_to_tensors, history_matrix
from models.metrics import auc
from models.student import StudentModel
from models.teacher import TeacherModel
from models.training import make_optimizer, predict_logits, train_student, train_teacher
from recdistill_dagster.config import (
    DistillConfig,
    OptimConfig,
    SamplingPolicy,
    StudentArch,
    TeacherArch,
    load_config,
)
from tests.models.conftest import make_frame

TEACHER = TeacherArch(embed_dim=8, width=16, n_tokens=4, depth=1, seq_len=16, compressed_tokens=2)
STUDENT = StudentArch(embed_dim=4, backbone_hidden=(16,), tower_hidden=8, seq_len=4)
POLICY = SamplingPolicy(negative_keep=0.5, positive_keep_by_source=(1.0, 1.0, 0.5))
CPU = torch.device("cpu")


def test_history_matrix_right_aligns_and_pads() -> None:
    import polars as pl

    series = pl.Series([[1, 2, 3], [], None, [4, 5, 6, 7, 8]], dtype=pl.List(pl.Int32))
    out = history_matrix(series, 4)
    assert out.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [0, 0, 0, 0], [5, 6, 7, 8]]


def test_forward_shapes(vocab) -> None:
    batch = frame_to_tensors(make_frame(vocab, 10, seed=0), history_len=16)
    teacher = TeacherModel(vocab, TEACHER)
    assert teacher(batch.sparse, batch.dense, batch.history).shape == (10,)
    out = StudentModel(vocab, STUDENT)(batch.sparse, batch.dense, batch.history)
    assert out.main_logit.shape == (10,) and out.aux_logit is not None and out.aux_logit.shape == (10,)
    single = StudentModel(vocab, STUDENT.model_copy(update={"towers": "single_mixed"}))
    assert single(batch.sparse, batch.dense, batch.history).aux_logit is None


def test_default_student_is_much_smaller_than_default_teacher() -> None:
    from recdistill_dagster.data.source import make_source

    config = load_config("tiny")
    vocab = make_source(config).vocab()
    defaults = load_config("demo")
    teacher = TeacherModel(vocab, defaults.teacher.arch).num_parameters()
    student = StudentModel(vocab, defaults.student.arch).num_parameters()
    assert student * 5 <= teacher


def _teacher_run(vocab, record_epoch: str, epochs: int):
    days = [(date(2026, 1, 1), lambda: make_frame(vocab, 300, seed=1)),
            (date(2026, 1, 2), lambda: make_frame(vocab, 200, seed=2, day=date(2026, 1, 2)))]
    torch.manual_seed(0)
    model = TeacherModel(vocab, TEACHER)
    optimizer = make_optimizer(model, OptimConfig(lr=5e-3))
    return train_teacher(model, optimizer, days, epochs=epochs, batch_size=64, record_epoch=record_epoch,
                         snapshot_id="teacher@test", start_step=10, seed=3, device=CPU,
                         grad_clip=5.0, history_len=16, log_every=2)


@pytest.mark.parametrize("record_epoch", ["first", "last"])
def test_recording_gives_one_logit_per_trained_sample(vocab, record_epoch: str) -> None:
    stats, logits = _teacher_run(vocab, record_epoch, epochs=2)
    steps_per_epoch = 5 + 4  # ceil(300/64) + ceil(200/64)
    assert stats.steps == 2 * steps_per_epoch and stats.samples == 2 * 500
    for day, seed, n in ((date(2026, 1, 1), 1, 300), (date(2026, 1, 2), 2, 200)):
        frame = logits[day]
        assert frame.height == n and frame["sample_id"].is_unique().all()
        assert set(frame["sample_id"].to_list()) == set(make_frame(vocab, n, seed=seed)["sample_id"].to_list())
        assert frame["teacher_snapshot"].unique().to_list() == ["teacher@test"]
        steps = frame["recorded_step"]
        if record_epoch == "first":
            assert steps.min() >= 10 and steps.max() < 10 + steps_per_epoch
        else:
            assert steps.min() >= 10 + steps_per_epoch and steps.max() < 10 + 2 * steps_per_epoch
        assert frame["teacher_r_s"].to_list() == [2.0] * n


def test_recorded_logit_is_the_training_forward_pass(vocab) -> None:
    # One batch covering the day: the recorded logits are the model's outputs *before* the update.
    frame = make_frame(vocab, 50, seed=5)
    torch.manual_seed(0)
    model = TeacherModel(vocab, TEACHER)
    before = predict_logits(model, frame, history_len=16, batch_size=64, device=CPU)["logit"]
    optimizer = make_optimizer(model, OptimConfig(lr=1e-2))
    _, logits = train_teacher(model, optimizer, [(date(2026, 1, 1), lambda: frame)], epochs=1, batch_size=64,
                              record_epoch="last", snapshot_id="s", start_step=0, seed=0,
                              device=CPU, grad_clip=None, history_len=16)
    recorded = logits[date(2026, 1, 1)].sort("sample_id")["teacher_logit"].to_numpy()
    after = predict_logits(model, frame, history_len=16, batch_size=64, device=CPU)["logit"]
    assert np.allclose(recorded, before, atol=1e-5)
    assert not np.allclose(recorded, after, atol=1e-5)


def test_student_learns_a_history_signal(vocab) -> None:
    days = [(date(2026, 1, 1), lambda: make_frame(vocab, 3000, seed=7))]
    torch.manual_seed(0)
    model = StudentModel(vocab, STUDENT)
    optimizer = make_optimizer(model, OptimConfig(lr=1e-2))
    stats = train_student(model, optimizer, days, epochs=8, batch_size=128, distill=None, towers="decoupled_mixed",
                          start_step=0, seed=0, device=CPU, grad_clip=5.0, history_len=4)
    assert stats.distill_matched_fraction is None
    held_out = make_frame(vocab, 2000, seed=8)
    scores = predict_logits(model, held_out, history_len=4, batch_size=512, device=CPU)["main"]
    assert auc(scores, held_out["label"].to_numpy()) > 0.6  # Bayes limit ≈ 0.80, untrained ≈ 0.5


def test_distilled_student_reports_loss_magnitudes(vocab) -> None:
    frame = make_frame(vocab, 400, seed=9).with_columns()
    import polars as pl

    with_teacher = frame.with_columns(
        teacher_logit=pl.Series(np.where(np.arange(400) % 4 == 0, np.nan, 0.5), dtype=pl.Float32)
        .fill_nan(None),
        teacher_snapshot=pl.lit("teacher@x"),
        teacher_r_s=pl.lit(2.0, dtype=pl.Float32), teacher_r_pos=pl.lit(1.0, dtype=pl.Float32),
        teacher_p_x=pl.lit(1.0, dtype=pl.Float32), teacher_b_s=pl.lit(0.0, dtype=pl.Float32),
    )
    model = StudentModel(vocab, STUDENT)
    stats = train_student(model, make_optimizer(model, OptimConfig()), [(date(2026, 1, 1), lambda: with_teacher)],
                          epochs=1, batch_size=100, distill=DistillConfig(), towers="decoupled_mixed", start_step=0,
                          seed=0, device=CPU, grad_clip=None, history_len=4)
    assert stats.distill_matched_fraction == pytest.approx(0.75)
    assert stats.distill_loss is not None and stats.task_loss is not None and stats.aux_loss is not None


def test_checkpoint_roundtrip_and_corruption(vocab) -> None:
    model = StudentModel(vocab, STUDENT)
    optimizer = make_optimizer(model, OptimConfig())
    data = checkpoint_bytes(model, optimizer, {"snapshot_id": "student@x", "days": ["2026-01-01"], "parent": None})
    payload = load_checkpoint_bytes(data)
    assert payload["meta"]["snapshot_id"] == "student@x"
    clone = StudentModel(vocab, STUDENT)
    restore(clone, make_optimizer(clone, OptimConfig()), payload)
    for a, b in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not fit"):
        restore(StudentModel(vocab, STUDENT.model_copy(update={"embed_dim": 6})), None, payload)


def test_serving_tower_exports_and_matches_eager(vocab) -> None:
    batch = frame_to_tensors(make_frame(vocab, 4, seed=11), history_len=4)
    module = StudentModel(vocab, STUDENT).serving_module(POLICY).eval()
    eager = module(batch.sparse, batch.dense, batch.history)
    exported = torch.export.export(module, (batch.sparse, batch.dense, batch.history))
    assert torch.allclose(exported.module()(batch.sparse, batch.dense, batch.history), eager)
    assert ((eager > 0) & (eager < 1)).all()
