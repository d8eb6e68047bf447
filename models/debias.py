"""Sampling-aware debias (DESIGN.md §1): from a raw logit on a sampled stream to a probability.

A stream that keeps positives with probability p_x and negatives with probability 1/r_s changes
the class odds by a known factor: odds_sampled = odds · p_x / (1/r_s) = odds · r_s · p_x. A model
that fits the sampled stream therefore learns z = logit(p) + log(r_s · p_x).

Two corrections from a raw logit z back to the unsampled scale:

- `paper_debias_prob`, the paper's formula verbatim:
      f(z) = 1 / (1 + (r_s / p_x) · (e^{−z} + 1 − r_pos + b_s))
  With r_pos = 1, b_s = 0 it is 1 / (1 + (r_s/p_x)·e^{−z}), i.e. logit f = z − log(r_s / p_x):
  p_x enters inverted, whereas the odds algebra above subtracts log(r_s · p_x). With p_x read as the
  positive retention probability, the formula as written pushes those rows further down instead of
  back up: its odds are p_x² times the true odds. r_pos and b_s add the strategy-specific terms the
  paper describes (and are not part of the sampling model above).
- `exact_calibrated_logit(z, r_s, p_x) = z − log(r_s · p_x)`, the exact inverse of the sampling
  above; probability = sigmoid of it.

The two coincide when p_x = 1, r_pos = 1 and b_s = 0 (the classic negative down-sampling
correction 1 / (1 + r_s·e^{−z})). `reproject_logit` moves a logit exactly between two sampling
spaces (teacher stream → student stream), which the "exact" teacher-target mode uses.

Sampling parameters come per row as (B, 4) tensors in SAMPLING_COLUMNS order (r_s, r_pos, p_x, b_s).
"""

import numpy as np
import torch

from recdistill_dagster.config import SamplingPolicy, TeacherTarget
from recdistill_dagster.data.schema import SAMPLING_COLUMNS

R_S, R_POS, P_X, B_S = (SAMPLING_COLUMNS.index(c) for c in ("r_s", "r_pos", "p_x", "b_s"))
TEACHER_TARGETS: tuple[TeacherTarget, ...] = ("none", "teacher_own", "student_raw", "exact")
# exp() arguments are clamped here; e^80 is far beyond any logit a CTR model produces.
_MAX_EXP = 80.0


def paper_debias_logit(z: torch.Tensor, r_s: torch.Tensor, r_pos: torch.Tensor, p_x: torch.Tensor,
                       b_s: torch.Tensor) -> torch.Tensor:
    """logit of the paper's f(z), in log space so |z| up to 80 neither overflows nor loses precision.

    −logit f = log(r_s / p_x) + log(e^{−z} + c), c = 1 − r_pos + b_s. For c ≥ 0 the last term is
    logaddexp(−z, log c). For c < 0 (a negative b_s) f is only defined while e^{−z} > −c; beyond
    that the term is clamped at log(1e-30), i.e. f saturates at 1 instead of leaving (0, 1).
    """
    c = 1.0 - r_pos + b_s
    log_c = torch.log(c.clamp(min=1e-30)).masked_fill(c <= 0, float("-inf"))
    log_term = torch.logaddexp(-z, log_c)  # c ≥ 0
    # c < 0: e^{−z} + c = e^{−z}·(1 + c·e^{z}); finite for every row, selected only where c < 0.
    shrunk = -z + torch.log((1.0 + c * torch.exp(z.clamp(max=_MAX_EXP))).clamp(min=1e-30))
    log_term = torch.where(c < 0, shrunk, log_term)
    return -(torch.log(r_s) - torch.log(p_x) + log_term)


def paper_debias_prob(z: torch.Tensor, r_s: torch.Tensor, r_pos: torch.Tensor, p_x: torch.Tensor,
                      b_s: torch.Tensor) -> torch.Tensor:
    """f(z) = 1 / (1 + (r_s / p_x)·(e^{−z} + 1 − r_pos + b_s)), computed stably (see module docstring)."""
    return torch.sigmoid(paper_debias_logit(z, r_s, r_pos, p_x, b_s))


