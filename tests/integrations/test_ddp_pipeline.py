"""The pipeline's teacher and student assets under `torchrun` DDP, selected by configuration, against one process.

Two state folders, the same `tiny` world: one with `runtime.distributed.nproc_per_node: 2` (the asset launches
torchrun through Dagster Pipes, gloo on CPU), one with the default (in-process). The batch partition and one
streaming day (continuing from the batch snapshot) are materialized by both (the teacher, and one student's
dataset, distilled and baseline checkpoints, with `runtime.distributed.students`); the recorded logits of every
rank must land in the same partition with the same contract, and everything equal the single process's within
the tolerances.
"""

import io
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch
from dagster import AssetKey, DagsterInstance

from recdistill_dagster import layout
from recdistill_dagster.config import ConfigError, load_config
from recdistill_dagster.data.schema import validate_teacher_logits
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.graph import TEACHER_CHECKPOINT, TEACHER_LOGITS
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.storage import ArtifactStore
from tests.integrations.conftest import Report

pytestmark = pytest.mark.integrations

PROFILE = "tiny"
WORLD = 2
LOGIT_TOLERANCE = 1e-4  # max |DDP − one process| of the recorded logits (measured 9.5e-7)
# Weights: Adam normalizes each gradient, so the floating-point order of the gradient sums moves a weight by up
# to a small fraction of the learning rate (0.01 here) over the batch phase and a streaming day (measured 8.7e-5).
WEIGHT_TOLERANCE = 5e-4
COMMON = "calendar: {streaming_days: 1}\n"
DISTRIBUTED = COMMON + f"runtime: {{distributed: {{nproc_per_node: {WORLD}, students: true}}}}\n"
STUDENT = "ranker"
KEYS = (TEACHER_CHECKPOINT, TEACHER_LOGITS, f"{STUDENT}/student_dataset", f"{STUDENT}/student_checkpoint",
        f"{STUDENT}/baseline_checkpoint")
SELECTION = [AssetKey.from_user_string(key) for key in KEYS]


class TeacherRun:
    def __init__(self, home: Path, overrides: str) -> None:
        home.mkdir(parents=True)
        config_file = home / "overrides.yaml"
        config_file.write_text(overrides)
        self.home = home
        self.config = load_config(PROFILE, config_file)
        self.defs = build_definitions(PROFILE, home / "state", str(config_file))
        self.store = ArtifactStore(str(home / "state"))
        self.instance = DagsterInstance.ephemeral()
        self.logs: list[str] = []

    def materialize(self) -> None:
        data = self.defs.resolve_job_def(SAMPLE_STREAMS_JOB)
        for day in self.config.calendar.data_days():
            assert data.execute_in_process(partition_key=day.isoformat(), instance=self.instance).success
        training = self.defs.resolve_job_def(DAILY_TRAINING_JOB)
        for day in self.config.calendar.training_days():
            result = training.execute_in_process(partition_key=day.isoformat(), instance=self.instance,
                                                 asset_selection=SELECTION, raise_on_error=False)
            assert result.success, [str(e.message) for e in result.all_events if e.is_step_failure]
            self.logs += [entry.user_message for entry in self.instance.all_logs(result.run_id)]

    def checkpoint(self, partition: date, relative: str | None = None) -> dict:
        data = self.store.read_bytes(relative or layout.teacher_checkpoint_path(partition))
        payload: dict = torch.load(io.BytesIO(data), weights_only=True)
        return payload


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[TeacherRun, TeacherRun]:
    folder = tmp_path_factory.mktemp("ddp-pipeline")
    single, distributed = TeacherRun(folder / "single", COMMON), TeacherRun(folder / "ddp", DISTRIBUTED)
    single.materialize()
    distributed.materialize()
    return single, distributed


