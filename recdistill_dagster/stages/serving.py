"""Stage: the served models in ONNX (beside the pt2 program MLflow keeps), their parity and serving speed.

The distilled student's main tower is exported with its checkpoint (`export_served_student`); the
report step checks the stored .onnx against PyTorch on the evaluation day's rows and measures latency
(batch 1) and throughput (batch 512) of both runtimes for the student and for the teacher (exported
once per teacher snapshot, cached in the store like its evaluation scores). Exports go through a
temporary local file (what the exporter writes) into the artifact store, so S3 works as disk does.
"""

import tempfile
from datetime import date
from pathlib import Path

import polars as pl
import torch

from models.export import (
    WARMUP_CALLS,
    ServingInputs,
    export_onnx,
    max_abs_difference,
    measure_serving,
    onnx_session,
)
from models.features import frame_to_tensors
from recdistill_dagster import layout
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.report.schema import RuntimeSpeed, ServedExport
from recdistill_dagster.stages.context import StageContext
from recdistill_dagster.storage import Store

STUDENT_OUTPUT = "click_probability"
TEACHER_OUTPUT = "teacher_logit"
ONNX_FILE = "model.onnx"


def serving_inputs(frame: pl.DataFrame, history_len: int) -> ServingInputs:
    tensors = frame_to_tensors(frame, history_len=history_len)
    return (tensors.sparse.numpy(), tensors.dense.numpy(), tensors.history.numpy())


def export_to_store(store: Store, relative: str, module: torch.nn.Module, example: ServingInputs,
                    output_name: str) -> str:
    """Export `module` to ONNX and write it into the store (atomically, by the store's semantics)."""
    with tempfile.TemporaryDirectory(prefix="recdistill-onnx-") as folder:
        path = export_onnx(module, example, Path(folder) / ONNX_FILE, output_name)
        return store.write_bytes(relative, path.read_bytes())


def export_served_student(ctx: StageContext, student: str, partition: date, module: torch.nn.Module,
                          example: ServingInputs) -> str:
    """The day's served main tower as ONNX in the store; returns its URL."""
    return export_to_store(ctx.store, layout.student_serving_path(student, partition), module, example, STUDENT_OUTPUT)


def teacher_onnx(ctx: StageContext, module: torch.nn.Module, partition: date, snapshot_run: str,
                 example: ServingInputs) -> str:
    """The teacher snapshot's ONNX path in the store, exported on first use."""
    relative = layout.teacher_serving_path(partition, snapshot_run)
    if not ctx.store.exists(relative):
        export_to_store(ctx.store, relative, module, example, TEACHER_OUTPUT)
    return relative


def check_and_measure(ctx: StageContext, module: torch.nn.Module, relative: str, inputs: ServingInputs,
                      what: str) -> ServedExport:
    """Parity of the stored ONNX against `module` on `inputs`, then both runtimes' serving speed."""
    config = ctx.config.eval
    module = module.cpu().eval()
    with tempfile.TemporaryDirectory(prefix="recdistill-onnx-") as folder:
        path = Path(folder) / ONNX_FILE
        path.write_bytes(ctx.store.read_bytes(relative, what=f"{what} ONNX export"))
        session = onnx_session(path, threads=torch.get_num_threads())
    rows = min(config.onnx_parity_rows, inputs[0].shape[0])
    compared: ServingInputs = (inputs[0][:rows], inputs[1][:rows], inputs[2][:rows])
    difference = max_abs_difference(module, session, compared)
    if not difference <= config.onnx_tolerance:  # also catches NaN
        raise PipelineStepError(
            f"{what}: onnxruntime differs from PyTorch by {difference:.3g} (> eval.onnx_tolerance "
            f"{config.onnx_tolerance:g}) on {rows} evaluation rows; the ONNX at {ctx.store.url(relative)} must not "
            "serve; re-materialize the checkpoint that exported it"
        )
    speeds = measure_serving(module, session, inputs, warmup=WARMUP_CALLS, timed=config.serving_repeats)
    return ServedExport(
        onnx=ctx.store.url(relative), max_abs_diff=difference, rows_compared=rows,
        **{runtime: RuntimeSpeed(latency_ms=float(speed["latency_ms"]),
                                 throughput_rows_per_s=float(speed["throughput_rows_per_s"]))
           for runtime, speed in speeds.items()},
    )


def student_onnx_relative(ctx: StageContext, student: str, partition: date, consumer: str) -> str:
    relative = layout.student_serving_path(student, partition)
    if not ctx.store.exists(relative):
        raise PipelineStepError(
            f"{consumer}: no ONNX export of {student}'s served tower for {partition} at {ctx.store.url(relative)}; "
            f"re-materialize {student}/student_checkpoint {partition} (its step exports it)"
        )
    return relative

