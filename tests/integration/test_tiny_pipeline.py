"""Materialize the `tiny` profile through Dagster: batch partition + 2 streaming days.

One pipeline run per test session (module fixture); the tests then check partitions, metadata,
lineage fields, report contents and MLflow runs against the instance and the files it wrote.
"""

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
import torch
from dagster import AssetKey, DagsterInstance

from recdistill_dagster import layout
from recdistill_dagster.config import load_config
from recdistill_dagster.data.source import make_source
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.registry import parse_snapshot_id
from recdistill_dagster.steps import evaluate_partition
from resources import ArtifactStore, MlflowTracking

pytestmark = pytest.mark.integration

PROFILE = "tiny"
CONFIG = load_config(PROFILE)
TRAINING_DAYS = CONFIG.calendar.training_days()
DATA_DAYS = CONFIG.calendar.data_days()
TRAINING_ASSETS = ("teacher_checkpoint", "teacher_logits", "student_dataset", "student_checkpoint",
                   "student_baseline_checkpoint", "transferability_report")
REPORT_KEYS = ("day", "teacher_auc", "student_raw_auc", "student_distill_auc", "student_aux_auc", "bayes_auc",
               "teacher_gain", "teacher_gain_ci", "distill_gain", "eta", "eta_ci", "n_eval")


class Pipeline:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.defs = build_definitions(PROFILE, home)
        self.instance = DagsterInstance.ephemeral()
        self.store = ArtifactStore(base_url=str(home))

    def run_data(self, day: date):
        job = self.defs.resolve_job_def(SAMPLE_STREAMS_JOB)
        return job.execute_in_process(partition_key=day.isoformat(), instance=self.instance, raise_on_error=False)

    def run_training(self, day: date):
        job = self.defs.resolve_job_def(DAILY_TRAINING_JOB)
        return job.execute_in_process(partition_key=day.isoformat(), instance=self.instance, raise_on_error=False)

    def latest_metadata(self, asset: str, day: date) -> dict:
        records = self.instance.fetch_materializations(AssetKey(asset), limit=100).records
        for record in records:
            mat = record.asset_materialization
            if mat is not None and mat.partition == day.isoformat():
                return {k: v.value for k, v in mat.metadata.items()}
        raise AssertionError(f"no materialization of {asset} {day}")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    pipe = Pipeline(tmp_path_factory.mktemp("tiny-home"))
    for day in DATA_DAYS:
        assert pipe.run_data(day).success, f"sample streams {day} failed"
    for day in TRAINING_DAYS:
        result = pipe.run_training(day)
        assert result.success, f"training {day} failed"
    return pipe


def test_every_partition_is_materialized(pipeline: Pipeline) -> None:
    for stream in ("teacher", "student", "eval"):
        done = pipeline.instance.get_materialized_partitions(AssetKey(f"{stream}_samples"))
        assert done == {d.isoformat() for d in DATA_DAYS}
    for asset in TRAINING_ASSETS:
        done = pipeline.instance.get_materialized_partitions(AssetKey(asset))
        assert done == {d.isoformat() for d in TRAINING_DAYS}, asset


def test_graph_has_no_unexpected_source_assets(pipeline: Pipeline) -> None:
    # A misspelled key in deps= would silently become an external asset.
    graph = pipeline.defs.resolve_asset_graph()
    materializable = {key.to_user_string() for key in graph.materializable_asset_keys}
    all_keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert all_keys == materializable
    assert set(TRAINING_ASSETS) <= materializable


def test_teacher_logits_one_per_trained_sample(pipeline: Pipeline) -> None:
    batch = TRAINING_DAYS[0]
    for day in CONFIG.calendar.batch_window():
        logits = pipeline.store.read_parquet(layout.teacher_logits_path(batch, day))
        samples = pipeline.store.read_parquet(layout.samples_path("teacher", day))
        assert logits.height == samples.height
        assert set(logits["sample_id"].to_list()) == set(samples["sample_id"].to_list())
        assert logits["sample_id"].is_unique().all()
        assert logits["teacher_logit"].is_finite().all()


