"""Real deployed components started on 127.0.0.1 by the project itself (integration tests, local trials).

Each is a context manager that starts the service on a free port, waits until it answers, yields
what a client needs (URLs, environment), and stops it and deletes its files on exit, also when
the body raised:

    postgres_server()         PostgreSQL (initdb + pg_ctl; as the `postgres` user when run as root)
    s3_server()               a moto S3 server (`ThreadedMotoServer`) with one bucket
    mlflow_server(pg, s3)     `mlflow server` with a Postgres backend store and S3 artifacts

No secrets: Postgres trusts local connections on a loopback-only listener in a throw-away data
folder, and moto accepts any credentials (the placeholders below are moto's own convention).
No Dagster import: the Dagster side (dagster.yaml) is `recdistill_dagster.deploy`.
"""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
PG_BIN_ENV = "RECDISTILL_PG_BIN"  # folder with initdb/pg_ctl/createdb, else the newest under PG_ROOT
PG_ROOT = Path("/usr/lib/postgresql")
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "postgres"  # initdb refuses root: run the server as this account when we are root
PG_SCHEME = "postgresql+psycopg2"  # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3
S3_REGION = "us-east-1"
MOTO_PLACEHOLDER_KEY = "testing"  # moto accepts any key; not a credential
MLFLOW_ARTIFACT_PREFIX = "mlflow"
LOG_TAIL_CHARS = 3000
STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.25
MLFLOW_START_TIMEOUT_S = 180.0  # the first start runs the schema migrations (~30 s measured)


class ServiceError(RuntimeError):
    """A service did not start or stop; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


def _announce(name: str, text: str) -> None:
    """One line per service event, named, on stderr (pytest shows it with -s or on a failure)."""
    print(f"{name}: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path:
    configured = os.environ.get(PG_BIN_ENV)
    if configured:
        candidates = [Path(configured)]
    else:
        versions = sorted((p for p in PG_ROOT.glob("*/bin") if p.parent.name.isdigit()),
                          key=lambda p: int(p.parent.name))
        candidates = versions[::-1]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise ServiceError(
        f"no PostgreSQL server binaries (initdb, pg_ctl) found in {candidates or PG_ROOT}; install PostgreSQL "
        f"(Debian: apt-get install postgresql) or set {PG_BIN_ENV} to its bin folder"
    )


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    data_dir: Path
    bin_dir: Path
    as_user: str | None  # the system account running the server, when it is not us

    def url(self, database: str, scheme: str = PG_SCHEME) -> str:
        """SQLAlchemy URL of `database` (no password: the server trusts loopback connections)."""
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create `name` (a new, empty database); returns its URL."""
        _run(self._as_server_user([str(self.bin_dir / "createdb"), "-h", self.host, "-p", str(self.port),
                                   "-U", self.user, name]), f"createdb {name}")
        return self.url(name)

    def _as_server_user(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", self.as_user, "--", *command] if self.as_user else command


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServiceError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-LOG_TAIL_CHARS:]}")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on 127.0.0.1:<free port>, deleted on exit.

    As root the cluster belongs to the `postgres` account (initdb refuses root): its data folder is
    created in the system temp folder (which that account can reach) and handed over with chown.
    """
    bin_dir = postgres_bin()
    as_user = PG_SYSTEM_USER if os.geteuid() == 0 else None
    data_dir = Path(tempfile.mkdtemp(prefix="recdistill-pg-"))
    if as_user:
        shutil.chown(data_dir, user=as_user, group=None)
    server = PostgresServer(LOOPBACK, free_port(), PG_SUPERUSER, data_dir, bin_dir, as_user)
    log = data_dir / "server.log"
    started = False
    try:
        _run(server._as_server_user([str(bin_dir / "initdb"), "-D", str(data_dir / "data"), "-A", "trust",
                                     "-U", PG_SUPERUSER, "--no-sync"]), "initdb")
        options = f"-p {server.port} -k {data_dir} -c listen_addresses={LOOPBACK} -c fsync=off"
        start = server._as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data_dir / "data"), "-o", options,
                                        "-l", str(log), "-w", "start"])
        done = subprocess.run(start, capture_output=True, text=True, check=False)
        started = done.returncode == 0
        if not started:
            raise ServiceError(f"postgres did not start on {LOOPBACK}:{server.port}: {done.stderr}\n{_tail(log)}")
        _announce("postgres", f"PostgreSQL ({bin_dir.parent.name}) up on {LOOPBACK}:{server.port}, data {data_dir}")
        yield server
    finally:
        if started:
            stop = server._as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data_dir / "data"), "-m", "fast",
                                           "-w", "stop"])
            subprocess.run(stop, capture_output=True, text=True, check=False, timeout=STOP_TIMEOUT_S * 3)
            _announce("postgres", f"stopped {LOOPBACK}:{server.port}")
        shutil.rmtree(data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- S3 (moto)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    region: str = S3_REGION

    def url(self, *parts: str) -> str:
        """`s3://<bucket>/<parts…>`."""
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts if p)])

    def env(self) -> dict[str, str]:
        """What boto3, s3fs, polars and MLflow read to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": MOTO_PLACEHOLDER_KEY,
            "AWS_SECRET_ACCESS_KEY": MOTO_PLACEHOLDER_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def storage_options(self) -> dict[str, str]:
        """polars `storage_options` (object_store keys)."""
        return {"aws_endpoint_url": self.endpoint_url, "aws_access_key_id": MOTO_PLACEHOLDER_KEY,
                "aws_secret_access_key": MOTO_PLACEHOLDER_KEY, "aws_region": self.region,
                "aws_allow_http": "true"}

    def s3fs_options(self) -> dict[str, object]:
        """`s3fs.S3FileSystem(**options)` / fsspec storage options."""
        return {"key": MOTO_PLACEHOLDER_KEY, "secret": MOTO_PLACEHOLDER_KEY,
                "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region}}


@contextlib.contextmanager
def s3_server(bucket: str = "recdistill") -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1:<free port> with `bucket` created; state is in memory only."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    try:
        s3 = S3Server(endpoint_url=f"http://{LOOPBACK}:{port}", bucket=bucket)
        client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name=s3.region,
                              aws_access_key_id=MOTO_PLACEHOLDER_KEY, aws_secret_access_key=MOTO_PLACEHOLDER_KEY)
        client.create_bucket(Bucket=bucket)
        _announce("s3", f"moto S3 server up on {s3.endpoint_url}, bucket {bucket}")
        yield s3
    finally:
        server.stop()
        _announce("s3", f"stopped {LOOPBACK}:{port}")


