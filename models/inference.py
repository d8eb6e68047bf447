"""Scoring: raw logits of a teacher or a student in eval mode, in row order, batch by batch."""

from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl
import torch
from torch import nn

from models.features import FeatureTensors, frame_to_tensors


@runtime_checkable
class TowerLogits(Protocol):
    """A student's output (models.student.StudentOutput), named here so scoring a teacher does not
    depend on the student's code."""

    main_logit: torch.Tensor  # (B,)
    aux_logit: torch.Tensor | None  # (B,) or None


def predict_logits(model: nn.Module, frame: pl.DataFrame, *, history_len: int, batch_size: int,
                   device: torch.device) -> dict[str, np.ndarray]:
    """Raw logits in eval mode, in row order: {"logit"} for a teacher, {"main", "aux"?} for a student.

    An empty frame still runs one empty batch, so the keys are the model's own.
    """
    return predict_tensors(model, frame_to_tensors(frame, history_len, compact_history=True),
                           batch_size=batch_size, device=device)


@torch.inference_mode()
def predict_tensors(model: nn.Module, tensors: FeatureTensors, *, batch_size: int,
                    device: torch.device) -> dict[str, np.ndarray]:
    """`predict_logits` on rows already converted (one conversion can serve several models: a model reads
    the newest `seq_len` columns of a longer history)."""
    was_training = model.training
    model.eval()
    outputs: dict[str, list[np.ndarray]] = {}
    try:
        for idx in torch.arange(len(tensors)).split(batch_size) or (torch.arange(0),):
            batch = tensors.slice(idx).to(device)
            out = model(batch.sparse, batch.dense, batch.history)
            if isinstance(out, TowerLogits):
                outputs.setdefault("main", []).append(out.main_logit.float().cpu().numpy())
                if out.aux_logit is not None:
                    outputs.setdefault("aux", []).append(out.aux_logit.float().cpu().numpy())
            else:
                outputs.setdefault("logit", []).append(out.float().cpu().numpy())
    finally:
        model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in outputs.items()}
