"""Training loops: logit recording in the training forward pass, determinism, learning, stats."""

from datetime import date

import numpy as np
import polars as pl
import pytest
import torch

from models.inference import predict_logits
from models.metrics import auc
from models.student import StudentModel
from models.teacher import TeacherModel
from models.training import TrainStats, make_optimizer, train_student, train_teacher
from recdistill_dagster.config import DistillConfig, OptimConfig, SamplingPolicy, StudentArch, TeacherArch
from recdistill_dagster.data.schema import TEACHER_LOGIT_SCHEMA
from tests.models.conftest import make_frame, with_teacher_columns

TEACHER = TeacherArch(embed_dim=8, width=16, n_tokens=4, depth=1, seq_len=16, compressed_tokens=2)
STUDENT = StudentArch(embed_dim=4, backbone_hidden=(16,), tower_hidden=8, seq_len=4)
CPU = torch.device("cpu")
DAY1, DAY2 = date(2026, 1, 1), date(2026, 1, 2)


def _teacher_run(vocab, record_epoch: str, epochs: int, progress=None, model_seed: int = 0):
    # Days deliberately given out of order: training goes in date order.
    days = [(DAY2, lambda: make_frame(vocab, 200, seed=2, day=DAY2)),
            (DAY1, lambda: make_frame(vocab, 300, seed=1))]
    torch.manual_seed(model_seed)
    model = TeacherModel(vocab, TEACHER)
    optimizer = make_optimizer(model, OptimConfig(lr=5e-3))
    stats, logits = train_teacher(
        model, optimizer, days, epochs=epochs, batch_size=64, record_epoch=record_epoch,
        snapshot_id="teacher@test",
        start_step=10, seed=3, device=CPU, grad_clip=5.0, history_len=16, log_every=2, progress=progress,
    )
    return model, stats, logits


@pytest.mark.parametrize("record_epoch", ["first", "last"])
def test_recording_gives_one_logit_per_trained_sample(vocab, record_epoch: str) -> None:
    _, stats, logits = _teacher_run(vocab, record_epoch, epochs=2)
    steps_day1, steps_day2 = 5, 4  # ceil(300/64), ceil(200/64)
    per_epoch = steps_day1 + steps_day2
    assert stats.steps == 2 * per_epoch and stats.samples == 2 * 500 and stats.epochs == 2
    assert set(logits) == {DAY1, DAY2}
    first_step = 10 + (0 if record_epoch == "first" else per_epoch)
    day_step_ranges = {DAY1: (first_step, first_step + steps_day1),
                       DAY2: (first_step + steps_day1, first_step + per_epoch)}
    for day, seed, n in ((DAY1, 1, 300), (DAY2, 2, 200)):
        frame = logits[day]
        assert frame.schema == pl.Schema(TEACHER_LOGIT_SCHEMA)
        assert frame.height == n and frame["sample_id"].is_unique().all()
        trained = make_frame(vocab, n, seed=seed)
        assert set(frame["sample_id"].to_list()) == set(trained["sample_id"].to_list())
        assert frame["day"].unique().to_list() == [day]
        assert frame["teacher_snapshot"].unique().to_list() == ["teacher@test"]
        assert frame["teacher_logit"].is_finite().all()
        low, high = day_step_ranges[day]
        steps = frame["recorded_step"]
        assert steps.min() == low and steps.max() == high - 1  # every step of that day's pass
        assert frame["recorded_step"].value_counts()["count"].max() <= 64  # one batch per step
        assert frame["teacher_r_s"].to_list() == [2.0] * n
        by_id = frame.sort("sample_id")
        assert by_id["teacher_p_x"].to_list() == trained.sort("sample_id")["p_x"].to_list()