# --------------------------------------------------------------------------- MLflow server


@dataclass(frozen=True)
class MlflowServer:
    tracking_uri: str
    backend_store_uri: str
    artifacts_destination: str
    client_env: dict[str, str] = field(default_factory=dict)  # what a client needs to read artifacts


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{name} exited with {process.returncode} before answering {url}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(POLL_INTERVAL_S)
    raise ServiceError(f"{name} did not answer {url} within {timeout:.0f} s:\n{_tail(log)}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the leader's process group, SIGKILL if it does not end in time."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def mlflow_server(postgres: PostgresServer, s3: S3Server, database: str = "mlflow") -> Iterator[MlflowServer]:
    """`mlflow server --workers 1` on 127.0.0.1:<free port>: tracking + registry in Postgres
    (`database`, created here), artifacts proxied to `s3://<bucket>/mlflow` on the moto server."""
    backend = postgres.create_database(database)
    port = free_port()
    destination = s3.url(MLFLOW_ARTIFACT_PREFIX)
    workdir = Path(tempfile.mkdtemp(prefix="recdistill-mlflow-"))
    log = workdir / "server.log"
    env = {**os.environ, **s3.env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--host", LOOPBACK, "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend, "--artifacts-destination", destination]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                   start_new_session=True)
    try:
        started = time.monotonic()
        _wait_http(f"http://{LOOPBACK}:{port}/health", process, MLFLOW_START_TIMEOUT_S, log, "mlflow-server")
        _announce("mlflow-server", f"up on http://{LOOPBACK}:{port} after {time.monotonic() - started:.0f} s "
                                   f"(backend {postgres.url(database)}, artifacts {destination})")
        yield MlflowServer(tracking_uri=f"http://{LOOPBACK}:{port}", backend_store_uri=backend,
                           artifacts_destination=destination, client_env=s3.env())
    finally:
        _stop_group(process)
        _announce("mlflow-server", f"stopped {LOOPBACK}:{port}")
        shutil.rmtree(workdir, ignore_errors=True)
