"""The math of Rec-Distill: debias, distillation loss, masking, towers, AUC and η."""

import numpy as np
import pytest
import torch

from models.debias import distill_logits, exact_calibrated_logit, paper_debias_prob, reproject_logit
from models.losses import distill_loss, soft_bce_with_logits, student_losses
from models.metrics import auc, logloss, paired_bootstrap_gains
from models.student import StudentModel
from recdistill_dagster.config import DistillConfig, StudentArch


def test_paper_debias_sanity_case_is_classic_negative_downsampling() -> None:
    z = torch.linspace(-8, 8, 33, dtype=torch.float64)
    r_s = torch.full_like(z, 10.0)
    one, zero = torch.ones_like(z), torch.zeros_like(z)
    expected = 1.0 / (1.0 + 10.0 * torch.exp(-z))
    assert torch.allclose(paper_debias_prob(z, r_s, one, one, zero), expected, atol=1e-12)
    # …and it agrees with the exact correction in that case.
    assert torch.allclose(torch.sigmoid(exact_calibrated_logit(z, r_s, one)), expected, atol=1e-12)


def test_paper_debias_is_monotone_and_stable() -> None:
    z = torch.linspace(-80, 80, 1001, dtype=torch.float64)
    p = paper_debias_prob(z, torch.full_like(z, 5.0), torch.full_like(z, 0.8), torch.full_like(z, 0.6),
                          torch.full_like(z, 0.1))
    assert torch.isfinite(p).all()
    assert (p.diff() >= 0).all() and p[-1] > p[0]


def test_exact_calibration_recovers_true_rate_from_a_sampled_stream() -> None:
    rng = np.random.default_rng(0)
    p_true, p_x, keep_neg = 0.03, 0.5, 0.1
    labels = rng.random(2_000_000) < p_true
    kept = np.where(labels, rng.random(labels.size) < p_x, rng.random(labels.size) < keep_neg)
    sampled_rate = labels[kept].mean()  # what a well-fit model on the sampled stream predicts
    z = torch.tensor([np.log(sampled_rate / (1 - sampled_rate))], dtype=torch.float64)
    p = torch.sigmoid(exact_calibrated_logit(z, torch.tensor([1 / keep_neg]), torch.tensor([p_x]))).item()
    assert p == pytest.approx(p_true, rel=0.03)


def test_reprojection_roundtrip() -> None:
    z = torch.randn(10, dtype=torch.float64)
    a, b = (torch.tensor(2.0), torch.tensor(0.5)), (torch.tensor(10.0), torch.tensor(1.0))
    assert torch.allclose(reproject_logit(reproject_logit(z, *a, *b), *b, *a), z)


def test_distill_ce_equals_kl_plus_teacher_entropy() -> None:
    s = torch.randn(200, dtype=torch.float64, requires_grad=True)
    t = torch.randn(200, dtype=torch.float64)
    ce = soft_bce_with_logits(s, t)
    p_t, p_s = torch.sigmoid(t), torch.sigmoid(s)
    kl = p_t * torch.log(p_t / p_s) + (1 - p_t) * torch.log((1 - p_t) / (1 - p_s))
    entropy = -(p_t * torch.log(p_t) + (1 - p_t) * torch.log(1 - p_t))
    assert torch.allclose(ce, kl + entropy, atol=1e-10)
    (grad_ce,) = torch.autograd.grad(ce.sum(), s)
    (grad_kl,) = torch.autograd.grad(kl.sum(), s)
    assert torch.allclose(grad_ce, grad_kl, atol=1e-10)


def _sampling(n: int, r_s: float, p_x: float = 1.0) -> torch.Tensor:
    return torch.tensor([[r_s, 1.0, p_x, 0.0]] * n)


def test_missing_teacher_logits_are_masked() -> None:
    s = torch.randn(6, requires_grad=True)
    t = torch.tensor([0.5, float("nan"), -1.0, float("nan"), 2.0, 0.0])
    out = distill_loss(s, t, _sampling(6, 10.0), _sampling(6, 2.0), mode="student_raw")
    assert out.n_matched == 4
    out.loss.backward()
    assert s.grad is not None and s.grad[1] == 0 and s.grad[3] == 0 and s.grad[0] != 0
    s2 = torch.randn(3, requires_grad=True)
    none = distill_loss(s2, torch.full((3,), float("nan")), _sampling(3, 10.0), _sampling(3, 2.0), mode="exact")
    none.loss.backward()
    assert none.n_matched == 0 and none.loss.item() == 0.0 and torch.isfinite(s2.grad).all()


def test_temperature_scales_by_tau_squared() -> None:
    s, t = torch.randn(50), torch.randn(50)
    sampling = _sampling(50, 1.0)
    tau = 2.0
    scaled = distill_loss(s, t, sampling, sampling, mode="none", temperature=tau).loss
    manual = soft_bce_with_logits(s / tau, t / tau).mean() * tau**2
    assert scaled.item() == pytest.approx(manual.item(), rel=1e-6)


