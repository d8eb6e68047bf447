"""Training loops: the teacher (recording its logits as it trains) and the student.

Days are given as loaders, so only one day's rows are in memory at a time. Within a day rows are
shuffled with a generator seeded from (seed, epoch, day index): a rerun with the same seeds and data
reproduces the same weights on CPU, and one day's shuffle does not depend on other days' sizes.
"""

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch import nn

from models.features import FeatureTensors, frame_to_tensors
from models.layers import TRAFFIC_SOURCE
from models.losses import student_losses, task_loss
from models.student import StudentModel
from recdistill_dagster.config import DistillConfig, OptimConfig, SamplingPolicy, TowerMode
from recdistill_dagster.data.schema import TEACHER_LOGIT_SCHEMA

LOG = logging.getLogger(__name__)
ECHO_WARNING = ("teacher records the last of its {epochs} epochs: every recorded logit comes after the teacher "
                "has already trained on that row's label, so the soft labels echo fitted labels; record_epoch: "
                "first records predictions on rows not yet trained on")

DayInput = tuple[date, Callable[[], pl.DataFrame]]
Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainStats:
    steps: int = 0
    samples: int = 0  # sample-passes (rows × epochs)
    epochs: int = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0
    mean_loss: float = math.nan  # last epoch, the back-propagated total
    task_loss: float | None = None  # last epoch, main tower's task loss
    aux_loss: float | None = None  # last epoch, aux tower's task loss (decoupled_mixed)
    distill_loss: float | None = None  # last epoch, distillation loss before α
    distill_matched_fraction: float | None = None  # last epoch, rows with a teacher logit
    history: list[dict[str, Any]] = field(default_factory=list)  # every log_every steps


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam, or AdamW when weight decay is set (decoupled decay, so it does not fight Adam's scaling).

    foreach=True: one fused update over all tensors, about twice as fast as the per-tensor loop that
    torch picks by default on CPU (the embedding tables make this a visible part of a step).
    """
    if optim.weight_decay > 0:
        return torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay,
                                 foreach=True)
    return torch.optim.Adam(model.parameters(), lr=optim.lr, foreach=True)


def _shuffle_seed(seed: int, epoch: int, day_index: int) -> int:
    # Distinct for every (epoch, day) pair of a run: seed + epoch + day alone would repeat shuffles.
    return (seed * 1_000_003 + epoch * 10_007 + day_index) % (2**63)


def _batches(n_rows: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    yield from torch.randperm(n_rows, generator=generator).split(batch_size)


def _clip(model: nn.Module, grad_clip: float | None) -> None:
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)


class _Tracker:
    """Running means for one epoch, progress callbacks and the sampled step history."""

    def __init__(self, stats: TrainStats, epochs: int, n_days: int, log_every: int,
                 progress: Progress | None) -> None:
        self.stats, self.epochs, self.n_days = stats, epochs, n_days
        self.log_every, self.progress = max(log_every, 1), progress
        self.start = time.monotonic()
        self.day_rows: list[int] = []  # rows of each day seen in the first epoch
        self.sums: dict[str, float] = {}
        self.count = 0

    def new_epoch(self) -> None:
        self.sums, self.count = {}, 0

    def step(self, step: int, epoch: int, batch_rows: int, values: dict[str, float]) -> None:
        self.stats.samples += batch_rows
        self.count += 1
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        if step % self.log_every:
            return
        elapsed = time.monotonic() - self.start
        rate = self.stats.samples / elapsed if elapsed > 0 else 0.0
        # Rows per epoch are known once every day has been loaded; until then extrapolate.
        per_epoch = sum(self.day_rows) / len(self.day_rows) * self.n_days if self.day_rows else 0.0
        remaining = max(per_epoch * self.epochs - self.stats.samples, 0.0)
        record = {"step": step, "epoch": epoch + 1, "samples": self.stats.samples, "samples_per_s": rate,
                  **values}
        self.stats.history.append(record)
        if self.progress is not None:
            self.progress({**record, "eta_seconds": remaining / rate if rate > 0 else None})

    def epoch_means(self) -> dict[str, float]:
        return {key: total / max(self.count, 1) for key, total in self.sums.items()}

    def finish(self, steps: int, epochs: int) -> None:
        self.stats.steps = steps
        self.stats.epochs = epochs
        self.stats.seconds = time.monotonic() - self.start
        if self.stats.seconds > 0:
            self.stats.samples_per_second = self.stats.samples / self.stats.seconds


def _check_teacher_sampling(tensors: FeatureTensors, policy: SamplingPolicy, day: date) -> None:
    """The recorded sampling parameters must be the teacher policy's, or f_T would be applied wrongly."""
    sampling = tensors.sampling.numpy()
    source = tensors.sparse[:, TRAFFIC_SOURCE].numpy()
    expected_p_x = np.asarray(policy.positive_keep_by_source, dtype=np.float32)[source]
    bad = ~np.isclose(sampling[:, 0], policy.r_s, rtol=1e-5)
    bad |= ~np.isclose(sampling[:, 2], expected_p_x, rtol=1e-5)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"teacher samples of {day}: {int(bad.sum())} rows carry sampling parameters that are not "
            f"the teacher policy's (e.g. sample_id {int(tensors.sample_id[row])}: r_s={sampling[row, 0]}, "
            f"p_x={sampling[row, 2]}; policy r_s={policy.r_s}, p_x={expected_p_x[row]})"
        )