def test_student_dataset_metadata_reports_join_coverage(pipeline: Pipeline) -> None:
    for day in TRAINING_DAYS:
        meta = pipeline.latest_metadata("student_dataset", day)
        assert meta["join_coverage"] == pytest.approx(1.0)  # student stream ⊂ teacher stream
        assert meta["dagster/row_count"] > 0
        assert meta["matched_label_rate"] is not None
        assert len(meta["teacher_snapshots"]) == 1


def test_checkpoints_record_lineage_and_chain(pipeline: Pipeline) -> None:
    previous: dict[str, str | None] = {"teacher": None, "student": None, "student_baseline": None}
    for day in TRAINING_DAYS:
        payloads = {}
        for role in previous:
            data = (pipeline.home / layout.checkpoint_path(role, day)).read_bytes()
            import io

            payloads[role] = torch.load(io.BytesIO(data), weights_only=True)["meta"]
            meta = payloads[role]
            assert meta["partition"] == day.isoformat()
            assert meta["parent_snapshot"] == previous[role]
            assert meta["dagster_run_id"] and meta["mlflow_run_id"]
            previous[role] = meta["snapshot_id"]
        # The student trained on exactly this day's teacher snapshot; the baseline on none.
        assert payloads["student"]["teacher_snapshots"] == [payloads["teacher"]["snapshot_id"]]
        assert payloads["student_baseline"]["teacher_snapshots"] == []
        teacher_meta = pipeline.latest_metadata("teacher_checkpoint", day)
        assert teacher_meta["teacher_snapshot"] == payloads["teacher"]["snapshot_id"]


def test_report_json_has_contract_keys(pipeline: Pipeline) -> None:
    for day in TRAINING_DAYS:
        report = json.loads((pipeline.home / layout.report_path(day)).read_text())
        for key in REPORT_KEYS:
            assert key in report, key
            assert key in report["cumulative"], f"cumulative.{key}"
        assert report["day"] == day.isoformat()
        assert report["eval_day"] == (day + timedelta(days=1)).isoformat()
        assert 0.5 < report["bayes_auc"] < 1.0
        assert report["cumulative"]["days"] == [d.isoformat() for d in TRAINING_DAYS if d <= day]
        assert report["n_eval"] == CONFIG.data.impressions_per_day  # the unsampled stream
    meta = pipeline.latest_metadata("transferability_report", TRAINING_DAYS[-1])
    assert "data:image/png;base64," in meta["summary"]
    assert meta["teacher_auc"] is not None and meta["n_eval"] > 0


def test_mlflow_runs_for_every_training_materialization(pipeline: Pipeline) -> None:
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{pipeline.home / 'mlflow' / 'mlflow.db'}",
                              experiment_name=f"recdistill-{PROFILE}")
    runs = tracking.find_runs()
    by_role: dict[str, set[str]] = {}
    for run in runs:
        assert run.info.status == "FINISHED"
        by_role.setdefault(run.data.tags["recdistill.role"], set()).add(run.data.tags["dagster.partition"])
    expected = {d.isoformat() for d in TRAINING_DAYS}
    for role in ("teacher", "student", "student_baseline", "report"):
        assert by_role.get(role) == expected, role
    report_runs = [r for r in runs if r.data.tags["recdistill.role"] == "report"]
    assert all(r.data.tags["teacher_snapshot"].startswith("teacher@") for r in report_runs)
    teacher_runs = [r for r in runs if r.data.tags["recdistill.role"] == "teacher"]
    assert all("teacher_snapshot" in r.data.tags and "dagster.run_id" in r.data.tags for r in teacher_runs)
    assert all("teacher.arch.width" in r.data.params for r in teacher_runs)
    student_runs = [r for r in runs if r.data.tags["recdistill.role"] == "student"]
    assert all("train_steps" in r.data.metrics for r in student_runs)


def test_streaming_day_without_previous_checkpoint_fails_clearly(tmp_path: Path, pipeline: Pipeline) -> None:
    fresh = Pipeline(tmp_path / "fresh")
    day = TRAINING_DAYS[1]
    for data_day in (day, day + timedelta(days=1)):
        assert fresh.run_data(data_day).success
    result = fresh.run_training(day)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    message = failures[0].step_failure_data.error.to_string()
    assert f"_checkpoint partition {day - timedelta(days=1)} has not been materialized" in message


