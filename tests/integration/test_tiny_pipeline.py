"""Materialize the `tiny` profile through Dagster: batch partition + 2 streaming days, two students.

One pipeline run per test module (module fixture); the tests then check partitions, metadata, lineage
fields, report contents and MLflow runs against the instance and the files it wrote.
"""

import io
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult

from recdistill_dagster import layout
from recdistill_dagster.config import load_config
from recdistill_dagster.data.source import make_source
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.graph import TEACHER_CHECKPOINT, TEACHER_LOGITS, AssetGraph
from recdistill_dagster.model_registry import PROMOTED, alias_history
from recdistill_dagster.registry import parse_snapshot_id
from recdistill_dagster.stages.context import RunIdentity, StageContext
from recdistill_dagster.stages.evaluation import evaluate_partition
from recdistill_dagster.storage import ArtifactStore
from resources import MlflowTracking

pytestmark = pytest.mark.integration

PROFILE = "tiny"
CONFIG = load_config(PROFILE)
GRAPH = AssetGraph.of(CONFIG)
TRAINING_DAYS = CONFIG.calendar.training_days()
DATA_DAYS = CONFIG.calendar.data_days()
STUDENTS = [s.name for s in CONFIG.active_students]


class Pipeline:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.defs = build_definitions(PROFILE, home)
        self.instance = DagsterInstance.ephemeral()
        self.store = ArtifactStore(str(home))

    def run_data(self, day: date) -> ExecuteInProcessResult:
        job = self.defs.resolve_job_def(SAMPLE_STREAMS_JOB)
        return job.execute_in_process(partition_key=day.isoformat(), instance=self.instance, raise_on_error=False)

    def run_training(self, day: date) -> ExecuteInProcessResult:
        job = self.defs.resolve_job_def(DAILY_TRAINING_JOB)
        return job.execute_in_process(partition_key=day.isoformat(), instance=self.instance, raise_on_error=False)

    def latest_metadata(self, asset: str, day: date) -> dict[str, Any]:
        records = self.instance.fetch_materializations(AssetKey.from_user_string(asset), limit=100).records
        for record in records:
            mat = record.asset_materialization
            if mat is not None and mat.partition == day.isoformat():
                return {k: v.value for k, v in mat.metadata.items()}
        raise AssertionError(f"no materialization of {asset} {day}")

    def checkpoint_meta(self, path: str) -> dict[str, Any]:
        meta: dict[str, Any] = torch.load(io.BytesIO((self.home / path).read_bytes()), weights_only=True)["meta"]
        return meta

    def report(self, student: str, day: date) -> dict[str, Any]:
        report: dict[str, Any] = json.loads((self.home / layout.report_path(student, day)).read_text())
        return report


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    pipe = Pipeline(tmp_path_factory.mktemp("tiny-home"))
    for day in DATA_DAYS:
        assert pipe.run_data(day).success, f"sample streams {day} failed"
    for day in TRAINING_DAYS:
        result = pipe.run_training(day)
        assert result.success, f"training {day} failed"
    return pipe


def test_every_partition_is_materialized(pipeline: Pipeline) -> None:
    for key in GRAPH.data_keys:
        done = pipeline.instance.get_materialized_partitions(AssetKey.from_user_string(key))
        assert done == {d.isoformat() for d in DATA_DAYS}, key
    for key in GRAPH.training_keys:
        done = pipeline.instance.get_materialized_partitions(AssetKey.from_user_string(key))
        assert done == {d.isoformat() for d in TRAINING_DAYS}, key
    assert len(GRAPH.training_keys) == 2 + 4 * len(STUDENTS)  # the teacher once, four assets per student


def test_graph_has_no_unexpected_source_assets(pipeline: Pipeline) -> None:
    # A misspelled key in deps= would silently become an external asset.
    graph = pipeline.defs.resolve_asset_graph()
    materializable = {key.to_user_string() for key in graph.materializable_asset_keys}
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == materializable == set(GRAPH.nodes)


def test_dagster_deps_are_the_graphs_declared_edges(pipeline: Pipeline) -> None:
    graph = pipeline.defs.resolve_asset_graph()
    for key, node in GRAPH.nodes.items():
        parents = {k.to_user_string() for k in graph.get(AssetKey.from_user_string(key)).parent_keys}
        declared = {edge.upstream for edge in node.upstream if edge.declared}
        assert parents == declared, key


def test_teacher_logits_one_per_trained_sample(pipeline: Pipeline) -> None:
    batch = TRAINING_DAYS[0]
    for day in CONFIG.calendar.batch_window():
        logits = pipeline.store.read_parquet(layout.teacher_logits_path(batch, day))
        samples = pipeline.store.read_parquet(layout.samples_path("teacher", day))
        assert logits.height == samples.height
        assert set(logits["sample_id"].to_list()) == set(samples["sample_id"].to_list())
        assert logits["sample_id"].is_unique().all()
        assert logits["teacher_logit"].is_finite().all()


