"""Training loops: the teacher (recording its logits as it trains) and the student.

Days are given as loaders so only one day's rows are in memory at a time; within a day rows are
shuffled with a seeded generator, so a rerun with the same seeds reproduces the same weights.
"""

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
from models.losses import student_losses, task_loss
from models.student import StudentModel, StudentOutput
from recdistill_dagster.config import DistillConfig, OptimConfig, TowerMode
from recdistill_dagster.data.schema import TEACHER_LOGIT_SCHEMA

DayInput = tuple[date, Callable[[], pl.DataFrame]]
Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainStats:
    steps: int = 0
    samples: int = 0
    epochs: int = 0
    seconds: float = 0.0
    mean_loss: float = math.nan  # last epoch
    task_loss: float | None = None  # last epoch, main tower
    aux_loss: float | None = None
    distill_loss: float | None = None
    distill_matched_fraction: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    if optim.weight_decay > 0:
        return torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=optim.lr)


def _batches(n_rows: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    yield from torch.randperm(n_rows, generator=generator).split(batch_size)


class _Tracker:
    """Running means for one epoch, progress callbacks and the sampled step history."""

    def __init__(self, stats: TrainStats, epochs: int, n_days: int, log_every: int, progress: Progress | None):
        self.stats, self.epochs, self.n_days = stats, epochs, n_days
        self.log_every, self.progress = log_every, progress
        self.start = time.monotonic()
        self.day_rows: list[int] = []
        self.sums: dict[str, float] = {}
        self.count = 0

    def new_epoch(self) -> None:
        self.sums, self.count = {}, 0

    def step(self, step: int, epoch: int, batch_rows: int, values: dict[str, float]) -> None:
        self.stats.samples += batch_rows
        self.count += 1
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        if step % self.log_every == 0:
            elapsed = time.monotonic() - self.start
            rate = self.stats.samples / elapsed if elapsed > 0 else 0.0
            # Rows per epoch are known once every day has been loaded; until then extrapolate.
            per_epoch = (sum(self.day_rows) / len(self.day_rows)) * self.n_days if self.day_rows else 0
            remaining = max(per_epoch * self.epochs - self.stats.samples, 0)
            record = {"step": step, "epoch": epoch + 1, "samples": self.stats.samples,
                      "samples_per_s": rate, "eta_seconds": remaining / rate if rate > 0 else None, **values}
            self.stats.history.append({k: v for k, v in record.items() if k not in ("eta_seconds",)})
            if self.progress is not None:
                self.progress(record)

    def epoch_means(self) -> dict[str, float]:
        return {key: total / max(self.count, 1) for key, total in self.sums.items()}


def _clip(model: nn.Module, grad_clip: float | None) -> None:
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)


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
) -> tuple[TrainStats, dict[date, pl.DataFrame]]:
    """Train on the days in order; record every trained sample's raw logit in the forward pass.

    The logit is taken from the same forward pass that produces the training loss, before the
    optimizer step: the model has not yet been updated on that sample in this pass. Exactly one
    logit per sample is kept, from the first or last epoch, with the row's own (teacher-stream)
    sampling parameters.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    stats = TrainStats()
    tracker = _Tracker(stats, epochs, len(days), log_every, progress)
    record_at = 0 if record_epoch == "first" else epochs - 1
    recorded: dict[date, pl.DataFrame] = {}
    step = start_step
    model.train()
    for epoch in range(epochs):
        tracker.new_epoch()
        for day, load in days:
            tensors = frame_to_tensors(load(), history_len)
            if epoch == 0:
                tracker.day_rows.append(len(tensors))
            logits_out = np.empty(len(tensors), dtype=np.float32)
            steps_out = np.empty(len(tensors), dtype=np.int64)
            for idx in _batches(len(tensors), batch_size, generator):
                batch = tensors.index(idx).to(device)
                logit = model(batch.sparse, batch.dense, batch.history)
                loss = task_loss(logit, batch.label)
                if epoch == record_at:
                    positions = idx.numpy()
                    logits_out[positions] = logit.detach().float().cpu().numpy()
                    steps_out[positions] = step
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                _clip(model, grad_clip)
                optimizer.step()
                step += 1
                tracker.step(step, epoch, len(idx), {"loss": float(loss.detach())})
            if epoch == record_at:
                recorded[day] = _logit_frame(tensors, day, logits_out, steps_out, snapshot_id)
        means = tracker.epoch_means()
        stats.mean_loss = means.get("loss", math.nan)
        stats.task_loss = stats.mean_loss
    stats.steps = step - start_step
    stats.epochs = epochs
    stats.seconds = time.monotonic() - tracker.start
    return stats, recorded


def _logit_frame(tensors: FeatureTensors, day: date, logits: np.ndarray, steps: np.ndarray,
                 snapshot_id: str) -> pl.DataFrame:
    sampling = tensors.sampling.numpy()
    columns = {
        "sample_id": tensors.sample_id,
        "day": [day] * len(tensors),
        "teacher_logit": logits,
        "teacher_snapshot": [snapshot_id] * len(tensors),
        "recorded_step": steps,
        "teacher_r_s": sampling[:, 0],
        "teacher_r_pos": sampling[:, 1],
        "teacher_p_x": sampling[:, 2],
        "teacher_b_s": sampling[:, 3],
    }
    return pl.DataFrame(columns, schema=TEACHER_LOGIT_SCHEMA)


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
    """Train the student; with `distill=None` (the baseline) only the main tower's task loss."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    stats = TrainStats()
    tracker = _Tracker(stats, epochs, len(days), log_every, progress)
    step = start_step
    matched = total = 0
    model.train()
    for epoch in range(epochs):
        tracker.new_epoch()
        for _day, load in days:
            tensors = frame_to_tensors(load(), history_len)
            if epoch == 0:
                tracker.day_rows.append(len(tensors))
            for idx in _batches(len(tensors), batch_size, generator):
                batch = tensors.index(idx).to(device)
                output = model(batch.sparse, batch.dense, batch.history)
                losses = student_losses(output, batch.label, batch.teacher_logit, batch.sampling,
                                        batch.teacher_sampling, towers=towers, distill=distill)
                optimizer.zero_grad(set_to_none=True)
                losses.total.backward()
                _clip(model, grad_clip)
                optimizer.step()
                step += 1
                if epoch == epochs - 1:
                    matched += losses.n_matched
                    total += len(idx)
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
    stats.steps = step - start_step
    stats.epochs = epochs
    stats.seconds = time.monotonic() - tracker.start
    stats.distill_matched_fraction = matched / total if (distill is not None and total) else None
    return stats


@torch.no_grad()
def predict_logits(model: nn.Module, frame: pl.DataFrame, *, history_len: int, batch_size: int,
                   device: torch.device) -> dict[str, np.ndarray]:
    """Raw logits in eval mode: {"logit"} for a teacher, {"main", "aux"?} for a student."""
    model.eval()
    tensors = frame_to_tensors(frame, history_len)
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(tensors), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(tensors)))
        batch = tensors.index(idx).to(device)
        out = model(batch.sparse, batch.dense, batch.history)
        if isinstance(out, StudentOutput):
            outputs.setdefault("main", []).append(out.main_logit.float().cpu().numpy())
            if out.aux_logit is not None:
                outputs.setdefault("aux", []).append(out.aux_logit.float().cpu().numpy())
        else:
            outputs.setdefault("logit", []).append(out.float().cpu().numpy())
    model.train()
    return {name: np.concatenate(parts) for name, parts in outputs.items()}