def paper_debias_rows(z: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
    """logit of f(z) with each row's own sampling parameters: (B,), (B, 4) → (B,)."""
    return paper_debias_logit(z, sampling[:, R_S], sampling[:, R_POS], sampling[:, P_X], sampling[:, B_S])


def exact_calibrated_logit(z: torch.Tensor, r_s: torch.Tensor | float,
                           p_x: torch.Tensor | float) -> torch.Tensor:
    """The exact inverse of sampling (keep negatives w.p. 1/r_s, positives w.p. p_x): z − log(r_s·p_x)."""
    return z - torch.log(torch.as_tensor(r_s, dtype=z.dtype, device=z.device) * p_x)


def calibrated_probability(logits: np.ndarray, policy: SamplingPolicy, traffic_source: np.ndarray) -> np.ndarray:
    """A model's raw logits (N,) in `policy`'s sampling space → probabilities (N,) on the unsampled scale."""
    p_x = np.asarray(policy.positive_keep_by_source, dtype=np.float64)[traffic_source]
    z = exact_calibrated_logit(torch.as_tensor(logits, dtype=torch.float64),
                               torch.full((len(logits),), policy.r_s, dtype=torch.float64), torch.as_tensor(p_x))
    return torch.sigmoid(z).numpy()


def reproject_logit(z: torch.Tensor, from_r_s: torch.Tensor, from_p_x: torch.Tensor, to_r_s: torch.Tensor,
                    to_p_x: torch.Tensor) -> torch.Tensor:
    """Move a logit exactly from one sampling space into another: z − log(r·p)_from + log(r·p)_to."""
    return z - torch.log(from_r_s * from_p_x) + torch.log(to_r_s * to_p_x)


def distill_logits(mode: TeacherTarget, student_logit: torch.Tensor, teacher_logit: torch.Tensor,
                   student_sampling: torch.Tensor, teacher_sampling: torch.Tensor,
                   temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) logits whose sigmoids the distillation loss matches (paper Table 9).

    - none: σ(S1/τ) vs σ(T1/τ), no correction;
    - teacher_own: f_S(S1/τ) vs f_T(T1/τ), the teacher corrected with its own sampling (known-bad);
    - student_raw: f_S(S1/τ) vs f_S(T1/τ), the raw teacher logit through the student's f (paper);
    - exact: σ(S1/τ) vs σ(reproject(T1, teacher → student)/τ) (ours): both logits then live in the
      student's sampling space, where the student's own logit is trained, and are softened alike.
    f_S / f_T use each row's student / teacher sampling parameters (B, 4).
    """
    if mode == "none":
        return student_logit / temperature, teacher_logit / temperature
    if mode == "teacher_own":
        return (paper_debias_rows(student_logit / temperature, student_sampling),
                paper_debias_rows(teacher_logit / temperature, teacher_sampling))
    if mode == "student_raw":
        return (paper_debias_rows(student_logit / temperature, student_sampling),
                paper_debias_rows(teacher_logit / temperature, student_sampling))
    if mode == "exact":
        moved = reproject_logit(teacher_logit, teacher_sampling[:, R_S], teacher_sampling[:, P_X],
                                student_sampling[:, R_S], student_sampling[:, P_X])
        return student_logit / temperature, moved / temperature
    raise ValueError(f"unknown teacher target mode {mode!r}; expected one of {TEACHER_TARGETS}")


def distill_pair(mode: TeacherTarget, student_logit: torch.Tensor, teacher_logit: torch.Tensor,
                 student_sampling: torch.Tensor, teacher_sampling: torch.Tensor,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(student_prob p_S, teacher_prob p_T) for a teacher-target mode; see `distill_logits`.

    The loss works on the logits (stable BCE); this is the same pair as probabilities.
    """
    s, t = distill_logits(mode, student_logit, teacher_logit, student_sampling, teacher_sampling, temperature)
    return torch.sigmoid(s), torch.sigmoid(t)
