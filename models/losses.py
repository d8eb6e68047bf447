"""Task and distillation losses, and how the tower variants combine them (DESIGN.md §1).

Distillation loss: the binary cross-entropy between the teacher's probability p_T (a fixed target)
and the student's p_S,

    CE(p_T, p_S) = −[p_T log p_S + (1 − p_T) log(1 − p_S)] = KL(p_T ‖ p_S) + H(p_T),

and H(p_T) does not depend on the student, so CE and KL have the same gradient in the student. It
is computed from logits (softplus form), so it is stable for any logit magnitude.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.debias import distill_logits
from models.student import StudentOutput
from recdistill_dagster.config import DistillConfig, TeacherTarget, TowerMode

TOWER_MODES: tuple[TowerMode, ...] = (
    "single_distill", "single_mixed", "decoupled_distill", "decoupled_mixed",
)


def task_loss(logit: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE on the ground truth: (B,), (B,) → scalar; with a (B,) bool mask, over its rows only
    (0, still in the graph, when it selects none)."""
    if mask is None:
        return F.binary_cross_entropy_with_logits(logit, label)
    per_row = F.binary_cross_entropy_with_logits(logit, label, reduction="none")
    return (per_row * mask).sum() / mask.sum().clamp(min=1)


def soft_bce_with_logits(student_logit: torch.Tensor, teacher_logit: torch.Tensor) -> torch.Tensor:
    """Per-row CE(p_T, p_S) from logits: p_T·softplus(−s) + (1 − p_T)·softplus(s); p_T is detached."""
    p_teacher = torch.sigmoid(teacher_logit).detach()
    return p_teacher * F.softplus(-student_logit) + (1 - p_teacher) * F.softplus(student_logit)


@dataclass
class DistillLossOut:
    loss: torch.Tensor  # scalar; mean over matched rows, 0 (still in the graph) when none matched
    n_matched: int


def distill_loss(student_logit: torch.Tensor, teacher_logit: torch.Tensor, student_sampling: torch.Tensor,
                 teacher_sampling: torch.Tensor, *, mode: TeacherTarget,
                 temperature: float = 1.0) -> DistillLossOut:
    """Mean distillation CE over rows that have a teacher logit (NaN = none), × τ² when τ ≠ 1.

    Rows without a teacher logit are dropped before any arithmetic, so their NaNs (teacher logit and
    teacher sampling) can reach neither the loss nor a gradient. The τ² factor keeps the gradient
    magnitude comparable across temperatures (Hinton et al.).
    """
    matched = ~torch.isnan(teacher_logit)  # (B,)
    n_matched = int(matched.sum())
    if n_matched == 0:
        # Zero that keeps the student in the graph: backward works and every gradient is exactly 0.
        return DistillLossOut((student_logit * 0.0).sum(), 0)
    teacher_sampling = teacher_sampling[matched]
    if mode in ("teacher_own", "exact") and bool(torch.isnan(teacher_sampling).any()):
        raise ValueError(f"teacher target {mode!r} needs the teacher's sampling parameters, but rows with a "
                         "teacher logit have NaN teacher_r_s/_r_pos/_p_x/_b_s")
    s, t = distill_logits(mode, student_logit[matched], teacher_logit[matched], student_sampling[matched],
                          teacher_sampling, temperature)
    loss = soft_bce_with_logits(s, t).mean()
    if temperature != 1.0:
        loss = loss * temperature**2
    return DistillLossOut(loss, n_matched)


@dataclass
class StudentLosses:
    total: torch.Tensor  # what is back-propagated
    task_main: torch.Tensor  # main tower's task loss (logged even when it is not trained on)
    task_aux: torch.Tensor | None  # aux tower's task loss (decoupled_mixed only)
    distill: torch.Tensor | None  # the distillation loss before α (None without distillation)
    n_matched: int  # rows with a teacher logit


def student_losses(output: StudentOutput, label: torch.Tensor, teacher_logit: torch.Tensor,
                   student_sampling: torch.Tensor, teacher_sampling: torch.Tensor, *, towers: TowerMode,
                   distill: DistillConfig | None, task_mask: torch.Tensor | None = None) -> StudentLosses:
    """Combine losses for a tower variant (paper Table 5); the served main tower is the same in all.

    decoupled_mixed:   main = task,  aux = task + α·distill   (default)
    decoupled_distill: main = task,  aux = α·distill
    single_mixed:      main = task + α·distill
    single_distill:    main = distill                        (α would only rescale the only loss)
    distill=None (the baseline): main = task; an aux tower, if built, gets no loss.
    `task_mask` (B,) bool: the rows of the student's own stream; the task losses use only those,
    the distillation loss every row with a teacher logit (soft-label rows of the teacher's stream).

    In decoupled_distill α is kept on the aux loss: the aux tower's gradient reaches the shared
    backbone next to the main task loss, and α sets that balance just as in decoupled_mixed (the
    distill loss can be orders of magnitude smaller than the task loss), so the two decoupled modes
    differ only by the aux task term.
    """
    main_task = task_loss(output.main_logit, label, task_mask)
    if distill is None:
        return StudentLosses(main_task, main_task, None, None, 0)
    if towers.startswith("decoupled"):
        if output.aux_logit is None:
            raise ValueError(f"tower mode {towers!r} needs a student built with an auxiliary tower")
        head = output.aux_logit
    else:
        head = output.main_logit
    kd = distill_loss(head, teacher_logit, student_sampling, teacher_sampling,
                      mode=distill.teacher_target, temperature=distill.temperature)
    alpha = distill.alpha
    if towers == "decoupled_mixed":
        aux_task = task_loss(head, label, task_mask)
        total = main_task + aux_task + alpha * kd.loss
        return StudentLosses(total, main_task, aux_task, kd.loss, kd.n_matched)
    if towers in ("decoupled_distill", "single_mixed"):
        return StudentLosses(main_task + alpha * kd.loss, main_task, None, kd.loss, kd.n_matched)
    if towers == "single_distill":
        return StudentLosses(kd.loss, main_task.detach(), None, kd.loss, kd.n_matched)
    raise ValueError(f"unknown tower mode {towers!r}; expected one of {TOWER_MODES}")
