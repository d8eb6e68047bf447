"""The whole `tiny` pipeline (both students) with its artifacts on S3 and its tracking on the MLflow server.

The artifact store is `s3://<bucket>/tiny-store` on the moto server, MLflow is the tracking server (Postgres
backend, artifacts proxied to the same moto server), the Dagster instance is on Postgres: the only local
state is the Dagster instance's folder, and the state folder the definitions are built with stays empty.
Every S3 request the pipeline makes is read from the moto server's own access log: writes are one PUT
(a multipart upload for polars' streamed parquet), never a temporary object, copy or delete.
"""

import json
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult

from recdistill_dagster import layout
from recdistill_dagster.config import PipelineConfig, load_config
from recdistill_dagster.data.source import make_source
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.graph import AssetGraph
from recdistill_dagster.home import MLFLOW_URI_ENV
from recdistill_dagster.lineage import snapshot_statuses, to_json, trace
from recdistill_dagster.model_registry import CHAMPION_ALIAS, KEPT, PROMOTED, alias_history, champion
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.report.models import DISTILLED
from recdistill_dagster.report.schema import TransferabilityReport
from recdistill_dagster.report.text import onnx_line
from recdistill_dagster.services import MlflowServer, S3Server
from recdistill_dagster.stages.context import RunIdentity, StageContext
from recdistill_dagster.stages.promotion import served_auc
from recdistill_dagster.storage import ArtifactStore
from resources import MlflowTracking
from tests.integrations.conftest import Report
from tests.integrations.test_s3_store import RequestLog, counted_requests

pytestmark = pytest.mark.integrations

PROFILE = "tiny"
STORE_PREFIX = "tiny-store"
STORE_URL_ENV = "RECDISTILL_STORE_URL"
AUC_TOLERANCE = 1e-4


class S3Pipeline:
    def __init__(self, home: Path, instance: DagsterInstance, s3: S3Server) -> None:
        self.home = home
        self.instance = instance
        self.config: PipelineConfig = load_config(PROFILE)
        self.graph = AssetGraph.of(self.config)
        self.defs = build_definitions(PROFILE, home)
        self.store = ArtifactStore(s3.url(STORE_PREFIX))
        self.requests: list[tuple[str, str]] = []

    def run(self, job_name: str, day: date) -> ExecuteInProcessResult:
        job = self.defs.resolve_job_def(job_name)
        result = job.execute_in_process(partition_key=day.isoformat(), instance=self.instance, raise_on_error=False)
        assert result.success, [str(e.message) for e in result.all_events if e.is_step_failure]
        return result


def _latest_metadata(pipeline: S3Pipeline, key: str) -> dict[str, Any]:
    records = pipeline.instance.fetch_materializations(AssetKey.from_user_string(key), limit=1).records
    assert records and records[0].asset_materialization is not None, key
    return dict(records[0].asset_materialization.metadata)


def _store_requests(log: RequestLog, bucket: str) -> list[tuple[str, str]]:
    prefix = f"/{bucket}/{STORE_PREFIX}"
    return [(method, path) for method, path in log.requests if path.startswith(prefix)]


@pytest.fixture(scope="module")
def s3_pipeline(pg_instance: DagsterInstance, s3: S3Server, mlflow_tracking_server: MlflowServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Pipeline]:
    home = tmp_path_factory.mktemp("s3-pipeline") / "home"
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3.env().items():
            env.setenv(name, value)
        env.setenv(STORE_URL_ENV, s3.url(STORE_PREFIX))
        env.setenv(MLFLOW_URI_ENV, mlflow_tracking_server.tracking_uri)
        pipeline = S3Pipeline(home, pg_instance, s3)
        with counted_requests() as log:
            for day in pipeline.config.calendar.data_days():
                pipeline.run(SAMPLE_STREAMS_JOB, day)
            for day in pipeline.config.calendar.training_days():
                pipeline.run(DAILY_TRAINING_JOB, day)
        pipeline.requests = _store_requests(log, s3.bucket)
        yield pipeline


