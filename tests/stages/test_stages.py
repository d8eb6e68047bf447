"""The stage functions called directly (no Dagster, no MLflow) on the `tiny` profile, over an in-memory
store: each stage's outputs, lineage and errors."""

import uuid
from dataclasses import replace
from datetime import date

import numpy as np
import polars as pl
import pytest
import torch

from recdistill_dagster import layout
from recdistill_dagster.config import PipelineConfig, load_config
from recdistill_dagster.data.source import make_source
from recdistill_dagster.errors import PipelineStepError
from recdistill_dagster.graph import TEACHER_CHECKPOINT, partition_ref
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.stages.chain import load_checkpoint
from recdistill_dagster.stages.context import RunIdentity, StageContext
from recdistill_dagster.stages.dataset import build_student_dataset, read_manifest
from recdistill_dagster.stages.evaluation import evaluate_partition
from recdistill_dagster.stages.promotion import promotion_checks, served_auc
from recdistill_dagster.stages.samples import materialize_sample_streams
from recdistill_dagster.stages.student import chain_of, load_student, train_student_partition
from recdistill_dagster.stages.teacher import train_teacher_partition
from recdistill_dagster.storage import ArtifactStore

CONFIG = load_config("tiny")
CALENDAR = CONFIG.calendar
BATCH, FIRST_STREAMING = CALENDAR.training_days()[:2]
RANKER, PRERANK = CONFIG.active_students


def context(config: PipelineConfig = CONFIG, run: str = "run00000") -> StageContext:
    store = ArtifactStore(f"memory://stages-{uuid.uuid4().hex}")
    return StageContext(config=config, store=store, source=make_source(config), identity=RunIdentity(run, None))


@pytest.fixture(scope="module")
def ctx() -> StageContext:
    """The sample streams of every data day up to the first streaming day's evaluation day."""
    ctx = context()
    for day in CALENDAR.data_days()[: CALENDAR.batch_days + 2]:
        materialize_sample_streams(ctx, day)
    return ctx


@pytest.fixture(scope="module")
def batch(ctx: StageContext) -> StageContext:
    """The batch partition trained end to end: teacher, both students' datasets and checkpoints, reports."""
    train_teacher_partition(ctx, BATCH)
    for student in CONFIG.active_students:
        build_student_dataset(ctx, student, BATCH)
        for variant in ("distilled", "baseline"):
            train_student_partition(ctx, student, BATCH, variant)  # type: ignore[arg-type]
    return ctx


def test_sample_streams_students_are_subsets_of_the_teacher(ctx: StageContext) -> None:
    day = CALENDAR.start_date
    frames = {stream: ctx.store.read_parquet(path) for stream, path in (
        ("eval", layout.samples_path("eval", day)), ("teacher", layout.samples_path("teacher", day)),
        *((s.name, layout.student_samples_path(s.name, day)) for s in CONFIG.active_students))}
    teacher_ids = set(frames["teacher"]["sample_id"].to_list())
    assert frames["eval"].height == CONFIG.data.impressions_per_day
    for student in CONFIG.active_students:
        ids = set(frames[student.name]["sample_id"].to_list())
        assert ids and ids <= teacher_ids
        assert float(frames[student.name]["r_s"][0]) == pytest.approx(student.sampling.r_s)
    assert frames[PRERANK.name].height < frames[RANKER.name].height  # its sparser policy


def test_missing_data_day_is_an_outage_error() -> None:
    config = load_config("tiny", overrides={"faults": {"missing_data_days": [CALENDAR.start_date.isoformat()]}})
    with pytest.raises(PipelineStepError, match="have not arrived"):
        materialize_sample_streams(context(config), CALENDAR.start_date)


def test_teacher_records_one_logit_per_trained_sample_and_registers_the_snapshot(batch: StageContext) -> None:
    registry = SnapshotRegistry(batch.store)
    (record,) = registry.for_partition(BATCH)
    assert record.status == "good" and record.attempt == 1 and record.snapshot_id == f"teacher@{BATCH}#run00000"
    for day in CALENDAR.batch_window():
        logits = batch.store.read_parquet(layout.teacher_logits_path(BATCH, day))
        samples = batch.store.read_parquet(layout.samples_path("teacher", day))
        assert logits["sample_id"].sort().equals(samples["sample_id"].sort())
        assert logits["teacher_logit"].is_finite().all()
        assert set(logits["teacher_snapshot"]) == {record.snapshot_id}


