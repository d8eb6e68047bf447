"""Checkpoints as bytes: state dicts + metadata, loadable with torch.load(weights_only=True)."""

import io
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not have the expected content."""


REQUIRED_KEYS = ("model", "optimizer", "meta")


def checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None, meta: dict[str, Any]) -> bytes:
    """`meta` must hold only str/int/float/bool/None/list/dict so weights_only loading accepts it."""
    buffer = io.BytesIO()
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "meta": meta,
    }
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_checkpoint_bytes(data: bytes) -> dict[str, Any]:
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # truncated zip, garbage bytes, disallowed globals
        raise CheckpointError(f"corrupted or unreadable checkpoint ({len(data)} bytes): {exc}") from exc
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise CheckpointError(f"checkpoint lacks the keys {REQUIRED_KEYS}")
    return payload


def restore(model: nn.Module, optimizer: torch.optim.Optimizer | None, payload: dict[str, Any]) -> None:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not fit the model: {exc}") from exc
    if optimizer is not None and payload.get("optimizer"):
        optimizer.load_state_dict(payload["optimizer"])
