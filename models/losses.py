"""Task and distillation losses, and how the tower variants combine them."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.debias import distill_logits
from models.student import StudentOutput
from recdistill_dagster.config import DistillConfig, TeacherTarget, TowerMode


def task_loss(logit: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logit, label)


def soft_bce_with_logits(student_logit: torch.Tensor, teacher_logit: torch.Tensor) -> torch.Tensor:
    """Per-row −[p_T log p_S + (1−p_T) log(1−p_S)], stable in logit space; p_T is a fixed target.

    Equals KL(p_T ‖ p_S) + H(p_T): the same gradient in the student as the KL divergence.
    """
    p_teacher = torch.sigmoid(teacher_logit).detach()
    return p_teacher * F.softplus(-student_logit) + (1 - p_teacher) * F.softplus(student_logit)


@dataclass
class DistillLossOut:
    loss: torch.Tensor  # scalar
    n_matched: int


def distill_loss(student_logit: torch.Tensor, teacher_logit: torch.Tensor, student_sampling: torch.Tensor,
                 teacher_sampling: torch.Tensor, *, mode: TeacherTarget, temperature: float = 1.0) -> DistillLossOut:
    """Mean distillation CE over rows that have a teacher logit (NaN = none); τ² scaling for τ ≠ 1."""
    matched = ~torch.isnan(teacher_logit)
    n_matched = int(matched.sum())
    if n_matched == 0:
        return DistillLossOut(student_logit.sum() * 0.0, 0)  # keeps the graph, contributes nothing
    s, t = distill_logits(
        mode, student_logit[matched], teacher_logit[matched], student_sampling[matched],
        teacher_sampling[matched] if mode in ("teacher_own", "exact") else student_sampling[matched], temperature,
    )
    loss = soft_bce_with_logits(s, t).mean()
    if temperature != 1.0:
        loss = loss * temperature**2
    return DistillLossOut(loss, n_matched)


@dataclass
class StudentLosses:
    total: torch.Tensor
    task_main: torch.Tensor
    task_aux: torch.Tensor | None
    distill: torch.Tensor | None
    n_matched: int


def student_losses(output: StudentOutput, label: torch.Tensor, teacher_logit: torch.Tensor,
                   student_sampling: torch.Tensor, teacher_sampling: torch.Tensor, *, towers: TowerMode,
                   distill: DistillConfig | None) -> StudentLosses:
    """Combine losses for a tower variant (DESIGN.md §1, paper Table 5).

    decoupled_mixed: main = task, aux = task + α·distill (default)
    decoupled_distill: main = task, aux = α·distill
    single_mixed: main = task + α·distill
    single_distill: main = distill only
    distill=None (the baseline): main = task only; the aux tower, if any, gets no loss.
    """
    main = task_loss(output.main_logit, label)
    if distill is None:
        return StudentLosses(main, main, None, None, 0)
    head = output.aux_logit if towers.startswith("decoupled") else output.main_logit
    if head is None:
        raise ValueError(f"tower mode {towers!r} needs an auxiliary tower")
    kd = distill_loss(head, teacher_logit, student_sampling, teacher_sampling,
                      mode=distill.teacher_target, temperature=distill.temperature)
    alpha = distill.alpha
    if towers == "decoupled_mixed":
        aux_task = task_loss(head, label)
        return StudentLosses(main + aux_task + alpha * kd.loss, main, aux_task, kd.loss, kd.n_matched)
    if towers == "decoupled_distill":
        return StudentLosses(main + alpha * kd.loss, main, None, kd.loss, kd.n_matched)
    if towers == "single_mixed":
        return StudentLosses(main + alpha * kd.loss, main, None, kd.loss, kd.n_matched)
    if towers == "single_distill":
        return StudentLosses(kd.loss, main.detach(), None, kd.loss, kd.n_matched)
    raise ValueError(f"unknown tower mode {towers!r}")
