"""Checkpoints as bytes: state dicts + metadata, readable with torch.load(weights_only=True).

weights_only loading never unpickles arbitrary objects, so a checkpoint from storage cannot run
code; the price is that `meta` may hold only plain JSON-like values, checked when saving (a date
or a numpy scalar would otherwise only fail at load time, days later).
"""

import io
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not have the expected content."""


REQUIRED_KEYS = ("model", "optimizer", "meta")


def _check_meta(value: Any, path: str = "meta") -> None:
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_meta(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{path} has a non-string key {key!r}")
            _check_meta(item, f"{path}.{key}")
        return
    raise CheckpointError(
        f"{path} is a {type(value).__name__}; checkpoint metadata may hold only "
        "str/int/float/bool/None/list/dict (convert dates with .isoformat())"
    )


def checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None,
                     meta: dict[str, Any]) -> bytes:
    """torch.save of {"model": state_dict (on CPU), "optimizer": state_dict or {}, "meta": meta}."""
    _check_meta(meta)
    buffer = io.BytesIO()
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "meta": meta,
    }
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_checkpoint_bytes(data: bytes) -> dict[str, Any]:
    """The payload dict; CheckpointError for corrupted, truncated or foreign bytes."""
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # truncated zip, garbage bytes, disallowed globals
        raise CheckpointError(f"corrupted or unreadable checkpoint ({len(data)} bytes): {exc}") from exc
    if not isinstance(payload, dict):
        kind = type(payload).__name__
        raise CheckpointError(f"checkpoint holds a {kind}, expected a dict with {REQUIRED_KEYS}")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint lacks the keys {missing} (expected {REQUIRED_KEYS})")
    if not isinstance(payload["model"], dict) or not isinstance(payload["meta"], dict):
        raise CheckpointError("checkpoint 'model' and 'meta' must be dicts")
    return payload


def restore(model: nn.Module, optimizer: torch.optim.Optimizer | None, payload: dict[str, Any]) -> None:
    """Load weights (strictly: every key, every shape) and, when given and saved, optimizer state."""
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not fit the model: {exc}") from exc
    if optimizer is not None and payload.get("optimizer"):
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint optimizer state does not fit the optimizer: {exc}") from exc
