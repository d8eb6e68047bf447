"""Scoring: raw logits of a teacher or a student in eval mode, in row order, batch by batch."""

import numpy as np
import polars as pl
import torch
from torch import nn

from models.features import frame_to_tensors
from models.student import StudentModel, StudentOutput


@torch.no_grad()
def predict_logits(model: nn.Module, frame: pl.DataFrame, *, history_len: int, batch_size: int,
                   device: torch.device) -> dict[str, np.ndarray]:
    """Raw logits in eval mode, in row order: {"logit"} for a teacher, {"main", "aux"?} for a student."""
    was_training = model.training
    model.eval()
    tensors = frame_to_tensors(frame, history_len, compact_history=True)
    outputs: dict[str, list[np.ndarray]] = {}
    try:
        for idx in torch.arange(len(tensors)).split(batch_size):
            batch = tensors.slice(idx).to(device)
            out = model(batch.sparse, batch.dense, batch.history)
            if isinstance(out, StudentOutput):
                outputs.setdefault("main", []).append(out.main_logit.float().cpu().numpy())
                if out.aux_logit is not None:
                    outputs.setdefault("aux", []).append(out.aux_logit.float().cpu().numpy())
            else:
                outputs.setdefault("logit", []).append(out.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not outputs:  # an empty frame: the keys the model would produce, with no rows
        empty = np.zeros(0, dtype=np.float32)
        if isinstance(model, StudentModel):
            return {"main": empty, **({"aux": empty} if model.aux_tower is not None else {})}
        return {"logit": empty}
    return {name: np.concatenate(parts) for name, parts in outputs.items()}
