"""The state folder: every file the pipeline writes lives below one directory.

`RECDISTILL_HOME` selects it (default `.state/<profile>` in the working directory). Below it:
`dagster/` (DAGSTER_HOME: SQLite run/event storage), `mlflow/` (SQLite tracking store and
artifacts), and the artifact store's `samples/`, `teacher_logits/`, `student_dataset/`,
`checkpoints/` and `reports/`.
"""

import os
from pathlib import Path

DAGSTER_YAML = """\
# Written by recdistill-dagster. SQLite storage under this folder (Dagster's default for DAGSTER_HOME).
# For a PostgreSQL-backed instance write this file with `python -m recdistill_dagster.deploy`
# (README: "Deployed components").
telemetry:
  enabled: false
nux:
  enabled: false
# One writer on the chain (README: "One writer on the chain"). The chain is self-dependent, so a scheduled
# run, a backfill, the rollback sensor's repair and a CLI run must never write it at the same time. Here
# the run queue holds back queued runs: jobs that train carry the lane tag, and every asset of the chain
# claims the `recdistill_chain` pool, which with run granularity holds any queued run that would write it
# (a UI asset backfill too) while another one is in progress. Runs executed in-process (the CLI,
# `dagster asset materialize`) skip the queue; every step of every run therefore also takes the chain
# lock, the instance's `recdistill_chain_writer` slot, for the whole run.
# (Dagster refuses `run_queue:` next to `concurrency:`; the run queue limits live in `concurrency.runs`.)
concurrency:
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: "recdistill/lane"
        value: "training"
        limit: 1
  pools:
    granularity: run
    default_limit: 1
# The daemon gives the chain lock of an ended run back (so the UI's pool page shows the truth); the next
# writer would release it anyway, daemon or not.
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 30
# Warnings of the model code in the run log (a teacher whose recorded logits echo fitted labels).
python_logs:
  managed_python_loggers: [models.training]
"""


# `make run` and the CLI default to the finite demo; a code location loaded without RECDISTILL_PROFILE
# (a deployment: dagster-daemon and dagster-webserver on workspace.yaml) serves the open-ended daily one.
CLI_DEFAULT_PROFILE = "demo"
DEPLOYMENT_DEFAULT_PROFILE = "daily"


def active_profile() -> str:
    return os.environ.get("RECDISTILL_PROFILE", CLI_DEFAULT_PROFILE)


def deployment_profile() -> str:
    return os.environ.get("RECDISTILL_PROFILE", DEPLOYMENT_DEFAULT_PROFILE)


def active_config_file() -> str | None:
    """The deployment's own override file (`RECDISTILL_CONFIG`), applied to every run it serves."""
    return os.environ.get("RECDISTILL_CONFIG") or None


def state_home(profile: str | None = None) -> Path:
    configured = os.environ.get("RECDISTILL_HOME")
    home = Path(configured) if configured else Path.cwd() / ".state" / (profile or active_profile())
    return home.resolve()


def ensure_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME (from the environment, else `<home>/dagster`) with a dagster.yaml in it."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    config_file = dagster_home / "dagster.yaml"
    if not config_file.exists():
        config_file.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


# Our own variable, not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() writes that one into the
# process environment, which would leak one pipeline's store into the next in the same process.
MLFLOW_URI_ENV = "RECDISTILL_MLFLOW_URI"


def mlflow_tracking_uri(home: Path) -> str:
    """`RECDISTILL_MLFLOW_URI` if set (e.g. an MLflow server), else SQLite in the state folder."""
    configured = os.environ.get(MLFLOW_URI_ENV)
    if configured:
        return configured
    return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"


def mlflow_artifact_location(home: Path) -> str | None:
    if os.environ.get(MLFLOW_URI_ENV):
        return None  # the server decides where artifacts go
    return (home / "mlflow" / "artifacts").as_uri()


def store_url(home: Path) -> str:
    """`RECDISTILL_STORE_URL` (any fsspec URL) if set, else the state folder itself."""
    return os.environ.get("RECDISTILL_STORE_URL") or str(home)
