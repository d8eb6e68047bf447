"""Distillation loss (CE = KL + const), masking of missing teacher logits, and the tower variants."""

import pytest
import torch

from models.features import frame_to_tensors
from models.losses import distill_loss, soft_bce_with_logits, student_losses, task_loss
from models.student import StudentModel, StudentOutput
from recdistill_dagster.config import DistillConfig, StudentArch, TowerMode
from tests.models.conftest import make_frame

ARCH = StudentArch(embed_dim=4, backbone_hidden=(8,), tower_hidden=4, seq_len=8)


def _sampling(n: int, r_s: float, p_x: float = 1.0) -> torch.Tensor:
    return torch.tensor([[r_s, 1.0, p_x, 0.0]] * n)


def test_distill_ce_is_kl_plus_teacher_entropy() -> None:
    s = torch.randn(200, dtype=torch.float64, requires_grad=True)
    t = torch.randn(200, dtype=torch.float64)
    ce = soft_bce_with_logits(s, t)
    p_t, p_s = torch.sigmoid(t), torch.sigmoid(s)
    kl = p_t * torch.log(p_t / p_s) + (1 - p_t) * torch.log((1 - p_t) / (1 - p_s))
    entropy = -(p_t * torch.log(p_t) + (1 - p_t) * torch.log(1 - p_t))
    assert torch.allclose(ce, kl + entropy, atol=1e-10)
    # Same gradient in the student: the entropy term is a constant.
    (grad_ce,) = torch.autograd.grad(ce.sum(), s)
    (grad_kl,) = torch.autograd.grad(kl.sum(), s)
    assert torch.allclose(grad_ce, grad_kl, atol=1e-10)
    # …and the teacher is a fixed target: no gradient flows into it.
    assert not soft_bce_with_logits(s.detach(), t.clone().requires_grad_()).requires_grad


def test_distill_loss_is_stable_for_extreme_logits() -> None:
    s = torch.tensor([80.0, -80.0, 80.0, -80.0], requires_grad=True)
    t = torch.tensor([-80.0, 80.0, 80.0, -80.0])
    out = distill_loss(s, t, _sampling(4, 10.0), _sampling(4, 2.0), mode="student_raw")
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(s.grad).all()
    assert out.loss.item() > 10  # confidently wrong rows cost a lot


def test_rows_without_teacher_logit_contribute_nothing() -> None:
    s = torch.randn(6, requires_grad=True)
    t = torch.tensor([0.5, float("nan"), -1.0, float("nan"), 2.0, 0.0])
    teacher_sampling = _sampling(6, 2.0)
    teacher_sampling[[1, 3]] = float("nan")  # unmatched rows have no teacher sampling either
    out = distill_loss(s, t, _sampling(6, 10.0), teacher_sampling, mode="exact")
    assert out.n_matched == 4
    out.loss.backward()
    assert s.grad[1] == 0 and s.grad[3] == 0 and (s.grad[[0, 2, 4, 5]] != 0).all()
    keep = torch.tensor([0, 2, 4, 5])
    subset = distill_loss(s.detach()[keep], t[keep], _sampling(4, 10.0), _sampling(4, 2.0), mode="exact")
    assert out.loss.item() == pytest.approx(subset.loss.item())


def test_no_matched_rows_gives_zero_loss_and_zero_gradients() -> None:
    s = torch.randn(3, requires_grad=True)
    nan = torch.full((3,), float("nan"))
    out = distill_loss(s, nan, _sampling(3, 10.0), torch.full((3, 4), float("nan")), mode="teacher_own")
    out.loss.backward()
    assert out.n_matched == 0 and out.loss.item() == 0.0
    assert torch.equal(s.grad, torch.zeros(3))


def test_missing_teacher_sampling_is_an_error_where_it_is_needed() -> None:
    s, t = torch.randn(2), torch.randn(2)
    no_sampling = torch.full((2, 4), float("nan"))
    with pytest.raises(ValueError, match="teacher's sampling parameters"):
        distill_loss(s, t, _sampling(2, 10.0), no_sampling, mode="exact")
    # student_raw only uses the student's f.
    assert torch.isfinite(distill_loss(s, t, _sampling(2, 10.0), no_sampling, mode="student_raw").loss)


def test_temperature_scales_by_tau_squared() -> None:
    s, t = torch.randn(50), torch.randn(50)
    sampling = _sampling(50, 1.0)
    tau = 2.0
    scaled = distill_loss(s, t, sampling, sampling, mode="none", temperature=tau).loss
    manual = soft_bce_with_logits(s / tau, t / tau).mean() * tau**2
    assert scaled.item() == pytest.approx(manual.item(), rel=1e-6)


