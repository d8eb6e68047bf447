"""The services stop and leave nothing behind also when the code using them fails."""

import socket
from pathlib import Path

import pytest

from recdistill_dagster.services import (
    LOOPBACK,
    PG_BIN_ENV,
    PostgresServer,
    S3Server,
    ServiceError,
    mlflow_server,
    postgres_bin,
    postgres_server,
    s3_server,
)
from tests.integrations.conftest import Report

pytestmark = pytest.mark.integrations


class BodyFailed(RuntimeError):
    pass


def _answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOOPBACK, port)) == 0


def test_postgres_and_s3_stop_and_clean_up_when_the_body_fails(report: Report) -> None:
    seen: dict[str, object] = {}
    with pytest.raises(BodyFailed), postgres_server() as pg, s3_server("scratch") as s3:
        seen.update(pg_port=pg.port, data_dir=pg.data_dir, s3_port=int(s3.endpoint_url.rsplit(":", 1)[1]))
        assert _answers(pg.port) and _answers(int(seen["s3_port"]))  # type: ignore[call-overload]
        raise BodyFailed
    assert not _answers(seen["pg_port"]) and not _answers(seen["s3_port"])  # type: ignore[arg-type]
    assert not Path(seen["data_dir"]).exists()  # type: ignore[arg-type]
    report("postgres", "a failing body: server stopped, port closed, data folder deleted")
    report("s3", "a failing body: moto server stopped, port closed")


def test_mlflow_server_stops_when_the_body_fails(postgres: PostgresServer, s3: S3Server, report: Report) -> None:
    with pytest.raises(BodyFailed), mlflow_server(postgres, s3, database="mlflow_failing_body") as server:
        port = int(server.tracking_uri.rsplit(":", 1)[1])
        assert _answers(port)
        raise BodyFailed
    assert not _answers(port)
    report("mlflow-server", "a failing body: server process group stopped, port closed")


def test_missing_postgres_binaries_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(PG_BIN_ENV, str(tmp_path))
    with pytest.raises(ServiceError, match=PG_BIN_ENV):
        postgres_bin()
