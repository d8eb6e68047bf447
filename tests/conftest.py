"""Shared fixtures: the MovieLens folder and an isolated state folder per test session."""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "recdistill-test-mpl"))
# Tests never talk to a user's MLflow server or store, whatever the shell exports.
for variable in ("RECDISTILL_MLFLOW_URI", "RECDISTILL_STORE_URL", "RECDISTILL_HOME"):
    os.environ.pop(variable, None)

from recdistill_dagster.config import DEFAULT_MOVIELENS_PATH, MOVIELENS_ENV  # noqa: E402


@pytest.fixture(scope="session")
def movielens_path() -> Path:
    """The MovieLens folder; skipped where absent, a failure where CI requires it."""
    path = Path(os.environ.get(MOVIELENS_ENV, DEFAULT_MOVIELENS_PATH))
    if not (path / "ratings.parquet").exists():
        message = f"MovieLens data not found at {path} (set {MOVIELENS_ENV})"
        if os.environ.get("RECDISTILL_REQUIRE_MOVIELENS"):
            pytest.fail(message)
        pytest.skip(message)
    return path
