"""MLflow tracking: one MLflow run per training materialization (role × partition).

The embedded default is a SQLite tracking store with artifacts in the state folder; the same
resource takes an MLflow server URI (`http://127.0.0.1:5000`). Each run is opened and closed by a
context manager, so a failed materialization marks its MLflow run FAILED instead of leaving it
open (the trap of the legacy dagster-mlflow resource).
"""

import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from dagster import ConfigurableResource
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

# Parameter values longer than this are truncated (MLflow's limit is 6000 characters).
_MAX_PARAM_CHARS = 500
_METRIC_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


def flatten_params(payload: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → flat {"teacher.arch.width": "64"} as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = json.dumps(value, default=str) if not isinstance(value, str) else value
            flat[name] = text[:_MAX_PARAM_CHARS]
    return flat


class TrackedRun:
    """Logging helpers bound to one open MLflow run."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten_params(params)
        items = list(flat.items())
        for start in range(0, len(items), 90):
            batch = [mlflow.entities.Param(k, v) for k, v in items[start : start + 90]]
            self.client.log_batch(self.run_id, params=batch)

    def log_metrics(self, metrics: Mapping[str, float | int | None], step: int = 0) -> None:
        entries = [
            mlflow.entities.Metric(name, float(value), 0, step)
            for name, value in metrics.items()
            if value is not None and np.isfinite(float(value))
        ]
        for start in range(0, len(entries), _METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=entries[start : start + _METRIC_BATCH])

    def log_step_history(self, history: Sequence[Mapping[str, Any]], prefix: str = "train") -> None:
        """Per-step training metrics (each dict has a `step` and numeric values)."""
        entries = []
        for row in history:
            step = int(row["step"])
            for name, value in row.items():
                if name == "step" or value is None or not isinstance(value, int | float):
                    continue
                if np.isfinite(float(value)):
                    entries.append(mlflow.entities.Metric(f"{prefix}/{name}", float(value), 0, step))
        for start in range(0, len(entries), _METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=entries[start : start + _METRIC_BATCH])

    def log_bytes(self, name: str, data: bytes, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_json(self, name: str, payload: Any, artifact_path: str | None = None) -> None:
        self.log_bytes(name, json.dumps(payload, indent=2, sort_keys=True, default=str).encode(), artifact_path)

    def log_serving_model(self, module: torch.nn.Module, example: tuple[np.ndarray, ...],
                          input_names: tuple[str, ...], name: str) -> str:
        """Log an exported (torch.export / pt2) serving module; returns the model URI."""
        signature = ModelSignature(
            inputs=Schema(
                [TensorSpec(arr.dtype, (-1, *arr.shape[1:]), input_name)
                 for arr, input_name in zip(example, input_names, strict=True)]
            ),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "click_probability")]),
        )
        # Explicit requirements: inferring them costs seconds per call and pickles nothing.
        info = mlflow.pytorch.log_model(
            module,
            name=name,
            input_example=example,
            signature=signature,
            serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
        )
        return info.model_uri


class MlflowTracking(ConfigurableResource):
    """Where training runs are recorded."""

    tracking_uri: str
    experiment_name: str = "recdistill"
    # Needed with a SQLite store and no server: otherwise artifacts land in the working directory.
    artifact_location: str | None = None

    def _client(self) -> MlflowClient:
        if self.tracking_uri.startswith("sqlite:///"):
            # The SQLite file's folder must exist before the first connection creates the schema.
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri)

    def client(self) -> MlflowClient:
        """A client of this tracking store, to read runs back (e.g. loss histories for the HTML report)."""
        return self._client()

    def registered_model_name(self, student: str) -> str:
        """One registered model per student and profile: `recdistill-<profile>-<student>`."""
        return f"{self.experiment_name}-{student}"

    def load_alias(self, student: str, alias: str) -> torch.nn.Module:
        """The served tower a registry alias points at (`models:/<name>@<alias>`), loaded for scoring."""
        self._client()  # sets the tracking URI the models:/ scheme resolves against
        module: torch.nn.Module = mlflow.pytorch.load_model(f"models:/{self.registered_model_name(student)}@{alias}")
        return module

    def run_url(self, run_id: str) -> str | None:
        """The run's page in the MLflow UI when the store is a server (http/https); None for SQLite."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"
                "?workflowType=machine_learning")

    def experiment_id(self) -> str:
        client = self._client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        if self.artifact_location:
            Path(self.artifact_location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        return client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)

    @contextmanager
    def start_run(self, run_name: str, tags: Mapping[str, str]) -> Iterator[TrackedRun]:
        client = self._client()
        experiment_id = self.experiment_id()
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as active:
            yield TrackedRun(client, active.info.run_id)

    def find_runs(self, filter_string: str = "") -> list[mlflow.entities.Run]:
        client = self._client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return []
        return list(client.search_runs([experiment.experiment_id], filter_string=filter_string, max_results=5000))
