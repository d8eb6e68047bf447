"""Teacher and student training under `torchrun --standalone --nproc_per_node=2` (DDP, gloo on CPU)
against one process.

Same seeds, same initialization, same data and batches: the two-rank teacher must record one logit
per trained sample with the same sample ids, snapshot id and steps, and equal the single-process
logits and weights within TOLERANCE (the only difference is the floating-point order of the gradient
sums); the two-rank distilled student (both towers, masked distillation loss) must equal its
single-process run likewise. Also launched through Dagster Pipes, as an asset would.
"""

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from dagster import AssetExecutionContext, DagsterInstance, PipesSubprocessClient, asset, materialize

from models.checkpoint import load_checkpoint_bytes
from models.student import StudentModel
from models.teacher import TeacherModel
from models.training import make_optimizer, train_student, train_teacher
from recdistill_dagster.config import PipelineConfig, load_config
from recdistill_dagster.data.join import join_student_dataset
from recdistill_dagster.data.sampling import sample_stream
from recdistill_dagster.data.schema import validate_teacher_logits
from recdistill_dagster.data.source import make_source
from recdistill_dagster.ddp import (
    StudentDDPJob,
    TeacherDDPJob,
    TrainingDay,
    launch,
    torchrun_command,
    write_vocab,
)
from tests.integrations.conftest import Report

pytestmark = pytest.mark.integrations

WORLD = 2
TOLERANCE = 1e-4  # max |DDP − single process| over logits and weights; measured ~1e-6
EPOCHS = 2
BATCH_SIZE = 250  # 2 days of ~1,500 rows: the tail batches do not split evenly on purpose
STUDENT_BATCH_SIZE = 99  # the student stream is smaller; odd, so ranks get unequal shares


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineConfig, Path, list[TrainingDay]]:
    config = load_config("tiny")
    source = make_source(config)
    folder = tmp_path_factory.mktemp("ddp-inputs")
    days = []
    for day in config.calendar.batch_window():
        path = folder / f"teacher-{day}.parquet"
        sample_stream(source.impressions(day), config.sampling.teacher, seed=config.sampling.seed).write_parquet(path)
        days.append(TrainingDay(day=day, samples_path=str(path)))
    return config, write_vocab(source.vocab(), folder / "vocab.npz"), days


def _job(config: PipelineConfig, vocab: Path, days: list[TrainingDay], output: Path) -> TeacherDDPJob:
    return TeacherDDPJob(arch=config.teacher.arch, optim=config.teacher.optim, vocab_path=str(vocab), days=days,
                         epochs=EPOCHS, batch_size=BATCH_SIZE, record_epoch="first",
                         snapshot_id="teacher@2026-01-02#ddptest0", start_step=0, seed=7, output_dir=str(output),
                         meta={"partition": "2026-01-02"}, log_every=10)


def _common(job: TeacherDDPJob | StudentDDPJob) -> dict:
    return dict(epochs=job.epochs, batch_size=job.batch_size, start_step=job.start_step, seed=job.seed,
                device=torch.device("cpu"), grad_clip=job.optim.grad_clip, history_len=job.arch.seq_len)


def _loaders(job: TeacherDDPJob | StudentDDPJob) -> list:
    return [(d.day, lambda path=d.samples_path: pl.read_parquet(path)) for d in job.days]


@pytest.fixture(scope="module")
def reference_teacher(job_inputs: tuple, tmp_path_factory: pytest.TempPathFactory,
                      ) -> tuple[TeacherModel, dict[date, pl.DataFrame]]:
    """The same teacher job in this process, one rank, no DDP."""
    config, vocab, days = job_inputs
    job = _job(config, vocab, days, tmp_path_factory.mktemp("unused"))
    torch.manual_seed(job.seed)
    model = TeacherModel(make_source(config).vocab(), job.arch)
    _, recorded = train_teacher(model, make_optimizer(model, job.optim), _loaders(job), record_epoch=job.record_epoch,
                                snapshot_id=job.snapshot_id, **_common(job))
    return model, recorded


def _max_weight_difference(state: dict[str, torch.Tensor], model: torch.nn.Module) -> float:
    return max(float((state[name] - value).abs().max()) for name, value in model.state_dict().items())