def test_every_students_dataset_reports_join_coverage(pipeline: Pipeline) -> None:
    for student in STUDENTS:
        for day in TRAINING_DAYS:
            meta = pipeline.latest_metadata(GRAPH.student(student).dataset, day)
            assert meta["join_coverage"] == pytest.approx(1.0)  # student stream ⊂ teacher stream
            assert meta["dagster/row_count"] > 0
            teacher = pipeline.latest_metadata(TEACHER_LOGITS, day)
            assert meta["teacher_snapshots"] == [teacher["version"]]
            assert meta["inputs"] == {f"{TEACHER_LOGITS}[{day}]": teacher["version"]}


def test_checkpoints_record_lineage_and_chain(pipeline: Pipeline) -> None:
    chains = {"teacher": layout.teacher_checkpoint_path,
              **{f"{s}/{v}": (lambda d, s=s, v=v: layout.student_checkpoint_path(s, v, d))
                 for s in STUDENTS for v in ("distilled", "baseline")}}
    previous: dict[str, str | None] = dict.fromkeys(chains)
    for day in TRAINING_DAYS:
        metas = {role: pipeline.checkpoint_meta(path(day)) for role, path in chains.items()}
        for role, meta in metas.items():
            assert meta["partition"] == day.isoformat()
            assert meta["parent_snapshot"] == previous[role]
            assert meta["snapshot_id"].startswith(f"{role}@{day}#")
            assert meta["dagster_run_id"] and meta["mlflow_run_id"]
            previous[role] = meta["snapshot_id"]
        teacher = metas["teacher"]["snapshot_id"]
        for student in STUDENTS:  # every student trained on this day's teacher snapshot; baselines on none
            assert metas[f"{student}/distilled"]["teacher_snapshots"] == [teacher]
            assert metas[f"{student}/baseline"]["teacher_snapshots"] == []
        assert pipeline.latest_metadata(TEACHER_CHECKPOINT, day)["version"] == teacher


def test_reports_hold_the_typed_contract(pipeline: Pipeline) -> None:
    for student in STUDENTS:
        for day in TRAINING_DAYS:
            report = pipeline.report(student, day)
            assert report["student"] == student and report["day"] == day.isoformat()
            assert report["eval_day"] == (day + timedelta(days=1)).isoformat()
            assert report["auc_aggregation"].startswith("within-day")
            assert 0.5 < report["daily"]["auc"]["bayes"] < 1.0
            assert report["cumulative"]["days"] == [d.isoformat() for d in TRAINING_DAYS if d <= day]
            assert report["daily"]["n_eval"] == CONFIG.data.impressions_per_day  # the unsampled stream
            assert report["parameters"]["served"] < report["parameters"]["teacher"]
        meta = pipeline.latest_metadata(GRAPH.student(student).report, TRAINING_DAYS[-1])
        assert "data:image/png;base64," in meta["summary"]
        assert meta["n_eval"] > 0 and meta["served_parameters"] > 0
    # One teacher: every student's report scored the same teacher on the same rows.
    teachers = {pipeline.report(s, TRAINING_DAYS[-1])["daily"]["auc"]["teacher"] for s in STUDENTS}
    assert len(teachers) == 1


def test_mlflow_runs_for_every_training_materialization(pipeline: Pipeline) -> None:
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{pipeline.home / 'mlflow' / 'mlflow.db'}",
                              experiment_name=f"recdistill-{PROFILE}")
    runs = tracking.find_runs()
    by_role: dict[str, set[str]] = {}
    for run in runs:
        assert run.info.status == "FINISHED"
        by_role.setdefault(run.data.tags["recdistill.role"], set()).add(run.data.tags["dagster.partition"])
    expected = {d.isoformat() for d in TRAINING_DAYS}
    roles = ["teacher", *(f"{s}/{v}" for s in STUDENTS for v in ("distilled", "baseline", "report"))]
    for role in roles:
        assert by_role.get(role) == expected, role
    teacher_runs = [r for r in runs if r.data.tags["recdistill.role"] == "teacher"]
    assert all("teacher_snapshot" in r.data.tags and "teacher.arch.width" in r.data.params for r in teacher_runs)
    distilled = [r for r in runs if r.data.tags["recdistill.role"].endswith("/distilled")]
    assert all("train_steps" in r.data.metrics for r in distilled)
    assert {r.data.tags["recdistill.student"] for r in distilled} == set(STUDENTS)



def test_the_registry_decides_each_day_on_the_champion_scored_in_the_report(pipeline: Pipeline) -> None:
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{pipeline.home / 'mlflow' / 'mlflow.db'}",
                              experiment_name=f"recdistill-{PROFILE}")
    for student in STUDENTS:
        history = alias_history(tracking.client(), tracking.registered_model_name(student))
        assert {row["eval_day"] for row in history} == {(d + timedelta(days=1)).isoformat() for d in TRAINING_DAYS}
        assert history[0]["champion_version"] is None and history[0]["outcome"] == PROMOTED
        for row in history[1:]:
            # Every later day met a champion, scored on that day's rows in the report's pass.
            assert row["champion_version"] is not None and row["champion_auc"] is not None, row
            if not row["reason"].startswith("check(s) failed"):
                assert (row["outcome"] == PROMOTED) == (row["distilled_auc"] >= row["champion_auc"]), row