def test_dataset_manifest_and_full_coverage(batch: StageContext) -> None:
    manifest = read_manifest(batch, RANKER, BATCH, "test")
    assert manifest.stats["coverage"] == pytest.approx(1.0)
    assert manifest.provenance.teacher_snapshots == [f"teacher@{BATCH}#run00000"]
    assert manifest.provenance.inputs == {partition_ref("teacher_logits", BATCH): f"teacher@{BATCH}#run00000"}
    rows = sum(batch.store.read_parquet(layout.student_samples_path(RANKER.name, d)).height
               for d in CALENDAR.batch_window())
    assert manifest.stats["n_rows"] == rows


def test_students_continue_their_own_chains(batch: StageContext) -> None:
    day_ctx = replace(batch, identity=RunIdentity("run11111"))
    train_teacher_partition(day_ctx, FIRST_STREAMING)
    for student in CONFIG.active_students:
        build_student_dataset(day_ctx, student, FIRST_STREAMING)
        result = train_student_partition(day_ctx, student, FIRST_STREAMING, "distilled")
        assert result.parent_snapshot == f"{student.name}/distilled@{BATCH}#run00000"
        assert result.phase == "streaming" and result.distilled
        assert result.provenance.inputs[partition_ref(f"{student.name}/student_checkpoint", BATCH)] == \
            result.parent_snapshot
        baseline = train_student_partition(day_ctx, student, FIRST_STREAMING, "baseline")
        assert baseline.provenance.teacher_snapshots == [] and not baseline.distilled


def test_reports_cumulate_from_the_previous_day(batch: StageContext) -> None:
    first = evaluate_partition(batch, RANKER, BATCH).report
    assert first.cumulative.days == [BATCH.isoformat()]
    assert first.daily.n_eval == CONFIG.data.impressions_per_day
    assert first.parameters.served < first.parameters.student < first.parameters.teacher
    assert first.serving.student_us > 0 and first.serving.teacher_us > 0
    # The teacher's eval scores are stored once per snapshot and reused by the other student's report.
    scores = batch.store.list(f"eval_scores/teacher/{BATCH}")
    evaluate_partition(batch, PRERANK, BATCH)
    assert batch.store.list(f"eval_scores/teacher/{BATCH}") == scores


def test_report_refuses_to_skip_a_day(ctx: StageContext) -> None:
    with pytest.raises(PipelineStepError, match=r"has not been materialized|missing"):
        evaluate_partition(ctx, RANKER, FIRST_STREAMING + (FIRST_STREAMING - BATCH))


def test_unusable_teacher_logits_never_reach_a_dataset() -> None:
    small = load_config("tiny", overrides={"calendar": {"batch_days": 1},
                                           "teacher": {"optim": {"batch_phase_epochs": 1}}})
    isolated = context(small)
    materialize_sample_streams(isolated, small.calendar.start_date)
    batch_day = small.calendar.batch_end
    result = train_teacher_partition(isolated, batch_day)
    build_student_dataset(isolated, RANKER, batch_day)
    SnapshotRegistry(isolated.store).mark_bad(result.snapshot_id, reason="drill", detected_by="test")
    with pytest.raises(PipelineStepError, match=r"unusable: teacher@.* is bad \(drill\)"):
        build_student_dataset(isolated, RANKER, batch_day)
    # The dataset joined before the snapshot went bad: the student refuses to train on it.
    with pytest.raises(PipelineStepError, match=r"ranker/student_checkpoint .*unusable: teacher@.* is bad"):
        train_student_partition(isolated, RANKER, batch_day, "distilled")


def test_a_streaming_day_needs_yesterday(ctx: StageContext) -> None:
    fresh = context()
    for day in (FIRST_STREAMING, FIRST_STREAMING):
        materialize_sample_streams(fresh, day)
    with pytest.raises(PipelineStepError, match=f"{TEACHER_CHECKPOINT} partition {BATCH} has not been materialized"):
        train_teacher_partition(fresh, FIRST_STREAMING)


