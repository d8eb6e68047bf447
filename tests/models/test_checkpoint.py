"""Checkpoints: round trip, corruption and misuse give a clear CheckpointError."""

import io
from datetime import date

import pytest
import torch

from models.checkpoint import CheckpointError, checkpoint_bytes, load_checkpoint_bytes, restore
from models.student import StudentModel
from models.training import make_optimizer
from recdistill_dagster.config import OptimConfig, StudentArch

STUDENT = StudentArch(embed_dim=4, backbone_hidden=(16,), tower_hidden=8, seq_len=4)


def _trained_once(vocab) -> tuple[StudentModel, torch.optim.Optimizer]:
    model = StudentModel(vocab, STUDENT)
    optimizer = make_optimizer(model, OptimConfig())
    sparse = torch.zeros(2, 7, dtype=torch.long)
    out = model(sparse, torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.long))
    (out.main_logit.sum() + out.aux_logit.sum()).backward()
    optimizer.step()  # so the optimizer has state worth saving
    return model, optimizer


def test_round_trip_restores_weights_and_optimizer(vocab) -> None:
    model, optimizer = _trained_once(vocab)
    meta = {"snapshot_id": "student@x", "days": ["2026-01-01"], "parent": None, "step": 3,
            "nested": {"a": 1.5}}
    payload = load_checkpoint_bytes(checkpoint_bytes(model, optimizer, meta))
    assert payload["meta"] == meta
    clone = StudentModel(vocab, STUDENT)
    clone_optimizer = make_optimizer(clone, OptimConfig())
    restore(clone, clone_optimizer, payload)
    for a, b in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert clone_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_corrupted_or_foreign_bytes_are_rejected(vocab) -> None:
    model, optimizer = _trained_once(vocab)
    data = checkpoint_bytes(model, optimizer, {})
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint_bytes(b"not a checkpoint at all")
    buffer = io.BytesIO()
    torch.save({"model": {}}, buffer)
    with pytest.raises(CheckpointError, match="lacks the keys"):
        load_checkpoint_bytes(buffer.getvalue())


def test_misuse_is_reported_clearly(vocab) -> None:
    model, optimizer = _trained_once(vocab)
    with pytest.raises(CheckpointError, match=r"meta\.day is a date"):
        checkpoint_bytes(model, optimizer, {"day": date(2026, 1, 1)})
    payload = load_checkpoint_bytes(checkpoint_bytes(model, optimizer, {}))
    with pytest.raises(CheckpointError, match="does not fit"):
        restore(StudentModel(vocab, STUDENT.model_copy(update={"embed_dim": 6})), None, payload)
