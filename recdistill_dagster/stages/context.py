"""The one object every stage function takes: what it runs with, and who is running it."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from models.device import configure_threads, resolve_device
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.data.schema import FeatureVocab
from recdistill_dagster.data.source import DaySource
from recdistill_dagster.storage import Store

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunIdentity:
    """Who produced an artifact: the orchestrator's run and the tracking run (both recorded in lineage)."""

    run_id: str
    tracking_run_id: str | None = None

    @property
    def short(self) -> str:
        return self.run_id[:8]


@dataclass
class StageContext:
    """Configuration, storage, the data source, identity and progress for one stage call.

    The asset layer builds one per call (with the Dagster run id and the MLflow run id); a test builds
    one over an in-memory store. `device` resolves and applies `runtime.threads` on first use.
    """

    config: PipelineConfig
    store: Store
    source: DaySource
    identity: RunIdentity
    progress: Progress | None = None

    @cached_property
    def vocab(self) -> FeatureVocab:
        return self.source.vocab()

    @cached_property
    def device(self) -> torch.device:
        configure_threads(self.config.runtime.threads)
        return resolve_device(self.config.runtime.device)
