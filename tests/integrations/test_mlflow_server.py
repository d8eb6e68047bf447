"""The MLflow tracking server (Postgres backend store, artifacts on the moto S3 server) and the registry.

Student main towers are logged the way the pipeline logs them (`TrackedRun.log_serving_model`, pt2),
registered one version per day, and the `champion` alias moves by the rule of `model_registry`;
`models:/<name>@champion` then loads and serves the champion's predictions.
"""

from datetime import timedelta

import boto3
import mlflow
import numpy as np
import pytest
import torch

from models import StudentModel, frame_to_tensors
from models.export import INPUT_NAMES, torch_predict
from recdistill_dagster.config import load_config
from recdistill_dagster.data.source import make_source
from recdistill_dagster.model_registry import (
    CHAMPION_ALIAS,
    KEPT,
    PROMOTED,
    PromotionEvidence,
    alias_history,
    champion,
    promote_if_better,
    register_version,
)
from recdistill_dagster.services import MlflowServer, S3Server
from resources import MlflowTracking
from tests.integrations.conftest import Report

pytestmark = pytest.mark.integrations

MODEL_NAME = "recdistill-tiny-student"
SERVED_TOLERANCE = 1e-6
PASSED = {"teacher_health": True, "join_coverage": True}
# (distilled AUC, the champion's AUC on the same day, checks) per day, and whether the alias moves.
DAYS = [
    (0.700, None, PASSED, PROMOTED),  # first version
    (0.690, 0.705, PASSED, KEPT),  # below the champion on that day
    (0.800, 0.701, {"teacher_health": False, "join_coverage": True}, KEPT),  # a bad teacher day
    (0.712, 0.709, PASSED, PROMOTED),  # better on the same day
]


def test_mlflow_server_registry_moves_champion_only_on_evidence(mlflow_tracking_server: MlflowServer, s3: S3Server,
                                                                report: Report) -> None:
    config = load_config("tiny")
    source = make_source(config)
    first_day = config.calendar.start_date
    spec = config.active_students[0]
    tensors = frame_to_tensors(source.impressions(first_day), spec.arch.seq_len)
    rows = (tensors.sparse.numpy(), tensors.dense.numpy(), tensors.history.numpy())
    example = tuple(array[:2] for array in rows)
    tracking = MlflowTracking(tracking_uri=mlflow_tracking_server.tracking_uri, experiment_name="recdistill-registry")
    client = tracking.client()
    modules = {}
    for offset, (auc, champion_auc, checks, expected) in enumerate(DAYS):
        day = first_day + timedelta(days=offset)
        torch.manual_seed(offset)
        module = StudentModel(source.vocab(), spec.arch).serving_module(spec.sampling).eval()
        with tracking.start_run(f"student {day}", {"recdistill.role": "student", "dagster.partition": str(day)}) as run:
            model_uri = run.log_serving_model(module, example, INPUT_NAMES, name="student_main_tower")
        version = register_version(client, MODEL_NAME, model_uri, run.run_id, {"partition": day.isoformat()})
        modules[version.version] = module
        decision = promote_if_better(client, MODEL_NAME, version.version,
                                     PromotionEvidence(day + timedelta(days=1), auc, checks, champion_auc))
        assert decision.outcome == expected, decision

    history = alias_history(client, MODEL_NAME)
    assert [row["outcome"] for row in history] == [expected for *_, expected in DAYS]
    holder = champion(client, MODEL_NAME)
    assert holder is not None and holder.version == history[-1]["version"]
    assert [row["champion_now"] for row in history] == [False, False, False, True]

    served = mlflow.pytorch.load_model(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")  # the pt2 program
    batch = tuple(array[:64] for array in rows)
    predicted = torch_predict(served, batch)  # type: ignore[arg-type]
    expected_output = torch_predict(modules[holder.version], batch)  # type: ignore[arg-type]
    assert np.abs(predicted - expected_output).max() <= SERVED_TOLERANCE

    listing = boto3.client("s3", **_boto_options(s3)).list_objects_v2(Bucket=s3.bucket, Prefix="mlflow/")
    stored = [item["Key"] for item in listing.get("Contents", [])]
    assert any(key.endswith("MLmodel") for key in stored), stored[:10]
    report("mlflow-server", f"registry {MODEL_NAME}: alias history "
                            + "; ".join(f"v{row['version']} {row['outcome']} ({row['reason']})" for row in history))
    report("mlflow-server", f"models:/{MODEL_NAME}@{CHAMPION_ALIAS} (v{holder.version}) loaded and served 64 rows "
                            f"equal to its PyTorch module; {len(stored)} artifact objects in s3://{s3.bucket}/mlflow")


def _boto_options(s3: S3Server) -> dict[str, str]:
    env = s3.env()
    return {"endpoint_url": s3.endpoint_url, "region_name": s3.region,
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}