def test_partition_outside_the_calendar(ctx: StageContext) -> None:
    with pytest.raises(PipelineStepError, match="outside the training calendar"):
        train_teacher_partition(ctx, date(2030, 1, 1))


def test_the_stage_package_reads_only_its_store(batch: StageContext) -> None:
    frame = batch.store.read_parquet(layout.student_dataset_path(RANKER.name, BATCH, CALENDAR.start_date))
    assert isinstance(frame, pl.DataFrame) and frame["teacher_logit"].null_count() == 0


def _one_day(**faults: object) -> tuple[StageContext, date, StageContext]:
    """A one-day batch window with its data: (context of run 1, the day, the same store under run 2)."""
    quick = {"calendar": {"batch_days": 1}, "teacher": {"optim": {"batch_phase_epochs": 1}}}
    config = load_config("tiny", overrides={**quick, "faults": faults})
    first = context(config, "run00001")
    materialize_sample_streams(first, CALENDAR.start_date)
    return first, config.calendar.batch_end, replace(first, identity=RunIdentity("run00002"))


def test_a_drill_names_its_attempts_and_says_when_it_is_skipped() -> None:
    first, day, second = _one_day(teacher={"day": CALENDAR.start_date.isoformat(), "attempts": [2]})
    clean = train_teacher_partition(first, day)
    assert clean.fault is None and clean.health.passed
    assert clean.fault_skipped and "skipped: this is attempt 1" in clean.fault_skipped
    assert "applies to attempt(s) 2" in clean.fault_skipped
    drilled = train_teacher_partition(second, day)
    assert drilled.fault and drilled.fault.startswith("divergence") and drilled.fault_skipped is None
    registry = SnapshotRegistry(first.store)
    earlier, latest = registry.for_partition(day)
    assert (earlier.status, earlier.superseded_by) == ("superseded", drilled.snapshot_id)
    assert latest.status == "unhealthy" and latest.weights_sha256 != earlier.weights_sha256
    assert registry.is_usable(earlier.snapshot_id) and not registry.is_usable(latest.snapshot_id)


def test_a_retrain_identical_to_a_bad_snapshot_is_recorded_as_such() -> None:
    first, day, second = _one_day()
    original = train_teacher_partition(first, day)
    registry = SnapshotRegistry(first.store)
    registry.mark_bad(original.snapshot_id, reason="late finding", detected_by="test")
    # The cause was not fixed: same parent (none), same data, configuration and code.
    repair = train_teacher_partition(second, day)
    assert not repair.health.passed and repair.identical_to == original.snapshot_id
    assert f"weights identical to bad snapshot {original.snapshot_id}" in repair.health.description
    bad, reproduced = registry.for_partition(day)
    assert (bad.status, bad.superseded_by) == ("bad", None)  # a bad snapshot stays bad
    assert reproduced.status == "bad" and reproduced.identical_to == original.snapshot_id
    assert reproduced.weights_sha256 == bad.weights_sha256 and reproduced.detected_at is not None


def test_rematerializing_a_good_day_supersedes_it() -> None:
    first, day, second = _one_day()
    original = train_teacher_partition(first, day)
    again = train_teacher_partition(second, day)
    assert again.health.passed and again.identical_to is None  # same weights as a good snapshot: fine
    earlier, latest = SnapshotRegistry(first.store).for_partition(day)
    assert (earlier.snapshot_id, earlier.status, earlier.superseded_by) == (
        original.snapshot_id, "superseded", again.snapshot_id)
    assert latest.status == "good" and latest.weights_sha256 == earlier.weights_sha256


