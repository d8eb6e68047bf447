"""Device selection, CPU threads and seeding."""

import random

import numpy as np
import torch


def resolve_device(setting: str) -> torch.device:
    """"auto" → CUDA when present, else CPU. Asking for "cuda" without it is an error, never a fallback."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if setting not in ("cpu", "cuda"):
        raise ValueError(f"unknown device setting {setting!r}; expected 'auto', 'cpu' or 'cuda'")
    return torch.device(setting)


def configure_threads(n: int | None) -> None:
    """Intra-op CPU threads; None leaves torch's default (one per core)."""
    if n is not None:
        if n < 1:
            raise ValueError(f"thread count must be >= 1, got {n}")
        torch.set_num_threads(n)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