def test_lineage_audit_reads_the_event_log(pipeline: Pipeline) -> None:
    import io

    from recdistill_dagster.lineage import to_json, trace

    day = TRAINING_DAYS[-1]
    nodes = trace(pipeline.instance, CONFIG, "student_checkpoint", day)
    audit = to_json("student_checkpoint", day, nodes)
    assert audit["complete"]
    keys = {node["asset"] + "[" + node["partition"] + "]" for node in audit["nodes"]}
    for training_day in TRAINING_DAYS:  # the whole self-dependent chain back to the batch phase
        assert f"student_checkpoint[{training_day}]" in keys
        assert f"teacher_logits[{training_day}]" in keys
    for data_day in CONFIG.calendar.batch_window():
        assert f"student_samples[{data_day}]" in keys
    expected_snapshots, by_key = set(), {n.key: n for n in nodes}
    for training_day in TRAINING_DAYS:
        raw = (pipeline.home / layout.checkpoint_path("teacher", training_day)).read_bytes()
        meta = torch.load(io.BytesIO(raw), weights_only=True)["meta"]
        expected_snapshots.add(meta["snapshot_id"])
        assert by_key[f"teacher_logits[{training_day}]"].run_id == meta["dagster_run_id"]
    assert set(audit["teacher_snapshots"]) == expected_snapshots
    assert nodes[0].key == f"student_checkpoint[{day}]" and nodes[0].upstream


def test_rematerializing_a_partition_replaces_it(pipeline: Pipeline) -> None:
    day = TRAINING_DAYS[-1]
    before = json.loads((pipeline.home / layout.report_path(day)).read_text())
    result = pipeline.run_training(day)
    assert result.success
    after = json.loads((pipeline.home / layout.report_path(day)).read_text())
    assert after["snapshots"]["teacher"] != before["snapshots"]["teacher"]  # a new snapshot id (new run)
    # Same seeds and data ⇒ same numbers.
    assert after["teacher_auc"] == pytest.approx(before["teacher_auc"], abs=1e-6)
    assert after["student_distill_auc"] == pytest.approx(before["student_distill_auc"], abs=1e-6)
    leftovers = [p for p in pipeline.home.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_html_report_written_linked_and_logged(pipeline: Pipeline) -> None:
    last = TRAINING_DAYS[-1]
    meta = pipeline.latest_metadata("transferability_report", last)
    index = Path(meta["html_report"])
    assert index == pipeline.home / "reports" / "index.html"
    page = index.read_text()
    assert page.count('src="data:image/png;base64,') == 5  # self-contained: every plot inlined
    for day in TRAINING_DAYS:
        assert f"teacher@{day.isoformat()}" in page  # every report day, with its snapshots
    assert Path(meta["html_report_of_day"]) == pipeline.home / layout.report_path(last, "report.html")
    assert set(meta["plots"]) == {"auc_over_days", "eta_over_days", "calibration_day", "calibration_cumulative",
                                  "loss_magnitudes"}
    assert meta["models"].records[0].data["model"] == "teacher"
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{pipeline.home / 'mlflow' / 'mlflow.db'}",
                              experiment_name=f"recdistill-{PROFILE}")
    client = tracking.client()
    artifacts = {a.path for a in client.list_artifacts(meta["mlflow_run_id"])}
    assert {"report.html", "plots", "transferability.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(meta["mlflow_run_id"], "plots")} >= {"plots/calibration_day.png"}


def test_teacher_eval_scores_are_stored_per_snapshot_and_checked_before_reuse(pipeline: Pipeline) -> None:
    day = TRAINING_DAYS[0]
    report = json.loads((pipeline.home / layout.report_path(day)).read_text())
    _, _, run = parse_snapshot_id(report["snapshots"]["teacher"])
    cache = pipeline.home / layout.teacher_eval_scores_path(day, run)
    stored = pl.read_parquet(cache)
    assert stored.height == report["n_eval"]
    # Scores in another row order must not be reused: the report recomputes them.
    stored.reverse().write_parquet(cache)
    store = ArtifactStore(base_url=str(pipeline.home))
    again = evaluate_partition(CONFIG, store, make_source(CONFIG).vocab(), day)
    assert again.report["teacher_auc"] == pytest.approx(report["teacher_auc"], abs=1e-9)
    assert pl.read_parquet(cache)["sample_id"].equals(stored["sample_id"])
