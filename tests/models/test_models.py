"""Teacher and student: shapes, empty histories, sizes, and the exported serving tower."""

import numpy as np
import pytest
import torch

from models.features import frame_to_tensors
from models.layers import CREATOR, ITEM, TRAFFIC_SOURCE
from models.student import StudentMainTower, StudentModel
from models.teacher import TeacherModel
from recdistill_dagster.config import SamplingPolicy, StudentArch, TeacherArch
from tests.models.conftest import make_frame, make_vocab

TEACHER = TeacherArch(embed_dim=8, width=16, n_tokens=4, depth=1, seq_len=16, compressed_tokens=2)
STUDENT = StudentArch(embed_dim=4, backbone_hidden=(16,), tower_hidden=8, seq_len=4)
POLICY = SamplingPolicy(negative_keep=0.5, positive_keep_by_source=(1.0, 1.0, 0.5))


def test_forward_shapes(vocab) -> None:
    batch = frame_to_tensors(make_frame(vocab, 10, seed=0), history_len=16)
    assert TeacherModel(vocab, TEACHER)(batch.sparse, batch.dense, batch.history).shape == (10,)
    out = StudentModel(vocab, STUDENT)(batch.sparse, batch.dense, batch.history)
    assert out.main_logit.shape == (10,) and out.aux_logit is not None and out.aux_logit.shape == (10,)
    for towers in ("single_mixed", "single_distill"):
        single = StudentModel(vocab, STUDENT.model_copy(update={"towers": towers}))
        assert single.aux_tower is None
        assert single(batch.sparse, batch.dense, batch.history).aux_logit is None
    # Histories shorter than the model's sequence length are fine (the position table is sliced).
    short = frame_to_tensors(make_frame(vocab, 3, seed=0), history_len=5)
    assert TeacherModel(vocab, TEACHER)(short.sparse, short.dense, short.history).shape == (3,)


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_all_padding_histories_give_finite_outputs_and_gradients(vocab, kind: str) -> None:
    batch = frame_to_tensors(make_frame(vocab, 6, seed=3), history_len=16)
    history = batch.history.clone()
    history[:3] = 0  # three users without any behaviour
    torch.manual_seed(0)
    model = TeacherModel(vocab, TEACHER) if kind == "teacher" else StudentModel(vocab, STUDENT)
    out = model(batch.sparse, batch.dense, history)
    logit = out if kind == "teacher" else out.main_logit + out.aux_logit
    assert torch.isfinite(logit).all()
    logit.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_default_student_is_much_smaller_than_default_teacher() -> None:
    vocab = make_vocab(n_users=4000, n_items=6000, n_categories=24, n_creators=600)
    teacher = TeacherModel(vocab, TeacherArch()).parameter_counts()
    student = StudentModel(vocab, StudentArch()).parameter_counts()
    assert student["total"] < teacher["total"]
    assert student["total"] * 4 < teacher["total"]
    assert student["dense"] * 10 < teacher["dense"]  # the dense (token mixer) scaling axis
    assert teacher["total"] == teacher["embedding"] + teacher["dense"]
    assert TeacherModel(vocab, TeacherArch()).num_parameters() == teacher["total"]


def test_serving_tower_is_the_main_tower_with_exact_calibration(vocab) -> None:
    batch = frame_to_tensors(make_frame(vocab, 6, seed=11), history_len=4)
    torch.manual_seed(0)
    student = StudentModel(vocab, STUDENT).eval()
    serving = student.serving_module(POLICY).eval()
    assert isinstance(serving, StudentMainTower)
    assert not any(name.startswith("aux_tower") for name, _ in serving.named_parameters())
    main = student(batch.sparse, batch.dense, batch.history).main_logit
    p_x = torch.tensor(POLICY.positive_keep_by_source)[batch.sparse[:, TRAFFIC_SOURCE]]
    expected = torch.sigmoid(main - torch.log(POLICY.r_s * p_x))
    assert torch.allclose(serving(batch.sparse, batch.dense, batch.history), expected, atol=1e-6)


def test_serving_tower_exports_and_matches_eager(vocab) -> None:
    batch = frame_to_tensors(make_frame(vocab, 2, seed=12), history_len=STUDENT.seq_len)
    module = StudentModel(vocab, STUDENT).serving_module(POLICY).eval()
    eager = module(batch.sparse, batch.dense, batch.history)
    exported = torch.export.export(module, (batch.sparse, batch.dense, batch.history))
    assert torch.allclose(exported.module()(batch.sparse, batch.dense, batch.history), eager)
    assert eager.shape == (2,) and ((eager > 0) & (eager < 1)).all()
    state = {name for name in exported.state_dict}
    assert not any(name.startswith("aux_tower") for name in state)


def test_parameter_counts_split_embeddings_from_dense(vocab) -> None:
    counts = StudentModel(vocab, STUDENT).parameter_counts()
    tables = sum(vocab.size_of(name) for name in vocab.as_dict()) * STUDENT.embed_dim
    assert counts["embedding"] == tables
    assert counts["dense"] == counts["total"] - tables > 0
    assert np.isclose(counts["total"], sum(p.numel() for p in StudentModel(vocab, STUDENT).parameters()))


def test_attention_len_reads_old_events_only_through_the_counters(vocab) -> None:
    """Events older than attention_len are never embedded (no gradient reaches their item rows), but
    the parameter-free match counters still see them: a creator match there changes the output."""
    arch = STUDENT.model_copy(update={"seq_len": 12, "attention_len": 4})
    batch = frame_to_tensors(make_frame(vocab, 1, seed=21), history_len=12)
    old_item = 7
    history = torch.full((1, 12), 1, dtype=torch.long)
    history[0, 0] = old_item  # the oldest position: outside the 4-event attention window
    sparse = batch.sparse.clone()
    assert sparse[0, ITEM] != old_item  # the candidate is another item

    def item_grad(model: StudentModel) -> torch.Tensor:
        model.zero_grad()
        model(sparse, batch.dense, history).main_logit.sum().backward()
        return model.embedding.tables[ITEM].weight.grad[old_item]

    torch.manual_seed(0)
    short = StudentModel(vocab, arch)
    assert short.num_parameters() == StudentModel(vocab, STUDENT.model_copy(update={"seq_len": 12})).num_parameters()
    assert torch.count_nonzero(item_grad(short)) == 0
    torch.manual_seed(0)
    full = StudentModel(vocab, arch.model_copy(update={"attention_len": None}))
    assert torch.count_nonzero(item_grad(full)) > 0

    # The counters: make the old event share the candidate's creator and the output moves.
    short.eval()
    before = short(sparse, batch.dense, history).main_logit
    same_creator = [i for i in range(1, len(vocab.item_creator))
                    if vocab.item_creator[i] == int(sparse[0, CREATOR]) and i != int(sparse[0, ITEM])]
    history[0, 0] = same_creator[0]
    assert not torch.allclose(short(sparse, batch.dense, history).main_logit, before)


def test_attention_len_is_capped_by_the_history_read() -> None:
    assert StudentArch(seq_len=8, attention_len=20).attended_len == 8
    assert StudentArch(seq_len=20, attention_len=None).attended_len == 20
    assert StudentArch(seq_len=256, attention_len=20).attended_len == 20