def test_recorded_logit_comes_from_the_training_forward_pass(vocab) -> None:
    # One batch covering the day: the recorded logits are the model's outputs *before* its update,
    # not a re-scoring after training.
    frame = make_frame(vocab, 50, seed=5)
    torch.manual_seed(0)
    model = TeacherModel(vocab, TEACHER)
    before = predict_logits(model, frame, history_len=16, batch_size=64, device=CPU)["logit"]
    optimizer = make_optimizer(model, OptimConfig(lr=1e-2))
    _, logits = train_teacher(model, optimizer, [(DAY1, lambda: frame)], epochs=1, batch_size=64,
                              record_epoch="last", snapshot_id="s", start_step=0, seed=0, device=CPU,
                              grad_clip=None, history_len=16)
    recorded = logits[DAY1].sort("sample_id")["teacher_logit"].to_numpy()
    after = predict_logits(model, frame, history_len=16, batch_size=64, device=CPU)["logit"]
    assert np.allclose(recorded, before, atol=1e-5)
    assert not np.allclose(recorded, after, atol=1e-5)
    assert logits[DAY1]["recorded_step"].unique().to_list() == [0]


def test_teacher_training_is_deterministic_and_reports_progress(vocab) -> None:
    events: list[dict] = []
    model_a, stats_a, logits_a = _teacher_run(vocab, "last", epochs=1, progress=events.append)
    model_b, _, logits_b = _teacher_run(vocab, "last", epochs=1)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert logits_a[DAY1].equals(logits_b[DAY1])
    assert [e["step"] for e in events] == [12, 14, 16, 18]  # start_step 10, every 2 steps, 9 steps
    assert {"step", "epoch", "samples", "samples_per_s", "loss", "eta_seconds"} <= set(events[0])
    assert [h["step"] for h in stats_a.history] == [12, 14, 16, 18]
    assert stats_a.samples_per_second > 0 and stats_a.seconds > 0 and np.isfinite(stats_a.mean_loss)


def test_teacher_policy_must_match_the_rows(vocab) -> None:
    model = TeacherModel(vocab, TEACHER)
    wrong = SamplingPolicy(negative_keep=0.1, positive_keep_by_source=(1.0, 1.0, 0.5))  # r_s 10, rows say 2
    days = [(DAY1, lambda: make_frame(vocab, 20, seed=1))]
    common = {"epochs": 1, "batch_size": 8, "record_epoch": "last", "snapshot_id": "s", "start_step": 0,
              "seed": 0, "device": CPU, "grad_clip": None, "history_len": 16}
    with pytest.raises(ValueError, match="not the teacher policy's"):
        train_teacher(model, make_optimizer(model, OptimConfig()), days, **common, teacher_policy=wrong)
    right = SamplingPolicy(negative_keep=0.5, positive_keep_by_source=(1.0, 1.0, 0.5))
    train_teacher(model, make_optimizer(model, OptimConfig()), days, **common, teacher_policy=right)


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_models_learn_a_history_signal(vocab, kind: str) -> None:
    # Label depends on whether the candidate appears in the history: Bayes AUC ≈ 0.80.
    days = [(DAY1, lambda: make_frame(vocab, 3000, seed=7))]
    torch.manual_seed(0)
    held_out = make_frame(vocab, 2000, seed=8)
    labels = held_out["label"].to_numpy()
    if kind == "teacher":
        model = TeacherModel(vocab, TEACHER)
        train_teacher(model, make_optimizer(model, OptimConfig(lr=5e-3)), days, epochs=4, batch_size=128,
                      record_epoch="last", snapshot_id="s", start_step=0, seed=0, device=CPU, grad_clip=5.0,
                      history_len=16)
        scores = predict_logits(model, held_out, history_len=16, batch_size=512, device=CPU)["logit"]
    else:
        model = StudentModel(vocab, STUDENT)
        stats = train_student(model, make_optimizer(model, OptimConfig(lr=1e-2)), days, epochs=8,
                              batch_size=128, distill=None, towers="decoupled_mixed", start_step=0, seed=0,
                              device=CPU, grad_clip=5.0, history_len=4)
        assert stats.distill_matched_fraction is None and stats.distill_loss is None
        scores = predict_logits(model, held_out, history_len=4, batch_size=512, device=CPU)["main"]
    assert auc(scores, labels) > 0.65  # untrained ≈ 0.5


