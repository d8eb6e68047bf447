"""Real components for `make test-integrations`, each started once per session on 127.0.0.1.

The services come from `recdistill_dagster.services` (the project's own code starts and stops
them; each names itself in the output: `postgres: …`, `s3: …`, `mlflow-server: …`). A Dagster
instance on Postgres gets its own database per test module.
"""

import importlib.util
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from recdistill_dagster.deploy import PostgresStorage, postgres_dagster_yaml, write_dagster_yaml
from recdistill_dagster.services import (
    MlflowServer,
    PostgresServer,
    S3Server,
    mlflow_server,
    postgres_server,
    s3_server,
)

# The `integrations` extra (make install-integrations); `make install` alone does not have it.
EXTRA_MODULES = ("dagster_postgres", "dagster_k8s", "psycopg2", "s3fs", "moto", "boto3")
MARKER = "integrations"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without the extra, the default suite skips this folder; asking for the marker is an error."""
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    if (config.option.markexpr or "").strip() == MARKER:
        raise pytest.UsageError(f"the integration tests need {', '.join(missing)}: run `make test-integrations` "
                                "(it installs the `integrations` extra with constraints.txt)")
    return True


_databases = itertools.count()
_REPORT: list[str] = []  # `part: what was verified`, printed at the end of the session
Report = Callable[[str, str], None]


def _report(part: str, text: str) -> None:
    _REPORT.append(f"{part}: {text}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT:
        terminalreporter.section("integrations: what ran, part by part")
        for line in _REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def report() -> Report:
    """`report(part, text)`: a line naming the part (postgres, s3, mlflow-server, onnx, ddp) in the summary."""
    return _report


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        _report("postgres", f"PostgreSQL server ({server.bin_dir.parent.name}) started on {server.host}:{server.port}")
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        _report("s3", f"moto S3 server started on {server.endpoint_url}, bucket {server.bucket}")
        yield server


@pytest.fixture(scope="session")
def mlflow_tracking_server(postgres: PostgresServer, s3: S3Server) -> Iterator[MlflowServer]:
    with mlflow_server(postgres, s3) as server:
        _report("mlflow-server", f"mlflow server on {server.tracking_uri} (backend {server.backend_store_uri}, "
                                 f"artifacts {server.artifacts_destination})")
        yield server


def postgres_instance(postgres: PostgresServer, dagster_home: Path) -> DagsterInstance:
    """A Dagster instance whose run, event-log and schedule storage is a fresh Postgres database."""
    name = f"dagster_{next(_databases)}"
    postgres.create_database(name)
    storage = PostgresStorage(hostname=postgres.host, port=postgres.port, username=postgres.user, db_name=name)
    write_dagster_yaml(dagster_home, postgres_dagster_yaml(storage))
    return DagsterInstance.from_config(str(dagster_home))


@pytest.fixture(scope="module")
def pg_instance(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterInstance]:
    instance = postgres_instance(postgres, tmp_path_factory.mktemp("dagster-home"))
    try:
        yield instance
    finally:
        instance.dispose()
