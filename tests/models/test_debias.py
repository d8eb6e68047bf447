"""Sampling-aware debias: the paper's f, the exact correction, re-projection and the teacher targets."""

import numpy as np
import pytest
import torch

from models.debias import (
    distill_logits,
    distill_pair,
    exact_calibrated_logit,
    paper_debias_logit,
    paper_debias_prob,
    reproject_logit,
)


def _full(like: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full_like(like, value)


def _rows(n: int, r_s: float, p_x: float = 1.0, r_pos: float = 1.0, b_s: float = 0.0) -> torch.Tensor:
    return torch.tensor([[r_s, r_pos, p_x, b_s]] * n, dtype=torch.float64)


def test_paper_sanity_case_is_classic_negative_downsampling() -> None:
    z = torch.linspace(-8, 8, 33, dtype=torch.float64)
    one, zero = _full(z, 1.0), _full(z, 0.0)
    expected = 1.0 / (1.0 + 10.0 * torch.exp(-z))
    assert torch.allclose(paper_debias_prob(z, _full(z, 10.0), one, one, zero), expected, atol=1e-12)
    # …where the paper's formula and the exact correction coincide.
    assert torch.allclose(torch.sigmoid(exact_calibrated_logit(z, _full(z, 10.0), one)), expected, atol=1e-12)


def test_paper_formula_matches_its_literal_form() -> None:
    z = torch.linspace(-6, 6, 25, dtype=torch.float64)
    r_s, r_pos, p_x, b_s = 5.0, 0.8, 0.6, 0.1
    literal = 1.0 / (1.0 + (r_s / p_x) * (torch.exp(-z) + 1 - r_pos + b_s))
    got = paper_debias_prob(z, _full(z, r_s), _full(z, r_pos), _full(z, p_x), _full(z, b_s))
    assert torch.allclose(got, literal, atol=1e-12)


def test_paper_and_exact_differ_by_two_log_px_when_positives_are_sampled() -> None:
    # Documented difference: with r_pos = 1, b_s = 0 the paper divides by p_x where the odds multiply.
    z = torch.linspace(-4, 4, 9, dtype=torch.float64)
    p_x = 0.5
    paper = paper_debias_logit(z, _full(z, 4.0), _full(z, 1.0), _full(z, p_x), _full(z, 0.0))
    exact = exact_calibrated_logit(z, _full(z, 4.0), _full(z, p_x))
    assert torch.allclose(paper - exact, _full(z, 2 * np.log(p_x)), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_paper_debias_is_monotone_and_finite_for_large_logits(dtype: torch.dtype) -> None:
    z = torch.linspace(-80, 80, 1601, dtype=dtype, requires_grad=True)
    p = paper_debias_prob(z, _full(z, 5.0), _full(z, 0.8), _full(z, 0.6), _full(z, 0.1))
    assert torch.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert (p.diff() >= 0).all() and p[-1] > p[0]
    p.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_negative_bias_stays_finite() -> None:
    # c = 1 − r_pos + b_s < 0: f is undefined where e^{−z} < −c; it saturates instead of leaving (0, 1].
    z = torch.linspace(-80, 80, 161, dtype=torch.float64, requires_grad=True)
    p = paper_debias_prob(z, _full(z, 2.0), _full(z, 1.0), _full(z, 1.0), _full(z, -0.2))
    assert torch.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    p.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_exact_correction_recovers_the_true_rate_of_a_sampled_stream() -> None:
    # Simulate a stream per traffic source, sample it, and take the logit a perfectly fit model would
    # learn on the sampled rows (the sampled positive rate). The exact correction gives back p_true.
    rng = np.random.default_rng(0)
    keep_negative = 0.1
    for p_true, p_x in ((0.03, 1.0), (0.03, 0.5), (0.2, 0.25)):
        labels = rng.random(2_000_000) < p_true
        kept = np.where(labels, rng.random(labels.size) < p_x, rng.random(labels.size) < keep_negative)
        sampled_rate = labels[kept].mean()
        z = torch.tensor([np.log(sampled_rate / (1 - sampled_rate))], dtype=torch.float64)
        recovered = torch.sigmoid(exact_calibrated_logit(z, 1 / keep_negative, p_x)).item()
        assert recovered == pytest.approx(p_true, rel=0.03)
        # The odds algebra itself: sampled odds = true odds · r_s · p_x.
        odds = p_true / (1 - p_true)
        assert sampled_rate / (1 - sampled_rate) == pytest.approx(odds * p_x / keep_negative, rel=0.03)


def test_reprojection_is_exact_and_invertible() -> None:
    z = torch.randn(10, dtype=torch.float64)
    teacher, student = (torch.tensor(2.0), torch.tensor(0.5)), (torch.tensor(10.0), torch.tensor(1.0))
    moved = reproject_logit(z, *teacher, *student)
    assert torch.allclose(reproject_logit(moved, *student, *teacher), z)
    # Both spaces calibrate to the same unsampled probability.
    assert torch.allclose(exact_calibrated_logit(moved, *student), exact_calibrated_logit(z, *teacher))


def test_teacher_target_modes() -> None:
    s = torch.tensor([0.3, -1.0], dtype=torch.float64)
    t = torch.tensor([1.0, 2.0], dtype=torch.float64)
    student, teacher = _rows(2, 10.0, 0.5), _rows(2, 2.0, 0.25)

    def f(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return paper_debias_prob(z, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])

    cases = {
        "none": (torch.sigmoid(s), torch.sigmoid(t)),
        "teacher_own": (f(s, student), f(t, teacher)),
        "student_raw": (f(s, student), f(t, student)),
        "exact": (torch.sigmoid(s), torch.sigmoid(t - np.log(2.0 * 0.25) + np.log(10.0 * 0.5))),
    }
    for mode, (p_s, p_t) in cases.items():
        got_s, got_t = distill_pair(mode, s, t, student, teacher)
        assert torch.allclose(got_s, p_s) and torch.allclose(got_t, p_t), mode
    with pytest.raises(ValueError, match="unknown teacher target"):
        distill_logits("bogus", s, t, student, teacher)  # type: ignore[arg-type]


def test_temperature_divides_logits_before_the_correction() -> None:
    s = torch.tensor([0.3, -1.0], dtype=torch.float64)
    t = torch.tensor([1.0, 2.0], dtype=torch.float64)
    student, teacher = _rows(2, 10.0, 0.5), _rows(2, 2.0, 0.25)
    tau = 2.0
    got_s, got_t = distill_pair("student_raw", s, t, student, teacher, temperature=tau)
    want_s, want_t = distill_pair("student_raw", s / tau, t / tau, student, teacher)
    assert torch.allclose(got_s, want_s) and torch.allclose(got_t, want_t)
    # exact: move the teacher into the student's space first, then soften both alike.
    _, exact_t = distill_logits("exact", s, t, student, teacher, temperature=tau)
    moved = reproject_logit(t, teacher[:, 0], teacher[:, 2], student[:, 0], student[:, 2])
    assert torch.allclose(exact_t, moved / tau)