def test_ddp_teacher_asset_equals_the_in_process_asset(runs: tuple[TeacherRun, TeacherRun], report: Report) -> None:
    single, distributed = runs
    assert distributed.config.runtime.distributed.nproc_per_node == WORLD
    worst_logit = worst_weight = 0.0
    n_logits = 0
    registry = SnapshotRegistry(distributed.store)
    for partition in distributed.config.calendar.training_days():
        ours, theirs = distributed.checkpoint(partition), single.checkpoint(partition)
        assert ours["meta"]["distributed"] == {"world_size": WORLD, "backend": "gloo"}
        assert "distributed" not in theirs["meta"]
        assert ours["meta"]["global_step"] == theirs["meta"]["global_step"]
        snapshot = ours["meta"]["snapshot_id"]
        record = registry.get(snapshot)
        assert record is not None and record.status == "good", record
        for name, value in theirs["model"].items():
            worst_weight = max(worst_weight, float((ours["model"][name] - value).abs().max()))
        for day in ours["meta"]["trained_days"]:
            relative = layout.teacher_logits_path(partition, date.fromisoformat(day))
            frame, reference = distributed.store.read_parquet(relative), single.store.read_parquet(relative)
            validate_teacher_logits(frame, partition=f"{partition} (day {day})")  # the same contract
            assert (frame["teacher_snapshot"] == snapshot).all()
            assert frame["sample_id"].to_list() == reference["sample_id"].to_list()  # every rank's rows, in order
            assert frame["recorded_step"].to_list() == reference["recorded_step"].to_list()
            trained = distributed.store.read_parquet(layout.samples_path("teacher", date.fromisoformat(day)))
            assert frame.height == trained.height and frame["sample_id"].n_unique() == frame.height
            worst_logit = max(worst_logit, float(np.abs(frame["teacher_logit"].to_numpy()
                                                        - reference["teacher_logit"].to_numpy()).max()))
            n_logits += frame.height
    assert worst_logit <= LOGIT_TOLERANCE and worst_weight <= WEIGHT_TOLERANCE, (worst_logit, worst_weight)
    piped = [line for line in distributed.logs if "teacher ddp step" in line or "teacher ddp done" in line]
    assert piped, "rank 0 reported nothing through Dagster Pipes"
    assert not [line for line in single.logs if "ddp" in line]
    days = distributed.config.calendar.training_days()
    report("ddp", f"pipeline teacher asset with runtime.distributed.nproc_per_node={WORLD} (torchrun through Dagster "
                  f"Pipes, gloo), partitions {days[0]}..{days[-1]}: {n_logits:,} recorded logits from every rank in "
                  f"the teacher_logits partitions, contract validated; max |DDP − in-process asset| logits "
                  f"{worst_logit:.1e} (tolerance {LOGIT_TOLERANCE:.0e}), weights {worst_weight:.1e} (tolerance "
                  f"{WEIGHT_TOLERANCE:.0e}); {len(piped)} lines "
                  "from rank 0 in the run log")


def test_ddp_student_assets_equal_the_in_process_assets(runs: tuple[TeacherRun, TeacherRun], report: Report) -> None:
    single, distributed = runs
    worst = {"distilled": 0.0, "baseline": 0.0}
    for partition in distributed.config.calendar.training_days():
        for variant in worst:
            relative = layout.student_checkpoint_path(STUDENT, variant, partition)  # type: ignore[arg-type]
            ours, theirs = distributed.checkpoint(partition, relative), single.checkpoint(partition, relative)
            assert ours["meta"]["distributed"] == {"world_size": WORLD, "backend": "gloo"}
            assert ours["meta"]["global_step"] == theirs["meta"]["global_step"]
            assert ours["meta"]["distilled"] == theirs["meta"]["distilled"]
            for name, value in theirs["model"].items():
                worst[variant] = max(worst[variant], float((ours["model"][name] - value).abs().max()))
        assert distributed.store.exists(layout.student_serving_path(STUDENT, partition))  # the ONNX export too
    assert max(worst.values()) <= WEIGHT_TOLERANCE, worst
    report("ddp", f"pipeline {STUDENT} distilled and baseline assets with runtime.distributed.students (torchrun "
                  f"through Pipes): max |DDP − in-process| weights distilled {worst['distilled']:.1e}, baseline "
                  f"{worst['baseline']:.1e} (tolerance {WEIGHT_TOLERANCE:.0e}); served tower exported to ONNX")


def test_bad_distributed_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("runtime: {distributed: {nproc_per_node: 0}}\n")
    with pytest.raises(ConfigError, match=r"runtime\.distributed\.nproc_per_node"):
        load_config(PROFILE, bad)