def test_tower_modes_combine_the_documented_losses() -> None:
    label = torch.tensor([1.0, 0.0, 1.0, 0.0])
    main, aux = torch.randn(4), torch.randn(4)
    teacher = torch.tensor([0.5, float("nan"), -1.0, 2.0])
    sampling = _sampling(4, 10.0)
    config = DistillConfig(alpha=0.3, teacher_target="student_raw")

    def kd(head: torch.Tensor) -> float:
        return distill_loss(head, teacher, sampling, sampling, mode="student_raw").loss.item()

    t_main, t_aux = task_loss(main, label).item(), task_loss(aux, label).item()
    expected = {
        "decoupled_mixed": t_main + t_aux + 0.3 * kd(aux),
        "decoupled_distill": t_main + 0.3 * kd(aux),
        "single_mixed": t_main + 0.3 * kd(main),
        "single_distill": kd(main),
    }
    for mode, total in expected.items():
        output = StudentOutput(main, aux if mode.startswith("decoupled") else None)
        losses = student_losses(output, label, teacher, sampling, sampling, towers=mode, distill=config)
        assert losses.total.item() == pytest.approx(total, rel=1e-6), mode
        assert losses.task_main.item() == pytest.approx(t_main) and losses.n_matched == 3
        assert (losses.task_aux is not None) == (mode == "decoupled_mixed")
    baseline = student_losses(StudentOutput(main, aux), label, teacher, sampling, sampling,
                              towers="decoupled_mixed", distill=None)
    assert baseline.distill is None and baseline.task_aux is None
    assert baseline.total.item() == pytest.approx(t_main)
    with pytest.raises(ValueError, match="auxiliary tower"):
        student_losses(StudentOutput(main, None), label, teacher, sampling, sampling,
                       towers="decoupled_mixed", distill=config)


def _grads(model: StudentModel, module: torch.nn.Module, batch, teacher_logit: torch.Tensor,
           towers: TowerMode, distill: DistillConfig | None) -> list[torch.Tensor]:
    model.zero_grad()
    out = model(batch.sparse, batch.dense, batch.history)
    student_losses(out, batch.label, teacher_logit, batch.sampling, batch.sampling, towers=towers,
                   distill=distill).total.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


@pytest.mark.parametrize("towers", ["decoupled_mixed", "decoupled_distill", "single_mixed", "single_distill"])
def test_distillation_reaches_the_main_tower_only_in_single_modes(vocab, towers: TowerMode) -> None:
    batch = frame_to_tensors(make_frame(vocab, 64, seed=1), history_len=8)
    torch.manual_seed(0)
    model = StudentModel(vocab, ARCH.model_copy(update={"towers": towers}))
    config = DistillConfig(alpha=1.0)
    low, high = torch.full((64,), -3.0), torch.full((64,), 3.0)
    main_low = _grads(model, model.main_tower, batch, low, towers, config)
    main_high = _grads(model, model.main_tower, batch, high, towers, config)
    same = all(torch.allclose(a, b) for a, b in zip(main_low, main_high, strict=True))
    # Decoupled: the served tower's weights see only the task loss, whatever the teacher says.
    assert same == towers.startswith("decoupled")
    # The shared backbone always sees the teacher.
    backbone_low = _grads(model, model.backbone, batch, low, towers, config)
    backbone_high = _grads(model, model.backbone, batch, high, towers, config)
    assert not all(torch.allclose(a, b) for a, b in zip(backbone_low, backbone_high, strict=True))


def test_baseline_trains_only_the_main_task(vocab) -> None:
    batch = frame_to_tensors(make_frame(vocab, 32, seed=2), history_len=8)
    model = StudentModel(vocab, ARCH)
    grads = _grads(model, model.aux_tower, batch, torch.randn(32), "decoupled_mixed", None)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)  # the aux tower gets no loss


def test_soft_label_rows_train_the_distillation_loss_only() -> None:
    torch.manual_seed(0)
    out = StudentOutput(torch.randn(8), torch.randn(8))
    label = torch.tensor([1.0, 0, 0, 1, 0, 0, 1, 0])
    teacher = torch.randn(8)
    mask = torch.tensor([True, True, False, True, False, True, False, False])
    sampling, teacher_sampling = _sampling(8, 10.0), _sampling(8, 1.0)
    config = DistillConfig(alpha=2.0)
    masked = student_losses(out, label, teacher, sampling, teacher_sampling, towers="decoupled_mixed",
                            distill=config, task_mask=mask)
    assert out.aux_logit is not None and masked.task_aux is not None and masked.distill is not None
    own = StudentOutput(out.main_logit[mask], out.aux_logit[mask])
    subset = student_losses(own, label[mask], teacher[mask], sampling[mask], teacher_sampling[mask],
                            towers="decoupled_mixed", distill=config)
    assert subset.task_aux is not None
    assert masked.task_main.item() == pytest.approx(subset.task_main.item())
    assert masked.task_aux.item() == pytest.approx(subset.task_aux.item())
    full = distill_loss(out.aux_logit, teacher, sampling, teacher_sampling, mode="exact")
    assert masked.distill.item() == pytest.approx(full.loss.item()) and masked.n_matched == 8
    none = task_loss(torch.randn(3, requires_grad=True), torch.ones(3), torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad
