"""Device resolution never silently falls back."""

import pytest
import torch

from models.device import configure_threads, resolve_device, seed_everything


def test_auto_and_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without CUDA")
def test_cuda_without_a_gpu_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")


def test_threads_and_seeds() -> None:
    before = torch.get_num_threads()
    configure_threads(None)
    assert torch.get_num_threads() == before
    configure_threads(1)
    assert torch.get_num_threads() == 1
    configure_threads(before)
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))
