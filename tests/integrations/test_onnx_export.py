"""ONNX serving export: the student's served tower and the teacher, onnxruntime against PyTorch.

Models have the default (demo) architecture on the tiny world's vocabulary and rows; weights are
the initialization (parity does not depend on training). Speed is reported, never asserted.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from models import StudentModel, TeacherModel, frame_to_tensors
from models.export import (
    INPUT_NAMES,
    LATENCY_BATCH,
    THROUGHPUT_BATCH,
    ExportError,
    ServingInputs,
    export_onnx,
    max_abs_difference,
    measure_serving,
    onnx_session,
)
from recdistill_dagster.config import PipelineConfig, load_config
from recdistill_dagster.data.source import make_source
from tests.integrations.conftest import Report

pytestmark = pytest.mark.integrations

PARITY = 1e-5  # issue 15: onnxruntime equals PyTorch to 1e-5
EXAMPLE_ROWS = 4
ARCH = load_config("demo")  # the architectures that serve in `make run`


@pytest.fixture(scope="module")
def world() -> tuple[PipelineConfig, object, object]:
    config = load_config("tiny")
    source = make_source(config)
    return config, source.vocab(), source.impressions(config.calendar.start_date)


def _inputs(frame: object, history_len: int) -> ServingInputs:
    tensors = frame_to_tensors(frame, history_len)  # type: ignore[arg-type]
    return tensors.sparse.numpy(), tensors.dense.numpy(), tensors.history.numpy()


def _served(world: tuple, role: str) -> tuple[nn.Module, ServingInputs, str]:
    _, vocab, frame = world
    torch.manual_seed(0)
    if role == "student":
        spec = ARCH.active_students[0]  # the ranking student
        student = StudentModel(vocab, spec.arch)
        return (student.serving_module(spec.sampling).eval(), _inputs(frame, spec.arch.seq_len),
                "click_probability")
    return TeacherModel(vocab, ARCH.teacher.arch).eval(), _inputs(frame, ARCH.teacher.arch.seq_len), "logit"


def _head(inputs: ServingInputs, n: int) -> ServingInputs:
    return inputs[0][:n], inputs[1][:n], inputs[2][:n]


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_onnx_export_matches_torch_and_reports_speed(world: tuple, role: str, tmp_path: Path,
                                                     report: Report) -> None:
    module, inputs, output = _served(world, role)
    path = export_onnx(module, _head(inputs, EXAMPLE_ROWS), tmp_path / f"{role}.onnx", output)
    assert [p.name for p in tmp_path.iterdir()] == [f"{role}.onnx"]  # atomic: no temp file left

    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES) and [o.name for o in graph.output] == [output]
    for given, array in zip(graph.input, inputs, strict=True):
        dims = given.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].HasField("dim_value"), f"{given.name}: batch axis is fixed"
        assert [d.dim_value for d in dims[1:]] == list(array.shape[1:]), given.name

    session = onnx_session(path)
    differences = {n: max_abs_difference(module, session, _head(inputs, n))
                   for n in (LATENCY_BATCH, 7, inputs[0].shape[0])}  # dynamic batch: 1, odd, a whole day
    assert max(differences.values()) <= PARITY, differences
    speed = measure_serving(module, session, inputs)
    for runtime in ("torch", "onnxruntime"):
        numbers = speed[runtime]
        assert numbers["latency_batch"] == LATENCY_BATCH and numbers["throughput_batch"] == THROUGHPUT_BATCH
        assert np.isfinite(numbers["latency_ms"]) and float(numbers["latency_ms"]) > 0
        assert np.isfinite(numbers["throughput_rows_per_s"]) and float(numbers["throughput_rows_per_s"]) > 0
    n_parameters = sum(p.numel() for p in module.parameters())
    report("onnx", f"{role} ({n_parameters:,} parameters): max |torch − onnxruntime| {max(differences.values()):.1e} "
                   f"over {inputs[0].shape[0]:,} rows; latency batch 1: torch {speed['torch']['latency_ms']:.2f} ms, "
                   f"onnxruntime {speed['onnxruntime']['latency_ms']:.2f} ms; throughput batch 512: torch "
                   f"{speed['torch']['throughput_rows_per_s']:,.0f} rows/s, onnxruntime "
                   f"{speed['onnxruntime']['throughput_rows_per_s']:,.0f} rows/s")


def test_export_refuses_bad_examples_and_signatures(world: tuple, tmp_path: Path) -> None:
    module, inputs, output = _served(world, "student")
    with pytest.raises(ExportError, match="at least 2 rows"):
        export_onnx(module, _head(inputs, 1), tmp_path / "one.onnx", output)
    with pytest.raises(ExportError, match="batch size"):
        export_onnx(module, (inputs[0][:2], inputs[1][:3], inputs[2][:2]), tmp_path / "ragged.onnx", output)
    with pytest.raises(ExportError, match="int64"):
        export_onnx(module, (inputs[0][:2].astype(np.int32), inputs[1][:2], inputs[2][:2]), tmp_path / "x.onnx",
                    output)

    class Renamed(nn.Module):
        def forward(self, ids: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
            return dense.sum(dim=1)

    with pytest.raises(ExportError, match="serving signature"):
        export_onnx(Renamed(), _head(inputs, 2), tmp_path / "renamed.onnx", output)
    assert list(tmp_path.iterdir()) == []
