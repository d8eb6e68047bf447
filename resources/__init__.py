"""Dagster resources: one per external system (settings, artifact storage, MLflow, data source)."""

from resources.data_source import RecDataSource
from resources.settings import PipelineSettings
from resources.storage import ArtifactStoreResource
from resources.tracking import MlflowTracking

__all__ = ["ArtifactStoreResource", "MlflowTracking", "PipelineSettings", "RecDataSource"]
