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
# For a Postgres-backed instance replace this file (see README: "Production deployment").
telemetry:
  enabled: false
nux:
  enabled: false
# One run of the training lane at a time: the chain is self-dependent, so a scheduled run, a
# backfill and the rollback sensor's repair must never train days concurrently. Jobs carry the
# lane tag; every training asset also claims the `recdistill_training` pool, which with run
# granularity holds any queued run that would train (a UI asset backfill too) until the pool is free.
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
"""


def active_profile() -> str:
    return os.environ.get("RECDISTILL_PROFILE", "demo")


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