def test_distilled_student_reports_loss_magnitudes(vocab) -> None:
    frame = make_frame(vocab, 400, seed=9)
    logits = np.where(np.arange(400) % 4 == 0, np.nan, 0.5)
    joined = with_teacher_columns(frame, logits)
    model = StudentModel(vocab, STUDENT)
    stats = train_student(model, make_optimizer(model, OptimConfig()), [(DAY1, lambda: joined)], epochs=2,
                          batch_size=100, distill=DistillConfig(teacher_target="exact"),
                          towers="decoupled_mixed", start_step=5, seed=0, device=CPU, grad_clip=None,
                          history_len=4, log_every=1)
    assert isinstance(stats, TrainStats) and stats.steps == 8
    assert stats.distill_matched_fraction == pytest.approx(0.75)
    assert stats.distill_loss is not None and stats.task_loss is not None and stats.aux_loss is not None
    assert np.isfinite([stats.mean_loss, stats.distill_loss, stats.task_loss, stats.aux_loss]).all()
    assert [h["step"] for h in stats.history] == list(range(6, 14))
    assert {"loss", "task_loss", "distill_loss", "aux_task_loss"} <= set(stats.history[0])


def test_predict_logits_keeps_row_order_and_mode(vocab) -> None:
    frame = make_frame(vocab, 70, seed=10)
    model = StudentModel(vocab, STUDENT)
    model.train()
    out = predict_logits(model, frame, history_len=4, batch_size=32, device=CPU)
    assert model.training  # restored
    assert set(out) == {"main", "aux"} and out["main"].shape == (70,)
    single = predict_logits(model, frame[5:6], history_len=4, batch_size=32, device=CPU)
    assert np.allclose(single["main"], out["main"][5:6], atol=1e-6)
    empty = predict_logits(model, frame.clear(), history_len=4, batch_size=32, device=CPU)
    assert empty["main"].shape == (0,)


def test_make_optimizer_picks_adamw_for_weight_decay(vocab) -> None:
    model = StudentModel(vocab, STUDENT)
    assert type(make_optimizer(model, OptimConfig())) is torch.optim.Adam
    assert type(make_optimizer(model, OptimConfig(weight_decay=0.01))) is torch.optim.AdamW


def test_soft_label_rows_keep_the_step_count_and_stay_out_of_the_baseline(vocab) -> None:
    own = with_teacher_columns(make_frame(vocab, 300, seed=11), np.full(300, 0.5))
    extra = with_teacher_columns(make_frame(vocab, 900, seed=12), np.full(900, -1.0)).with_columns(
        student_row=pl.lit(False), sample_id=pl.col("sample_id") + 10_000)
    day = pl.concat([own, extra])

    def run(frame: pl.DataFrame, distill: DistillConfig | None) -> TrainStats:
        model = StudentModel(vocab, STUDENT)
        return train_student(model, make_optimizer(model, OptimConfig()), [(DAY1, lambda: frame)], epochs=1,
                             batch_size=100, distill=distill, towers="decoupled_mixed", start_step=0, seed=0,
                             device=CPU, grad_clip=None, history_len=4)

    alone, with_soft = run(own, DistillConfig()), run(day, DistillConfig())
    assert alone.steps == with_soft.steps == 3  # batches of ~100 own rows + their share of soft rows
    assert with_soft.samples == 1200 and with_soft.distill_matched_fraction == 1.0
    baseline = run(day, None)
    assert baseline.steps == 3 and baseline.samples == 300  # the baseline never reads soft-label rows


def test_a_teacher_recording_its_last_epoch_warns(vocab, caplog) -> None:
    frame = make_frame(vocab, 200, seed=13)
    for record_epoch, warned in (("first", False), ("last", True)):
        model = TeacherModel(vocab, TEACHER)
        caplog.clear()
        with caplog.at_level("WARNING", logger="models.training"):
            train_teacher(model, make_optimizer(model, OptimConfig()), [(DAY1, lambda: frame)], epochs=2,
                          batch_size=100, record_epoch=record_epoch, start_step=0, seed=0, device=CPU,
                          grad_clip=None, history_len=16, snapshot_id="t@x")
        assert ("echo fitted labels" in caplog.text) is warned
