"""Fixtures of the browser end-to-end tests (marker `e2e`, `make e2e`).

One session: a fresh `tiny` state folder whose sample streams are materialized through Dagster,
`dagster dev` and `mlflow server` on free localhost ports (each in its own process group, stopped
at the end), and Debian's Chromium driven by Playwright. Everything a person would look at lands
in the output folder `RECDISTILL_E2E_OUT` (default `.state/e2e/`):

    screenshots/*.png     what the browser saw
    logs/*.log            dagster dev and mlflow server output
    state/                the state folder of the session (Dagster instance, MLflow store, reports)

Without Playwright or Chromium the tests are skipped, unless `RECDISTILL_REQUIRE_E2E=1` (set by
`make e2e` and CI), where that is a failure.
"""

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recdistill_dagster.config import load_config
from recdistill_dagster.graphql_client import DagsterGraphQL
from recdistill_dagster.home import DAGSTER_YAML
from tests.e2e.support import CHROMIUM_ARGS, REPO, Server, chromium_path, free_port

PROFILE = "tiny"
CONFIG = load_config(PROFILE)
# The partition the UI test launches: the batch phase (first training partition).
TRAINING_PARTITION = CONFIG.calendar.batch_end
VIEWPORT = {"width": 1920, "height": 1200}
BIN = Path(sys.executable).parent


@dataclass
class E2EPaths:
    out: Path
    screenshots: Path
    logs: Path
    home: Path

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"


@dataclass
class RunningServer:
    url: str
    server: Server


@pytest.fixture(scope="session")
def browser_available() -> None:
    """Skip (or fail under RECDISTILL_REQUIRE_E2E=1) when Playwright or Chromium is missing."""
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the `playwright` package is not installed (pip install -e '.[dev]')")
    if not Path(chromium_path()).exists():
        problems.append(f"no Chromium at {chromium_path()} (apt-get install chromium, or set RECDISTILL_CHROMIUM)")
    if problems:
        message = "; ".join(problems) + " — `make e2e` installs both"
        if os.environ.get("RECDISTILL_REQUIRE_E2E"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def e2e_paths() -> E2EPaths:
    out = Path(os.environ.get("RECDISTILL_E2E_OUT", REPO / ".state" / "e2e")).resolve()
    paths = E2EPaths(out=out, screenshots=out / "screenshots", logs=out / "logs", home=out / "state")
    for folder in (paths.screenshots, paths.logs, paths.home):
        shutil.rmtree(folder, ignore_errors=True)  # only our own subfolders, each run starts fresh
        folder.mkdir(parents=True)
    paths.dagster_home.mkdir()
    (paths.dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)  # telemetry and the nux modal off
    return paths


def server_env(paths: E2EPaths) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RECDISTILL_MLFLOW_URI", "RECDISTILL_STORE_URL", "MLFLOW_TRACKING_URI")}
    env.update(
        RECDISTILL_PROFILE=PROFILE,
        RECDISTILL_HOME=str(paths.home),
        DAGSTER_HOME=str(paths.dagster_home),
        MPLCONFIGDIR=str(paths.out / ".matplotlib"),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    return env


@pytest.fixture(scope="session")
def sample_streams(e2e_paths: E2EPaths) -> list[str]:
    """Every data day (the UI launches the training partitions), materialized through Dagster on the instance."""
    from dagster import DagsterInstance

    from recdistill_dagster.definitions import SAMPLE_STREAMS_JOB, build_definitions

    days = CONFIG.calendar.data_days()  # the batch window, the streaming days and the last evaluation day
    defs = build_definitions(PROFILE, e2e_paths.home)
    job = defs.resolve_job_def(SAMPLE_STREAMS_JOB)
    with DagsterInstance.from_config(str(e2e_paths.dagster_home)) as instance:
        for day in days:
            result = job.execute_in_process(partition_key=day.isoformat(), instance=instance)
            assert result.success, f"sample streams {day} failed"
    return [d.isoformat() for d in days]


@pytest.fixture(scope="session")
def dagster_ui(browser_available: None, e2e_paths: E2EPaths, sample_streams: list[str]) -> Iterator[RunningServer]:
    port = free_port()
    server = Server(
        "dagster dev",
        [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
        server_env(e2e_paths), e2e_paths.logs / "dagster-dev.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        server.wait_http(f"{url}/server_info", timeout_s=180)
        DagsterGraphQL(f"{url}/graphql").wait_until_loaded(timeout_s=180)
        yield RunningServer(url=url, server=server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_ui(browser_available: None, e2e_paths: E2EPaths) -> Iterator[RunningServer]:
    port = free_port()
    env = server_env(e2e_paths)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    server = Server(
        "mlflow server",
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", e2e_paths.mlflow_uri],
        env, e2e_paths.logs / "mlflow-server.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        server.wait_http(f"{url}/health", timeout_s=180)
        yield RunningServer(url=url, server=server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(browser_available: None, sample_streams: list[str]):
    # After the in-process Dagster setup: Playwright's sync API keeps an event loop on this thread.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def page(browser, request, e2e_paths: E2EPaths):
    """A fresh browser page; on a failed test its last view is saved as screenshots/FAILED-<test>.png."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            page.screenshot(path=str(e2e_paths.screenshots / f"FAILED-{request.node.name}.png"))
        context.close()


@pytest.fixture
def screenshot(e2e_paths: E2EPaths):
    """`screenshot(page, "name")` → <out>/screenshots/name.png (returns the path)."""

    def take(page, name: str, full_page: bool = False) -> Path:
        path = e2e_paths.screenshots / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


@dataclass
class LaunchedRun:
    run_id: str
    status: str


@pytest.fixture(scope="session")
def launched_run(browser, dagster_ui: RunningServer, e2e_paths: E2EPaths) -> LaunchedRun:
    """Launch the training partition from the job page, clicking as a user does, with the default config."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(f"{dagster_ui.url}/locations/recdistill/jobs/daily_training_job")
        page.get_by_role("button", name="Materialize all").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Custom", exact=True).click()
        partitions = dialog.get_by_placeholder(re.compile("^ex: "))
        partitions.fill(TRAINING_PARTITION.isoformat())
        partitions.press("Enter")
        dialog.get_by_text("1 partition", exact=True).wait_for()
        page.screenshot(path=str(e2e_paths.screenshots / "launch-dialog.png"))
        dialog.get_by_role("button", name="Launch 1 run").click()
        page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}")).wait_for()
        page.get_by_role("link", name="View").or_(page.get_by_role("button", name="View")).first.click()
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
        run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
        status = DagsterGraphQL(f"{dagster_ui.url}/graphql").wait_for_run(run_id, timeout_s=600)
        page.reload()
        page.get_by_text("Success", exact=True).first.wait_for()
        page.get_by_text("Loading run logs").wait_for(state="detached")
        page.screenshot(path=str(e2e_paths.screenshots / "run.png"))
        return LaunchedRun(run_id=run_id, status=status)
    finally:
        context.close()