def test_tiny_pipeline_on_s3_keeps_no_local_state(s3_pipeline: S3Pipeline, report: Report) -> None:
    pipeline, store = s3_pipeline, s3_pipeline.store
    assert not pipeline.home.exists() or not any(pipeline.home.rglob("*")), sorted(pipeline.home.rglob("*"))[:10]
    last = pipeline.config.calendar.training_days()[-1]
    for student in pipeline.graph.students:
        assert store.exists(layout.report_path(student, last)), student
        page = store.read_bytes(layout.student_index_path(student)).decode()
        assert "<html" in page.lower() and student in page
    index = store.read_bytes(layout.INDEX_PATH).decode()
    assert all(student in index for student in pipeline.graph.students)
    for student in pipeline.graph.students:  # the metadata people click on points at s3://, not a local path
        metadata = _latest_metadata(pipeline, pipeline.graph.student(student).distilled)
        assert str(metadata["path"].value).startswith(f"s3://{store.base_url.removeprefix('s3://')}"), metadata["path"]
    written = [path for method, path in pipeline.requests if method == "PUT"]
    report("s3", f"tiny pipeline ({len(pipeline.graph.students)} students, "
                 f"{len(pipeline.config.calendar.training_days())} training partitions) with its artifact store on "
                 f"{store.base_url}: {len(written)} PUTs, reports and HTML pages on S3, local state folder empty")


def test_writes_are_single_requests_without_temporaries(s3_pipeline: S3Pipeline, report: Report) -> None:
    methods = Counter(method for method, _ in s3_pipeline.requests)
    assert methods["DELETE"] == 0, "a write went through a temporary object (copy + delete)"
    assert not [path for _, path in s3_pipeline.requests if ".tmp-" in path]
    store = s3_pipeline.store
    with counted_requests() as log:
        store.write_json("probe/one.json", {"probe": 1})
    assert [method for method, _ in log.requests] == ["PUT"]
    with counted_requests() as log:
        store.write_parquet("probe/one.parquet", store.read_parquet(layout.samples_path("eval", date(2026, 1, 2))))
    parquet_write = [method for method, path in log.requests if path.endswith("probe/one.parquet")]
    assert parquet_write == ["PUT"], log.requests
    with counted_requests() as log:
        store.sink_parquet("probe/sunk.parquet", store.scan_parquet(layout.samples_path("eval", date(2026, 1, 2))))
    sunk = [method for method, path in log.requests if "probe/sunk.parquet" in path]
    assert "DELETE" not in sunk and sunk.count("PUT") >= 1, log.requests
    store.remove("probe")
    report("s3", "write requests during the tiny run on the store's prefix: "
                 + ", ".join(f"{method} {methods[method]}" for method in ("PUT", "POST", "DELETE"))
                 + f" (and HEAD {methods['HEAD']} existence checks; no temporary object); one write_json = 1 request "
                 "(PUT), write_parquet = 1 PUT, "
                 f"sink_parquet (streamed) = {len(sunk)} ({', '.join(sunk)})")


def test_lineage_audit_and_snapshot_registry_read_s3(s3_pipeline: S3Pipeline, report: Report) -> None:
    pipeline = s3_pipeline
    day = pipeline.config.calendar.training_days()[-1]
    registry = SnapshotRegistry(pipeline.store)
    for student in pipeline.graph.students:
        key = pipeline.graph.student(student).distilled
        nodes = trace(pipeline.instance, pipeline.config, key, day)
        audit = to_json(key, day, nodes, snapshot_statuses(registry, nodes))
        assert audit["complete"] and audit["consistent"], json.dumps(audit)[:2000]
        assert audit["teacher_snapshots"] and audit["all_snapshots_good"], audit["snapshot_status"]
    report("s3", f"lineage audit of every student's checkpoint {day}: complete and consistent, teacher snapshots "
                 f"read from the registry on {pipeline.store.base_url}")



