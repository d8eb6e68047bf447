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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Fail a test that leaves Dagster's current defs-state storage changed.

    Entering an instance (as `build_schedule_context`/`build_sensor_context` do when the schedule or
    sensor reads `context.instance`) points a context variable at that instance's storage; a context
    never closed leaves it pointing at an instance that is later garbage-collected, and a later test
    fails at random with "Attempted to resolve undefined DagsterInstance weakref"."""
    from dagster._core.storage.defs_state.base import DefsStateStorage

    before = DefsStateStorage.get()
    result = yield
    assert DefsStateStorage.get() is before, (
        "this test left Dagster's defs-state storage set to an instance it opened: close evaluation "
        "contexts (`with build_schedule_context(...) as context:`)")
    return result