def test_teacher_target_modes_differ_as_designed() -> None:
    s, t = torch.zeros(2), torch.ones(2)
    student, teacher = _sampling(2, 10.0, 0.5), _sampling(2, 2.0, 0.5)
    _, t_none = distill_logits("none", s, t, student, teacher)
    _, t_exact = distill_logits("exact", s, t, student, teacher)
    assert torch.allclose(t_none, t)
    assert torch.allclose(t_exact, t - np.log(2.0 * 0.5) + np.log(10.0 * 0.5))
    _, t_own = distill_logits("teacher_own", s, t, student, teacher)
    _, t_raw = distill_logits("student_raw", s, t, student, teacher)
    assert not torch.allclose(t_own, t_raw)


def test_decoupled_main_tower_gets_no_distill_gradient(vocab) -> None:
    from models.features import frame_to_tensors
    from tests.models.conftest import make_frame

    batch = frame_to_tensors(make_frame(vocab, 64, seed=1), history_len=8)
    model = StudentModel(vocab, StudentArch(embed_dim=4, backbone_hidden=(8,), tower_hidden=4, seq_len=8))
    config = DistillConfig(alpha=1.0)

    def main_tower_grads(teacher_logit: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        out = model(batch.sparse, batch.dense, batch.history)
        losses = student_losses(out, batch.label, teacher_logit, batch.sampling, batch.sampling,
                                towers="decoupled_mixed", distill=config)
        losses.total.backward()
        return [p.grad.clone() for p in model.main_tower.parameters()]

    a = main_tower_grads(torch.full((64,), -3.0))
    b = main_tower_grads(torch.full((64,), 3.0))
    assert all(torch.allclose(x, y) for x, y in zip(a, b, strict=True))
    # …while the shared backbone does see the teacher.
    model.zero_grad()
    out = model(batch.sparse, batch.dense, batch.history)
    student_losses(out, batch.label, torch.full((64,), 3.0), batch.sampling, batch.sampling,
                   towers="decoupled_mixed", distill=config).total.backward()
    grad_high = [p.grad.clone() for p in model.backbone.parameters()]
    model.zero_grad()
    out = model(batch.sparse, batch.dense, batch.history)
    student_losses(out, batch.label, torch.full((64,), -3.0), batch.sampling, batch.sampling,
                   towers="decoupled_mixed", distill=config).total.backward()
    assert not all(torch.allclose(x, p.grad) for x, p in zip(grad_high, model.backbone.parameters(), strict=True))


def test_baseline_uses_task_loss_only(vocab) -> None:
    from models.features import frame_to_tensors
    from tests.models.conftest import make_frame

    batch = frame_to_tensors(make_frame(vocab, 32, seed=2), history_len=8)
    model = StudentModel(vocab, StudentArch(embed_dim=4, backbone_hidden=(8,), tower_hidden=4, seq_len=8))
    out = model(batch.sparse, batch.dense, batch.history)
    losses = student_losses(out, batch.label, torch.randn(32), batch.sampling, batch.sampling,
                            towers="decoupled_mixed", distill=None)
    assert losses.distill is None and torch.equal(losses.total, losses.task_main)


def _brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        scores = rng.integers(0, 6, 300).astype(float)  # many ties
        labels = (rng.random(300) < 0.3).astype(float)
        assert auc(scores, labels) == pytest.approx(_brute_force_auc(scores, labels), abs=1e-12)
    weights = rng.poisson(1.0, 300).astype(float)
    expanded = np.repeat(np.arange(300), weights.astype(int))
    assert auc(scores, labels, weights) == pytest.approx(_brute_force_auc(scores[expanded], labels[expanded]))
    assert logloss(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(np.log(2))


def test_eta_and_interval_on_known_inputs() -> None:
    rng = np.random.default_rng(4)
    n = 40_000
    labels = (rng.random(n) < 0.2).astype(float)
    signal = labels + rng.normal(size=n)
    teacher = signal + 0.3 * rng.normal(size=n)
    raw = signal + 1.0 * rng.normal(size=n)
    # The distilled student is a mixture: half its rows scored like the teacher, half like raw.
    use_teacher = rng.random(n) < 0.5
    distilled = np.where(use_teacher, teacher, raw)
    est = paired_bootstrap_gains(labels, {"t": teacher, "r": raw, "d": distilled}, teacher="t", student_raw="r",
                                 student_distill="d", n_boot=200, seed=0)
    assert est.significant
    assert est.eta == pytest.approx(est.distill_gain / est.teacher_gain)
    assert 0.2 < est.eta < 0.8
    assert est.eta_ci[0] < est.eta < est.eta_ci[1]
    assert est.teacher_gain_ci[0] < est.teacher_gain < est.teacher_gain_ci[1]
    # Teacher equal to the raw student: no teacher gain, so η is not measurable.
    flat = paired_bootstrap_gains(labels, {"t": raw, "r": raw, "d": distilled}, teacher="t", student_raw="r",
                                  student_distill="d", n_boot=50, seed=0)
    assert flat.eta is None and not flat.significant and "not above zero" in flat.reason
