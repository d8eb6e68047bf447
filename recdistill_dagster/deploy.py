"""The Dagster instance of a deployment: `dagster.yaml` for run, event-log and schedule storage on PostgreSQL.

The concurrency rules (one run of the training lane, the `recdistill_chain` pool) are the ones
the embedded SQLite instance gets (`home.DAGSTER_YAML`), read from there rather than restated, so
both instances serialize the chain the same way. Telemetry and the UI's first-run modal are off.

Nothing secret is written: the password, when the server needs one, is read by Dagster from the
environment variable named in `PostgresStorage.password_env` (`{env: VAR}` in the file).

    python -m recdistill_dagster.deploy --host db.internal --port 5432 --user dagster \
        --db dagster --password-env DAGSTER_PG_PASSWORD --dagster-home /srv/dagster
"""

import argparse
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from recdistill_dagster.config import StrictModel
from recdistill_dagster.files import replacing
from recdistill_dagster.home import DAGSTER_YAML

DEFAULT_PG_PORT = 5432
# SQLAlchemy 2.1 maps a bare postgresql:// URL to psycopg 3; dagster-postgres installs psycopg2.
PSYCOPG2_SCHEME = "postgresql+psycopg2"
HEADER = """\
# Written by recdistill-dagster (python -m recdistill_dagster.deploy): run, event-log and schedule
# storage on PostgreSQL; the concurrency rules are those of the embedded instance (home.DAGSTER_YAML).
"""


class PostgresStorage(StrictModel):
    """Where Dagster's run, event-log and schedule storage live."""

    hostname: str = Field(min_length=1)
    port: int = Field(DEFAULT_PG_PORT, ge=1, le=65535)
    username: str = Field(min_length=1)
    db_name: str = Field(min_length=1)
    password_env: str | None = Field(None, description="environment variable holding the password")
    scheme: str = PSYCOPG2_SCHEME


def embedded_instance_settings() -> dict[str, Any]:
    """Everything in the embedded instance's dagster.yaml (telemetry, nux, concurrency)."""
    settings = yaml.safe_load(DAGSTER_YAML)
    if not isinstance(settings, dict) or "concurrency" not in settings:
        raise ValueError("home.DAGSTER_YAML has no concurrency section to reuse")
    return settings


def postgres_instance_settings(storage: PostgresStorage) -> dict[str, Any]:
    postgres_db: dict[str, Any] = {
        "hostname": storage.hostname,
        "port": storage.port,
        "username": storage.username,
        "db_name": storage.db_name,
        "scheme": storage.scheme,
    }
    if storage.password_env:
        postgres_db["password"] = {"env": storage.password_env}
    return {
        **embedded_instance_settings(),
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
        "storage": {"postgres": {"postgres_db": postgres_db}},
    }


def postgres_dagster_yaml(storage: PostgresStorage) -> str:
    return HEADER + yaml.safe_dump(postgres_instance_settings(storage), sort_keys=False)


def write_dagster_yaml(dagster_home: Path, text: str) -> Path:
    """Write `<dagster_home>/dagster.yaml` atomically (temp file in the folder, then rename)."""
    target = dagster_home / "dagster.yaml"
    with replacing(target) as temp:
        temp.write_text(text)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdistill_dagster.deploy", description=__doc__.split("\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=DEFAULT_PG_PORT)
    parser.add_argument("--user", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--password-env", default=None, help="name of the variable holding the password")
    parser.add_argument("--dagster-home", type=Path, default=None, help="write dagster.yaml there (else print it)")
    args = parser.parse_args(argv)
    text = postgres_dagster_yaml(PostgresStorage(hostname=args.host, port=args.port, username=args.user,
                                                 db_name=args.db, password_env=args.password_env))
    if args.dagster_home is None:
        print(text, end="")
    else:
        print(write_dagster_yaml(args.dagster_home, text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