def test_ddp_teacher_equals_single_process(job_inputs: tuple, reference_teacher: tuple, tmp_path: Path,
                                           report: Report) -> None:
    config, vocab, days = job_inputs
    job = _job(config, vocab, days, tmp_path / "out")
    result = launch(job, tmp_path / "job.json", WORLD)
    assert (result["world_size"], result["backend"]) == (WORLD, "gloo")
    reference_model, reference_logits = reference_teacher

    worst_logit = 0.0
    for training_day in days:
        ours = pl.read_parquet(result["logits"][training_day.day.isoformat()])
        validate_teacher_logits(ours, partition=f"ddp {training_day.day}")
        samples = pl.read_parquet(training_day.samples_path)
        # One logit per trained sample, every rank's rows in one partition, in the single-process order.
        assert ours["sample_id"].to_list() == reference_logits[training_day.day]["sample_id"].to_list()
        assert sorted(ours["sample_id"].to_list()) == sorted(samples["sample_id"].to_list())
        expected = reference_logits[training_day.day]
        assert ours["recorded_step"].to_list() == expected["recorded_step"].to_list()
        assert (ours["teacher_snapshot"] == job.snapshot_id).all()
        worst_logit = max(worst_logit, float(np.abs(ours["teacher_logit"].to_numpy()
                                                    - expected["teacher_logit"].to_numpy()).max()))
    payload = load_checkpoint_bytes(Path(result["checkpoint"]).read_bytes())
    assert payload["meta"]["world_size"] == WORLD and payload["meta"]["snapshot_id"] == job.snapshot_id
    worst_weight = _max_weight_difference(payload["model"], reference_model)
    assert worst_logit <= TOLERANCE and worst_weight <= TOLERANCE, (worst_logit, worst_weight)
    assert result["n_logits"] == sum(pl.read_parquet(d.samples_path).height for d in days)
    report("ddp", f"torchrun --standalone --nproc_per_node={WORLD} (gloo): {result['n_logits']:,} recorded logits in "
                  f"{result['stats']['steps']} steps; max |DDP − single process| logits {worst_logit:.1e}, "
                  f"weights {worst_weight:.1e} (tolerance {TOLERANCE:.0e})")


def test_ddp_teacher_launched_through_dagster_pipes(job_inputs: tuple, tmp_path: Path, report: Report) -> None:
    config, vocab, days = job_inputs
    job = _job(config, vocab, days, tmp_path / "out")
    job_path = tmp_path / "job.json"
    job_path.write_text(job.model_dump_json())

    @asset(name="teacher_ddp")
    def teacher_ddp(context: AssetExecutionContext, pipes: PipesSubprocessClient):
        return pipes.run(command=torchrun_command(job_path, WORLD), context=context).get_materialize_result()

    instance = DagsterInstance.ephemeral()
    outcome = materialize([teacher_ddp], resources={"pipes": PipesSubprocessClient()}, instance=instance,
                          raise_on_error=False)
    assert outcome.success
    (materialization,) = outcome.asset_materializations_for_node("teacher_ddp")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["teacher_snapshot"] == job.snapshot_id and metadata["world_size"] == WORLD
    assert metadata["n_logits"] == sum(pl.read_parquet(d.samples_path).height for d in days)
    logged = [entry.user_message for entry in instance.all_logs(outcome.run_id)
              if "teacher ddp step" in entry.user_message]
    assert logged, "rank 0's progress did not reach the run log through Pipes"
    report("ddp", f"launched through Dagster Pipes (PipesSubprocessClient): materialization metadata "
                  f"{ {k: metadata[k] for k in ('teacher_snapshot', 'world_size', 'n_logits')} }, "
                  f"{len(logged)} progress lines from rank 0 in the run log")


def test_ddp_distilled_student_equals_single_process(job_inputs: tuple, reference_teacher: tuple, tmp_path: Path,
                                                     report: Report) -> None:
    config, vocab, teacher_days = job_inputs
    source = make_source(config)
    spec = config.active_students[0]
    days = []
    for training_day in teacher_days:  # the student dataset: student rows ⟕ the teacher's recorded logits
        students = sample_stream(source.impressions(training_day.day), spec.sampling,
                                 seed=config.sampling.seed)
        dataset = join_student_dataset(students.lazy(), reference_teacher[1][training_day.day].lazy()).collect()
        path = tmp_path / f"student-dataset-{training_day.day}.parquet"
        dataset.write_parquet(path)
        days.append(TrainingDay(day=training_day.day, samples_path=str(path)))
    job = StudentDDPJob(arch=spec.arch, optim=spec.optim, distill=spec.distill,
                        vocab_path=str(vocab), days=days, epochs=EPOCHS, batch_size=STUDENT_BATCH_SIZE,
                        snapshot_id="student@2026-01-02#ddptest0", seed=11, output_dir=str(tmp_path / "out"))
    result = launch(job, tmp_path / "job.json", WORLD)
    torch.manual_seed(job.seed)
    reference = StudentModel(source.vocab(), job.arch)
    stats = train_student(reference, make_optimizer(reference, job.optim), _loaders(job), distill=job.distill,
                          towers=job.arch.towers, **_common(job))
    assert result["stats"]["steps"] == stats.steps and result["n_logits"] == 0
    assert result["stats"]["distill_matched_fraction"] == pytest.approx(stats.distill_matched_fraction)
    worst = _max_weight_difference(load_checkpoint_bytes(Path(result["checkpoint"]).read_bytes())["model"], reference)
    assert worst <= TOLERANCE, worst
    assert result["stats"]["mean_loss"] == pytest.approx(stats.mean_loss, abs=TOLERANCE)
    report("ddp", f"student ({job.arch.towers}, α·distillation) under torchrun ({WORLD} ranks): {stats.steps} steps; "
                  f"max |DDP − single process| weights {worst:.1e}, mean loss {result['stats']['mean_loss']:.5f} vs "
                  f"{stats.mean_loss:.5f}")
