"""Serving export to ONNX, parity against PyTorch, and serving speed (latency, throughput).

The served module (the student's `serving_module(policy)`: backbone + main tower → calibrated click
probability; or the teacher, to compare its serving cost) is exported with `torch.onnx.export(...,
dynamo=True)` and a named input signature:

    sparse   (batch, N_SPARSE)  int64    SPARSE_FEATURES order
    dense    (batch, N_DENSE)   float32  DENSE_FEATURES order
    history  (batch, L)         int64    newest item last, left-padded with 0; L fixed at export

`batch` is dynamic (any size ≥ 1); L is the module's own history length. onnx/onnxruntime are the
`integrations` extra: imported only when used.
"""

import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recdistill_dagster.files import replacing

INPUT_NAMES = ("sparse", "dense", "history")
BATCH_DIM = "batch"
LATENCY_BATCH = 1  # one request
THROUGHPUT_BATCH = 512  # a ranking request's candidate set, or a micro-batch
WARMUP_CALLS = 3
TIMED_CALLS = 20
OPSET_VERSION = 18

ServingInputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # sparse, dense, history


class ExportError(RuntimeError):
    """The module could not be exported, or its export does not match PyTorch."""


def _check_inputs(example: ServingInputs) -> None:
    if len(example) != len(INPUT_NAMES):
        raise ExportError(f"serving inputs are {INPUT_NAMES}; got {len(example)} arrays")
    sizes = {name: array.shape[0] for name, array in zip(INPUT_NAMES, example, strict=True)}
    if len(set(sizes.values())) != 1:
        raise ExportError(f"serving inputs disagree on the batch size: {sizes}")
    if example[0].dtype != np.int64 or example[2].dtype != np.int64 or example[1].dtype != np.float32:
        raise ExportError("serving inputs must be sparse int64, dense float32, history int64; got "
                          f"{example[0].dtype}, {example[1].dtype}, {example[2].dtype}")


def export_onnx(module: nn.Module, example: ServingInputs, path: Path, output_name: str) -> Path:
    """Export `module` (eval mode, CPU) to `path` with a dynamic batch axis; the write is atomic.

    `example` needs at least 2 rows: torch.export specializes a dimension seen with size 1.
    """
    _check_inputs(example)
    if example[0].shape[0] < 2:
        raise ExportError("export needs an example batch of at least 2 rows (a size-1 batch would be fixed)")
    module = module.cpu().eval()
    batch = torch.export.Dim(BATCH_DIM, min=1)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example)
    with replacing(path) as temp, torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=list(INPUT_NAMES), output_names=[output_name],
            dynamic_shapes={name: {0: batch} for name in _forward_argument_names(module)},
            opset_version=OPSET_VERSION, verbose=False,
        )
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        program.save(str(temp))
    return path


def _forward_argument_names(module: nn.Module) -> tuple[str, ...]:
    """The forward's parameter names (dynamic_shapes is keyed by them), checked against INPUT_NAMES."""
    names = tuple(inspect.signature(module.forward).parameters)
    if names != INPUT_NAMES:
        raise ExportError(f"{type(module).__name__}.forward takes {names}; the serving signature is {INPUT_NAMES}")
    return names


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session; `threads` intra-op threads (default: as many as torch uses)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_predict(session: Any, inputs: ServingInputs) -> np.ndarray:
    _check_inputs(inputs)
    feeds = {name: np.ascontiguousarray(array) for name, array in zip(INPUT_NAMES, inputs, strict=True)}
    (output,) = session.run(None, feeds)
    return np.asarray(output)


def torch_predict(module: nn.Module, inputs: ServingInputs) -> np.ndarray:
    _check_inputs(inputs)
    with torch.inference_mode():
        output: torch.Tensor = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    return output.float().cpu().numpy()


def max_abs_difference(module: nn.Module, session: Any, inputs: ServingInputs) -> float:
    """Largest |PyTorch − onnxruntime| over the rows of `inputs`."""
    expected, actual = torch_predict(module, inputs), onnx_predict(session, inputs)
    if expected.shape != actual.shape:
        raise ExportError(f"output shapes differ: torch {expected.shape}, onnxruntime {actual.shape}")
    return float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64))))


@dataclass(frozen=True)
class ServingSpeed:
    """Median wall time of one call at batch 1 (latency) and rows per second at batch 512."""

    runtime: str
    latency_ms: float
    throughput_rows_per_s: float
    latency_batch: int = LATENCY_BATCH
    throughput_batch: int = THROUGHPUT_BATCH


def _median_seconds(call: Callable[[], object], warmup: int, timed: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rows(inputs: ServingInputs, n: int) -> ServingInputs:
    """The first n rows, repeated as needed (a day may have fewer rows than a throughput batch)."""
    index = np.arange(n) % inputs[0].shape[0]
    return (inputs[0][index], inputs[1][index], inputs[2][index])


def measure_serving(module: nn.Module, session: Any, inputs: ServingInputs, *, warmup: int = WARMUP_CALLS,
                    timed: int = TIMED_CALLS) -> dict[str, dict[str, float | int | str]]:
    """Latency (batch 1) and throughput (batch 512) of PyTorch and onnxruntime, as plain numbers:
    {"torch": {...}, "onnxruntime": {...}}, each a `ServingSpeed` as a dict."""
    single, batch = _rows(inputs, LATENCY_BATCH), _rows(inputs, THROUGHPUT_BATCH)
    module = module.cpu().eval()
    results: dict[str, dict[str, float | int | str]] = {}
    runners: dict[str, Callable[[ServingInputs], np.ndarray]] = {
        "torch": lambda x: torch_predict(module, x),
        "onnxruntime": lambda x: onnx_predict(session, x),
    }
    for runtime, run in runners.items():
        latency = _median_seconds(partial(run, single), warmup, timed)
        per_batch = _median_seconds(partial(run, batch), warmup, timed)
        results[runtime] = asdict(ServingSpeed(runtime, latency * 1e3, THROUGHPUT_BATCH / per_batch))
    return results
