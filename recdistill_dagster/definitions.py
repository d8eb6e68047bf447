"""The one `Definitions` of the code location (loaded by `dagster dev` through workspace.yaml).

The profile comes from `RECDISTILL_PROFILE` (default `daily`, the open-ended one), an override file of
the deployment from `RECDISTILL_CONFIG`, the state folder from `RECDISTILL_HOME`. Partition dates depend
on the profile, so the definitions are built from it, and the settings resource is bound to it (a
launch configuration can add overrides but never change the profile).
"""

import warnings
from pathlib import Path

from dagster import (
    AssetSelection,
    BetaWarning,
    Definitions,
    ExecutorDefinition,
    PipesSubprocessClient,
    colored_console_logger,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from assets import build_all_assets
from assets.common import asset_key
from recdistill_dagster.config import ExecutorConfig, load_config
from recdistill_dagster.graph import AssetGraph
from recdistill_dagster.home import (
    active_config_file,
    active_profile,
    deployment_profile,
    mlflow_artifact_location,
    mlflow_tracking_uri,
    state_home,
    store_url,
)
from recdistill_dagster.partitions import build_partitions
from recdistill_dagster.runs import TERMINAL_LOGGER, terminal_logger
from recdistill_dagster.schedules import TRAINING_LANE_TAG, build_freshness, build_schedules
from recdistill_dagster.sensors import build_rollback_sensor
from resources import ArtifactStoreResource, MlflowTracking, PipelineSettings, RecDataSource

# allow_nonexistent_upstream_partitions (the self-dependency's first day) is flagged beta.
warnings.filterwarnings("ignore", category=BetaWarning)

SAMPLE_STREAMS_JOB = "sample_streams_job"
DAILY_TRAINING_JOB = "daily_training_job"
ROLLBACK_REPAIR_JOB = "rollback_repair_job"


def build_executor(settings: ExecutorConfig) -> ExecutorDefinition:
    """`runtime.executor`: in-process, or multiprocess with a forkserver that preloads torch (see the README's
    executor comparison for which is faster here)."""
    if settings.kind == "in_process":
        return in_process_executor
    return multiprocess_executor.configured({
        "max_concurrent": settings.max_concurrent,
        "start_method": {"forkserver": {"preload_modules": list(settings.preload_modules)}},
    })


def build_definitions(profile: str | None = None, home: Path | None = None,
                      config_file: str | None = None) -> Definitions:
    profile = profile or active_profile()
    home = home or state_home(profile)
    config = load_config(profile, config_file)
    graph = AssetGraph.of(config)
    partitions = build_partitions(config.calendar)
    settings = PipelineSettings.for_deployment(profile, config_file)
    store = ArtifactStoreResource(base_url=store_url(home))
    freshness = build_freshness(config, graph)
    # The freshness checks are evaluated by their sensor, never as extra steps of a job.
    not_freshness = AssetSelection.checks(*freshness.checks) if freshness.checks else AssetSelection.checks()
    training = AssetSelection.assets(*(asset_key(k) for k in graph.training_keys)) - not_freshness
    resources = {
        "settings": settings,
        "store": store,
        "tracking": MlflowTracking(
            tracking_uri=mlflow_tracking_uri(home),
            experiment_name=f"recdistill-{profile}",
            artifact_location=mlflow_artifact_location(home),
        ),
        "data_source": RecDataSource(settings=settings),
        # Launches `torchrun` when runtime.distributed.nproc_per_node > 1 (rank 0 reports through Pipes).
        "pipes": PipesSubprocessClient(),
    }
    lane = {TRAINING_LANE_TAG: "training"}
    repair_job = define_asset_job(
        ROLLBACK_REPAIR_JOB,
        selection=training,
        partitions_def=partitions.training,
        tags=lane,
        description=(
            "Launched by the teacher rollback sensor: retrains the teacher from the last good snapshot and "
            "re-materializes every partition of every student derived from a bad snapshot, one run over the range "
            "in date order."
        ),
    )
    jobs = [
        repair_job,
        define_asset_job(
            SAMPLE_STREAMS_JOB,
            selection=AssetSelection.assets(*(asset_key(k) for k in graph.data_keys)),
            partitions_def=partitions.data,
            description="Write one day's evaluation, teacher and student sample streams.",
        ),
        define_asset_job(
            DAILY_TRAINING_JOB,
            selection=training,
            partitions_def=partitions.training,
            tags=lane,
            description=(
                "One training partition end to end: teacher (+ recorded logits), then for every student its "
                "dataset, distilled and baseline checkpoints and transferability report."
            ),
        ),
    ]
    return Definitions(
        assets=build_all_assets(config, graph, partitions),
        jobs=jobs,
        schedules=build_schedules(config, graph, SAMPLE_STREAMS_JOB, DAILY_TRAINING_JOB),
        sensors=[build_rollback_sensor(config, graph, store.open(), repair_job, lane), *freshness.sensors],
        asset_checks=freshness.checks,
        resources=resources,
        executor=build_executor(config.runtime.executor),
        # Dagster's console by default; the CLI's terminal (one line per warning, no traces) when it asks.
        loggers={"console": colored_console_logger, TERMINAL_LOGGER: terminal_logger},
    )


defs = build_definitions(deployment_profile(), None, active_config_file())