def train_teacher(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    days: Sequence[DayInput],
    *,
    epochs: int,
    batch_size: int,
    record_epoch: Literal["first", "last"],
    snapshot_id: str,
    start_step: int,
    seed: int,
    device: torch.device,
    grad_clip: float | None,
    history_len: int,
    log_every: int = 100,
    progress: Progress | None = None,
    teacher_policy: SamplingPolicy | None = None,
    record: bool = True,
) -> tuple[TrainStats, dict[date, pl.DataFrame]]:
    """Train on the days in date order; record every trained sample's raw logit in the forward pass.

    The recorded logit comes from the very forward pass that produces the training loss (detached
    before the optimizer step; no second scoring pass, which would leak labels the model has just
    memorised). Exactly one logit per sample is kept, from the first or the last epoch, with the
    global step that produced it and the row's own (teacher-stream) sampling parameters, which
    `teacher_policy`, when given, must match. Returns one TEACHER_LOGIT_SCHEMA frame per day.
    `record=False` trains the same way without recording (no frames returned): only the performance
    benchmark uses it, to measure what recording costs.
    """
    torch.manual_seed(seed)  # dropout, if any
    stats = TrainStats()
    ordered = sorted(days, key=lambda day_input: day_input[0])
    tracker = _Tracker(stats, epochs, len(ordered), log_every, progress)
    record_at = 0 if record_epoch == "first" else epochs - 1
    if record and record_at > 0:
        LOG.warning(ECHO_WARNING.format(epochs=epochs))
    recorded: dict[date, pl.DataFrame] = {}
    step = start_step
    model.train()
    for epoch in range(epochs):
        tracker.new_epoch()
        for day_index, (day, load) in enumerate(ordered):
            tensors = frame_to_tensors(load(), history_len, compact_history=True)
            if epoch == 0:
                tracker.day_rows.append(len(tensors))
                if teacher_policy is not None:
                    _check_teacher_sampling(tensors, teacher_policy, day)
            recording = record and epoch == record_at
            logits_out = np.full(len(tensors), np.nan, dtype=np.float32)
            steps_out = np.full(len(tensors), -1, dtype=np.int64)
            for idx in _batches(len(tensors), batch_size, _shuffle_seed(seed, epoch, day_index)):
                batch = tensors.slice(idx).to(device)
                logit = model(batch.sparse, batch.dense, batch.history)  # (B,)
                loss = task_loss(logit, batch.label)
                if recording:
                    # `step` updates have been applied to the weights that produced these logits.
                    logits_out[idx.numpy()] = logit.detach().float().cpu().numpy()
                    steps_out[idx.numpy()] = step
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                _clip(model, grad_clip)
                optimizer.step()
                step += 1
                value = float(loss.detach())
                tracker.step(step, epoch, len(idx), {"loss": value, "task_loss": value})
            if recording:
                recorded[day] = _logit_frame(tensors, day, logits_out, steps_out, snapshot_id)
        stats.mean_loss = tracker.epoch_means().get("loss", math.nan)
        stats.task_loss = stats.mean_loss
    tracker.finish(step - start_step, epochs)
    return stats, recorded


