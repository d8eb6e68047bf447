"""Device, threads and seeding."""

import random

import numpy as np
import torch


def resolve_device(setting: str) -> torch.device:
    """"auto" picks CUDA when present; asking for "cuda" without it is an error, not a fallback."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(setting)


def configure_threads(n_threads: int | None) -> None:
    if n_threads is not None:
        torch.set_num_threads(n_threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
