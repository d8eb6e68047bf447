"""The Postgres dagster.yaml: storage, the embedded instance's concurrency rules, no secret in the file."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from recdistill_dagster.deploy import PostgresStorage, main, postgres_dagster_yaml, write_dagster_yaml
from recdistill_dagster.home import DAGSTER_YAML


def test_postgres_yaml_has_storage_and_the_embedded_concurrency_rules() -> None:
    text = postgres_dagster_yaml(PostgresStorage(hostname="db", port=6543, username="dagster", db_name="runs",
                                                 password_env="DAGSTER_PG_PASSWORD"))
    settings = yaml.safe_load(text)
    assert settings["concurrency"] == yaml.safe_load(DAGSTER_YAML)["concurrency"]
    assert settings["telemetry"] == {"enabled": False} and settings["nux"] == {"enabled": False}
    db = settings["storage"]["postgres"]["postgres_db"]
    assert db == {"hostname": "db", "port": 6543, "username": "dagster", "db_name": "runs",
                  "scheme": "postgresql+psycopg2", "password": {"env": "DAGSTER_PG_PASSWORD"}}


def test_no_password_key_without_a_variable_and_bad_settings_refused() -> None:
    db = yaml.safe_load(postgres_dagster_yaml(PostgresStorage(hostname="db", username="u", db_name="d")))
    assert "password" not in db["storage"]["postgres"]["postgres_db"]
    with pytest.raises(ValidationError, match="port"):
        PostgresStorage(hostname="db", username="u", db_name="d", port=0)
    with pytest.raises(ValidationError, match="passwd"):
        PostgresStorage(hostname="db", username="u", db_name="d", passwd="x")  # type: ignore[call-arg]


def test_write_is_atomic_and_replaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "dagster"
    write_dagster_yaml(home, "old: 1\n")
    assert main(["--host", "db", "--user", "u", "--db", "d", "--dagster-home", str(home)]) == 0
    assert yaml.safe_load((home / "dagster.yaml").read_text())["storage"]["postgres"]["postgres_db"]["db_name"] == "d"
    assert [p.name for p in home.iterdir()] == ["dagster.yaml"]  # no temp file left behind
    assert str(home / "dagster.yaml") in capsys.readouterr().out