def test_streaming_day_without_previous_checkpoint_fails_clearly(tmp_path: Path, pipeline: Pipeline) -> None:
    fresh = Pipeline(tmp_path / "fresh")
    day = TRAINING_DAYS[1]
    for data_day in (day, day + timedelta(days=1)):
        assert fresh.run_data(data_day).success
    result = fresh.run_training(day)
    assert not result.success
    messages = " | ".join(e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure)
    for chain in ("teacher_checkpoint", *(GRAPH.student(s).baseline for s in STUDENTS)):
        assert f"{chain} partition {day - timedelta(days=1)} has not been materialized" in messages


def test_lineage_audit_reads_the_event_log_for_every_student(pipeline: Pipeline) -> None:
    from recdistill_dagster.lineage import to_json, trace

    day = TRAINING_DAYS[-1]
    expected_snapshots = {pipeline.checkpoint_meta(layout.teacher_checkpoint_path(d))["snapshot_id"]
                          for d in TRAINING_DAYS}
    for student in STUDENTS:
        keys = GRAPH.student(student)
        nodes = trace(pipeline.instance, CONFIG, keys.distilled, day)
        audit = to_json(keys.distilled, day, nodes)
        assert audit["complete"] and audit["consistent"]
        found = {node["asset"] + "[" + node["partition"] + "]" for node in audit["nodes"]}
        for training_day in TRAINING_DAYS:  # the whole self-dependent chain back to the batch phase
            assert f"{keys.distilled}[{training_day}]" in found
            assert f"{TEACHER_LOGITS}[{training_day}]" in found
        for data_day in CONFIG.calendar.batch_window():
            assert f"{keys.samples}[{data_day}]" in found
        assert not any(other in key for key in found for other in STUDENTS if other != student)
        assert set(audit["teacher_snapshots"]) == expected_snapshots
        assert nodes[0].key == f"{keys.distilled}[{day}]" and nodes[0].upstream


def test_rematerializing_a_partition_replaces_it(pipeline: Pipeline) -> None:
    day = TRAINING_DAYS[-1]
    before = pipeline.report(STUDENTS[0], day)
    result = pipeline.run_training(day)
    assert result.success
    after = pipeline.report(STUDENTS[0], day)
    assert after["snapshots"]["teacher"] != before["snapshots"]["teacher"]  # a new snapshot id (new run)
    # Same seeds and data ⇒ same numbers.
    for key in ("teacher", "student_distill"):
        assert after["daily"]["auc"][key] == pytest.approx(before["daily"]["auc"][key], abs=1e-6)
    assert [p for p in pipeline.home.rglob("*") if ".tmp-" in p.name] == []


def test_html_reports_written_linked_and_logged(pipeline: Pipeline) -> None:
    last = TRAINING_DAYS[-1]
    index = (pipeline.home / layout.INDEX_PATH).read_text()
    for student in STUDENTS:
        assert f'href="{student}/index.html"' in index
        meta = pipeline.latest_metadata(GRAPH.student(student).report, last)
        assert Path(meta["html_report"]) == pipeline.home / layout.INDEX_PATH
        page = Path(meta["html_report_of_student"]).read_text()
        assert page.count('src="data:image/png;base64,') == 5  # self-contained: every plot inlined
        for day in TRAINING_DAYS:
            assert f"teacher@{day.isoformat()}" in page  # every report day, with its snapshots
        assert set(meta["plots"]) == {"auc_over_days", "eta_over_days", "calibration_day", "calibration_cumulative",
                                      "loss_magnitudes"}
        assert meta["models"].records[0].data["model"] == "teacher"
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{pipeline.home / 'mlflow' / 'mlflow.db'}",
                              experiment_name=f"recdistill-{PROFILE}")
    client = tracking.client()
    artifacts = {a.path for a in client.list_artifacts(meta["mlflow_run_id"])}
    assert {"report.html", "plots", "transferability.json"} <= artifacts


def test_teacher_eval_scores_are_stored_per_snapshot_and_checked_before_reuse(pipeline: Pipeline) -> None:
    day = TRAINING_DAYS[0]
    student = CONFIG.active_students[0]
    report = pipeline.report(student.name, day)
    _, _, run = parse_snapshot_id(report["snapshots"]["teacher"])
    cache = pipeline.home / layout.teacher_eval_scores_path(day, run)
    stored = pl.read_parquet(cache)
    assert stored.height == report["daily"]["n_eval"]
    # Scores in another row order must not be reused: the report recomputes them.
    stored.reverse().write_parquet(cache)
    ctx = StageContext(config=CONFIG, store=ArtifactStore(str(pipeline.home)), source=make_source(CONFIG),
                       identity=RunIdentity("rescore0"))
    again = evaluate_partition(ctx, student, day)
    assert again.report.daily.auc["teacher"] == pytest.approx(report["daily"]["auc"]["teacher"], abs=1e-9)
    assert pl.read_parquet(cache)["sample_id"].equals(stored["sample_id"])
