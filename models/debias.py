"""Sampling-aware debias (DESIGN.md §1).

A model trained on a stream that keeps positives with probability p_x and negatives with 1/r_s
learns odds' = odds · p_x · r_s. Two corrections from a raw logit z:

- `paper_debias_prob`: the paper's f(z) = 1 / (1 + (r_s / p_x) · (e^{−z} + 1 − r_pos + b_s)),
  verbatim. With r_pos = 1, b_s = 0, p_x = 1 it is the classic 1 / (1 + r_s·e^{−z}).
- `exact_calibrated_logit`: z − log(r_s · p_x), the exact inverse of the sampling above. The two
  agree when p_x = 1, r_pos = 1, b_s = 0; for p_x < 1 the paper's form divides by p_x where the
  odds algebra multiplies, so it under-predicts those rows.
"""

import torch

from recdistill_dagster.config import TeacherTarget

R_S, R_POS, P_X, B_S = 0, 1, 2, 3  # column order of SAMPLING_COLUMNS


def paper_debias_prob(z: torch.Tensor, r_s: torch.Tensor, r_pos: torch.Tensor, p_x: torch.Tensor,
                      b_s: torch.Tensor) -> torch.Tensor:
    """f(z), computed in log space: −log f = softplus(log(r_s/p_x) + log(e^{−z} + c)), c = 1 − r_pos + b_s."""
    c = 1.0 - r_pos + b_s
    # log(e^{−z} + c) = logaddexp(−z, log c), with c = 0 handled by −inf.
    log_c = torch.where(c > 0, torch.log(c.clamp(min=1e-30)), torch.full_like(c, float("-inf")))
    log_term = torch.logaddexp(-z, log_c)
    return torch.sigmoid(-(torch.log(r_s) - torch.log(p_x) + log_term))


def paper_debias_logit(z: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
    """The logit of f(z) with the row's sampling parameters (B, 4)."""
    c = 1.0 - sampling[:, R_POS] + sampling[:, B_S]
    log_c = torch.where(c > 0, torch.log(c.clamp(min=1e-30)), torch.full_like(c, float("-inf")))
    return -(torch.log(sampling[:, R_S]) - torch.log(sampling[:, P_X]) + torch.logaddexp(-z, log_c))


def exact_calibrated_logit(z: torch.Tensor, r_s: torch.Tensor, p_x: torch.Tensor) -> torch.Tensor:
    return z - torch.log(r_s * p_x)


def reproject_logit(z: torch.Tensor, from_r_s: torch.Tensor, from_p_x: torch.Tensor, to_r_s: torch.Tensor,
                    to_p_x: torch.Tensor) -> torch.Tensor:
    """Move a logit exactly from one sampling space into another."""
    return z - torch.log(from_r_s * from_p_x) + torch.log(to_r_s * to_p_x)


def distill_logits(mode: TeacherTarget, student_logit: torch.Tensor, teacher_logit: torch.Tensor,
                   student_sampling: torch.Tensor, teacher_sampling: torch.Tensor,
                   temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) logits whose sigmoids are matched by the distillation loss.

    - none: σ(S1) vs σ(T1), no correction;
    - teacher_own: f_S(S1) vs f_T(T1), the teacher corrected with its own sampling (known-bad);
    - student_raw: f_S(S1) vs f_S(T1), the raw teacher logit through the student's f (paper);
    - exact: σ(S1) vs σ(T1 re-projected into the student's sampling space) (ours).
    Temperature divides the raw logits first.
    """
    s1, t1 = student_logit / temperature, teacher_logit / temperature
    if mode == "none":
        return s1, t1
    if mode == "teacher_own":
        return paper_debias_logit(s1, student_sampling), paper_debias_logit(t1, teacher_sampling)
    if mode == "student_raw":
        return paper_debias_logit(s1, student_sampling), paper_debias_logit(t1, student_sampling)
    if mode == "exact":
        reprojected = reproject_logit(
            t1, teacher_sampling[:, R_S], teacher_sampling[:, P_X], student_sampling[:, R_S], student_sampling[:, P_X]
        )
        return s1, reprojected
    raise ValueError(f"unknown teacher target mode {mode!r}")