def _logit_frame(tensors: FeatureTensors, day: date, logits: np.ndarray, steps: np.ndarray,
                 snapshot_id: str) -> pl.DataFrame:
    sampling = tensors.sampling.numpy()
    frame = pl.DataFrame(
        {
            "sample_id": tensors.sample_id,
            "teacher_logit": logits,
            "recorded_step": steps,
            "teacher_r_s": sampling[:, 0],
            "teacher_r_pos": sampling[:, 1],
            "teacher_p_x": sampling[:, 2],
            "teacher_b_s": sampling[:, 3],
        }
    ).with_columns(day=pl.lit(day, dtype=pl.Date), teacher_snapshot=pl.lit(snapshot_id, dtype=pl.String))
    return frame.select([pl.col(name).cast(dtype) for name, dtype in TEACHER_LOGIT_SCHEMA.items()])


def train_student(
    model: StudentModel,
    optimizer: torch.optim.Optimizer,
    days: Sequence[DayInput],
    *,
    epochs: int,
    batch_size: int,
    distill: DistillConfig | None,
    towers: TowerMode,
    start_step: int,
    seed: int,
    device: torch.device,
    grad_clip: float | None,
    history_len: int,
    log_every: int = 100,
    progress: Progress | None = None,
) -> TrainStats:
    """Train the student on STUDENT_DATASET_SCHEMA days (or plain sample days when `distill` is None).

    With `distill=None` (the baseline) only the main tower's task loss is trained: the served
    architecture is identical, only the supervision differs. Days may hold soft-label rows of the
    teacher's stream (`student_row` False): a batch then holds `batch_size` of the student's own rows
    on average plus the day's share of soft-label rows, so an epoch takes as many steps as the
    baseline's and the task losses see the same rows per step.
    """
    torch.manual_seed(seed)
    stats = TrainStats()
    ordered = sorted(days, key=lambda day_input: day_input[0])
    tracker = _Tracker(stats, epochs, len(ordered), log_every, progress)
    step = start_step
    matched = seen = 0
    model.train()
    for epoch in range(epochs):
        tracker.new_epoch()
        matched = seen = 0
        for day_index, (_day, load) in enumerate(ordered):
            tensors = frame_to_tensors(load(), history_len, compact_history=True)
            if epoch == 0:
                tracker.day_rows.append(len(tensors))
            n_task = int(tensors.task_mask.sum())
            if distill is None and n_task < len(tensors):  # the baseline never sees soft-label rows
                tensors = tensors.slice(torch.nonzero(tensors.task_mask).squeeze(1))
            day_batch = max(1, round(batch_size * len(tensors) / max(n_task, 1)))
            all_task = n_task == len(tensors)
            for idx in _batches(len(tensors), day_batch, _shuffle_seed(seed, epoch, day_index)):
                batch = tensors.slice(idx).to(device)
                output = model(batch.sparse, batch.dense, batch.history)
                losses = student_losses(output, batch.label, batch.teacher_logit, batch.sampling,
                                        batch.teacher_sampling, towers=towers, distill=distill,
                                        task_mask=None if all_task else batch.task_mask)
                optimizer.zero_grad(set_to_none=True)
                losses.total.backward()
                _clip(model, grad_clip)
                optimizer.step()
                step += 1
                matched += losses.n_matched
                seen += len(idx)
                values = {"loss": float(losses.total.detach()), "task_loss": float(losses.task_main.detach())}
                if losses.distill is not None:
                    values["distill_loss"] = float(losses.distill.detach())
                if losses.task_aux is not None:
                    values["aux_task_loss"] = float(losses.task_aux.detach())
                tracker.step(step, epoch, len(idx), values)
        means = tracker.epoch_means()
        stats.mean_loss = means.get("loss", math.nan)
        stats.task_loss = means.get("task_loss")
        stats.distill_loss = means.get("distill_loss")
        stats.aux_loss = means.get("aux_task_loss")
    stats.distill_matched_fraction = matched / seen if (distill is not None and seen) else None
    tracker.finish(step - start_step, epochs)
    return stats