def test_promotion_evidence_and_the_served_towers_auc(batch: StageContext) -> None:
    report = evaluate_partition(batch, RANKER, BATCH).report
    snapshots = report.teacher_snapshots_in_student
    assert promotion_checks(batch, RANKER, BATCH, snapshots) == {"teacher_health": True, "join_coverage": True}
    unknown = [f"teacher@{BATCH}#never000"]
    assert promotion_checks(batch, RANKER, BATCH, unknown)["teacher_health"] is False
    assert promotion_checks(batch, RANKER, BATCH, [])["teacher_health"] is False
    strict = StageContext(config=CONFIG.model_copy(update={"join": CONFIG.join.model_copy(
        update={"coverage_warn": 1.0 + 1e-9})}), store=batch.store, source=batch.source, identity=batch.identity)
    assert promotion_checks(strict, RANKER, BATCH, snapshots)["join_coverage"] is False
    # The served main tower scores the evaluation day with the AUC the report gives the distilled student.
    served = load_student(batch, RANKER, load_checkpoint(batch.store, chain_of(RANKER, "distilled"), BATCH))
    tower = served.serving_module(RANKER.sampling).eval()
    auc = served_auc(batch, RANKER, BATCH, tower)
    assert auc == pytest.approx(report.daily.auc["student_distill"], abs=1e-4)
    # The report scores a champion in its own pass: the loader sees the day's snapshot; same AUC as alone.
    asked: list[str] = []
    with_champion = evaluate_partition(batch, RANKER, BATCH, lambda snapshot: asked.append(snapshot) or tower)
    assert asked == [report.snapshots["distilled"]]
    assert with_champion.champion is not None and with_champion.champion.error is None
    assert with_champion.champion.auc == pytest.approx(auc, abs=1e-9)
    assert evaluate_partition(batch, RANKER, BATCH, lambda _: None).champion is None
    # A champion whose inputs no longer fit (a smaller vocabulary) is reported with the reason, not raised.
    misfit = evaluate_partition(batch, RANKER, BATCH, lambda _: _SmallerVocabularyTower())
    assert misfit.champion is not None and misfit.champion.auc is None
    assert str(misfit.champion.error).startswith("IndexError")
    assert report.serving.student is not None and report.serving.student.max_abs_diff <= CONFIG.eval.onnx_tolerance


class _SmallerVocabularyTower(torch.nn.Module):
    """A served tower built for a smaller vocabulary: today's ids fall outside its embedding table."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(2, 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.embedding(sparse).sum(dim=(1, 2)))


def test_soft_labels_on_the_teacher_stream_from_the_oracle(batch: StageContext) -> None:
    """`distill.soft_label_rows: teacher_stream` and `source: oracle` through the dataset stage: the student's
    own rows keep their place, the teacher-stream rows its sampler dropped join as distillation-only rows, and
    every logit is logit(p_true) in the teacher's sampling space."""
    distill = RANKER.distill.model_copy(update={"soft_label_rows": "teacher_stream", "source": "oracle"})
    soft = RANKER.model_copy(update={"name": "soft", "distill": distill})
    days = CALENDAR.batch_window()
    for d in days:  # the same student stream under another name: the ranker's dataset stays as it is
        batch.store.write_parquet(layout.student_samples_path(soft.name, d),
                                  batch.store.read_parquet(layout.student_samples_path(RANKER.name, d)))
    manifest = build_student_dataset(batch, soft, BATCH)
    dataset = pl.concat([batch.store.read_parquet(layout.student_dataset_path(soft.name, BATCH, d)) for d in days])
    recorded = pl.concat([batch.store.read_parquet(layout.student_dataset_path(RANKER.name, BATCH, d))
                          for d in days])
    teacher_rows = sum(batch.store.read_parquet(layout.samples_path("teacher", d)).height for d in days)
    own = dataset.filter(pl.col("student_row"))
    assert own.drop("teacher_logit").equals(recorded.drop("teacher_logit"))
    assert dataset.height == teacher_rows and dataset["sample_id"].is_unique().all()
    extra = dataset.filter(~pl.col("student_row"))
    assert (extra["r_s"] == RANKER.sampling.r_s).all() and (extra["teacher_r_s"] == CONFIG.sampling.teacher.r_s).all()
    assert manifest.stats["n_rows"] == recorded.height and manifest.stats["n_soft_label_rows"] == extra.height
    calibrated = dataset["teacher_logit"].to_numpy() - np.log(dataset["teacher_r_s"] * dataset["teacher_p_x"])
    assert np.allclose(1 / (1 + np.exp(-calibrated)), dataset["p_true"].to_numpy(), rtol=1e-3)
    assert manifest.provenance.teacher_snapshots == [f"teacher@{BATCH}#run00000"]