def test_registry_champion_per_student_and_alias_history(s3_pipeline: S3Pipeline,
                                                         mlflow_tracking_server: MlflowServer, s3: S3Server,
                                                         report: Report) -> None:
    pipeline = s3_pipeline
    tracking = MlflowTracking(tracking_uri=mlflow_tracking_server.tracking_uri, experiment_name=f"recdistill-{PROFILE}")
    client = tracking.client()
    days = pipeline.config.calendar.training_days()
    for student in pipeline.graph.students:
        name = tracking.registered_model_name(student)
        history = alias_history(client, name)
        assert len(history) == len(days), history  # one version per day
        assert history[0]["outcome"] == PROMOTED and history[0]["reason"] == "no champion yet"
        reports = [json.loads(pipeline.store.read_bytes(layout.report_path(student, day))) for day in days]
        for row, day_report in zip(history, reports, strict=True):
            assert row["eval_day"] == day_report["eval_day"]
            assert row["distilled_auc"] == pytest.approx(day_report["daily"]["auc"][DISTILLED.key])
            if row["outcome"] == PROMOTED and row["champion_auc"] is not None:
                assert row["distilled_auc"] >= row["champion_auc"]
            if row["outcome"] == KEPT:
                assert row["reason"].startswith("check(s) failed") or row["distilled_auc"] < row["champion_auc"], row
        holder = champion(client, name)
        promoted = [row["version"] for row in history if row["outcome"] == PROMOTED]
        assert holder is not None and holder.version == promoted[-1]
        # The champion serves: models:/<name>@champion scores the last evaluation day with the AUC its version
        # recorded when it was that day's candidate (when the last day promoted it).
        with pytest.MonkeyPatch.context() as env:
            for key, value in s3.env().items():
                env.setenv(key, value)
            ctx = StageContext(config=pipeline.config, store=pipeline.store, source=make_source(pipeline.config),
                               identity=RunIdentity("registry-check"))
            served = mlflow.pytorch.load_model(f"models:/{name}@{CHAMPION_ALIAS}")
            student_config = next(s for s in pipeline.config.active_students if s.name == student)
            served_value = served_auc(ctx, student_config, days[-1], served)
        # float32 served program vs the report's float64 correction: a near-tie may flip, hence not exact
        expected = history[-1]["distilled_auc"] if history[-1]["outcome"] == PROMOTED else history[-1]["champion_auc"]
        assert served_value == pytest.approx(expected, abs=AUC_TOLERANCE)
        for row in history:
            report("mlflow-server", f"{name} v{row['version']} (eval {row['eval_day']}, AUC "
                                    f"{row['distilled_auc']:.4f}): {row['outcome']}, {row['reason']}"
                                    + (" [champion now]" if row["champion_now"] else ""))
        report("mlflow-server", f"models:/{name}@{CHAMPION_ALIAS} = v{holder.version} loaded from the server and "
                                f"scored {days[-1] + timedelta(days=1)}: AUC {served_value:.4f}")


def test_reports_carry_onnx_parity_and_serving_speed(s3_pipeline: S3Pipeline, report: Report) -> None:
    pipeline = s3_pipeline
    day = pipeline.config.calendar.training_days()[-1]
    for student in pipeline.graph.students:
        stored = TransferabilityReport.model_validate_json(pipeline.store.read_bytes(layout.report_path(student, day)))
        serving = stored.serving
        assert serving.student is not None and serving.teacher is not None
        for export in (serving.student, serving.teacher):
            assert export.onnx.startswith("s3://") and pipeline.store.exists(export.onnx.split(STORE_PREFIX + "/")[1])
            assert export.max_abs_diff <= pipeline.config.eval.onnx_tolerance
            assert export.rows_compared > 1
            for speed in (export.torch, export.onnxruntime):
                assert speed.latency_ms > 0 and speed.throughput_rows_per_s > 0
        report("onnx", f"{student} report {day}: " + (onnx_line(serving) or ""))
