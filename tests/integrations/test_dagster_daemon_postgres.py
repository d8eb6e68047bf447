"""The rollback sensor under a live `dagster-daemon` on a Postgres instance.

The `tiny` chain is materialized on the instance, an operator marks a teacher snapshot bad, the
sensor is started with Dagster's CLI and `dagster-daemon run` does the rest as in production: its
tick plans the repair, the run goes through the instance's run queue (the training-lane limit of
the Postgres dagster.yaml), a launched run process repairs the chain, and the next tick launches
nothing. Deadlines only bound the wait for the daemon; nothing asserts on time.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from recdistill_dagster.config import load_config
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.runs import execute_range
from recdistill_dagster.sensors import REPAIR_TAG, ROLLBACK_SENSOR
from recdistill_dagster.services import PostgresServer
from recdistill_dagster.storage import ArtifactStore
from tests.e2e.support import REPO, Server
from tests.integrations.conftest import Report, postgres_instance

pytestmark = pytest.mark.integrations

PROFILE = "tiny"
# The cause of the snapshot marked bad (a learning rate ×2 on the first attempt of 2026-01-04, unseen by its
# health check) is gone on the retrain; an unfixed cause would make the repair reproduce the same weights
# (reported as identical, not repaired: tests/scenarios/test_rollback.py).
DRILL = "faults: {teacher: {day: 2026-01-04, lr_multiplier: 2.0, attempts: [1]}}\n"
BIN = Path(sys.executable).parent
DAEMON_DEADLINE_S = 300.0  # the sensor ticks every 30 s; a run process imports torch and trains
POLL_S = 2.0
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
T = TypeVar("T")


def _wait_for(what: str, probe: Callable[[], T | None], daemon: Server) -> T:
    deadline = time.monotonic() + DAEMON_DEADLINE_S
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        if daemon.process.poll() is not None:
            raise AssertionError(f"dagster-daemon exited while waiting for {what}:\n{daemon.log_tail()}")
        time.sleep(POLL_S)
    raise AssertionError(f"no {what} within {DAEMON_DEADLINE_S:.0f} s; daemon log:\n{daemon.log_tail()}")


@pytest.fixture
def daemon_setup(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[DagsterInstance, Path, dict[str, str]]]:
    home, dagster_home = tmp_path / "state", tmp_path / "dagster"
    instance = postgres_instance(postgres, dagster_home)
    env = {k: v for k, v in os.environ.items() if k not in ("RECDISTILL_MLFLOW_URI", "RECDISTILL_STORE_URL")}
    drill = tmp_path / "drill.yaml"
    drill.write_text(DRILL)
    env.update(RECDISTILL_PROFILE=PROFILE, RECDISTILL_CONFIG=str(drill), RECDISTILL_HOME=str(home),
               DAGSTER_HOME=str(dagster_home),
               MPLCONFIGDIR=str(tmp_path / ".matplotlib"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
    try:
        yield instance, home, env
    finally:
        instance.dispose()


def _sensor_ticks(instance: DagsterInstance) -> list[Any]:
    states = [s for s in instance.all_instigator_state() if s.name == ROLLBACK_SENSOR]
    if not states:
        return []
    return list(instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id))


def test_rollback_sensor_under_a_live_daemon_on_postgres(daemon_setup: tuple, tmp_path: Path, report: Report) -> None:
    instance, home, env = daemon_setup
    config = load_config(PROFILE, env["RECDISTILL_CONFIG"])
    days = config.calendar.training_days()
    defs = build_definitions(PROFILE, home, env["RECDISTILL_CONFIG"])
    calendar = config.calendar
    assert execute_range(defs, SAMPLE_STREAMS_JOB, calendar.start_date, calendar.last_data_day, instance).success
    assert execute_range(defs, DAILY_TRAINING_JOB, days[0], days[-1], instance).success
    registry = SnapshotRegistry(ArtifactStore(str(home)))
    bad_day = days[2]
    (bad,) = registry.for_partition(bad_day)
    registry.mark_bad(bad.snapshot_id, reason="integration test: late finding", detected_by="operator")

    workspace = str(REPO / "workspace.yaml")
    started = subprocess.run([str(BIN / "dagster"), "sensor", "start", ROLLBACK_SENSOR, "-w", workspace],
                             env=env, cwd=REPO, capture_output=True, text=True, check=False)
    assert started.returncode == 0, started.stderr[-3000:]
    daemon = Server("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env,
                    tmp_path / "daemon.log")
    try:
        def repair_finished() -> Any:
            runs = [r for r in instance.get_runs(filters=RunsFilter(statuses=list(FINISHED)))
                    if bad.snapshot_id in r.tags.get(REPAIR_TAG, "")]
            return runs[0] if runs else None

        repair = _wait_for("finished repair run", repair_finished, daemon)
        assert repair.status == DagsterRunStatus.SUCCESS, daemon.log_tail()
        repair_end = instance.get_run_record_by_id(repair.run_id).end_time  # type: ignore[union-attr]

        def quiet_tick() -> Any:
            later = [t for t in _sensor_ticks(instance) if t.timestamp > repair_end and t.status.value != "STARTED"]
            return later[-1] if later else None

        tick = _wait_for("sensor tick after the repair", quiet_tick, daemon)
    finally:
        daemon.stop()
    assert tick.status.value == "SKIPPED" and not tick.run_ids, (tick.status, tick.skip_reason)
    repairs = [r for r in instance.get_runs() if REPAIR_TAG in r.tags]
    assert [r.run_id for r in repairs] == [repair.run_id]  # launched exactly once
    retrained = registry.for_partition(bad_day)[-1]
    assert retrained.snapshot_id != bad.snapshot_id and retrained.status == "good"
    assert retrained.dagster_run_id == repair.run_id
    report("postgres", f"live dagster-daemon: sensor tick queued repair run {repair.run_id[:8]} "
                       f"({repair.tags.get('dagster/asset_partition_range_start')}.."
                       f"{repair.tags.get('dagster/asset_partition_range_end')}), run queue launched it, success; "
                       f"next tick skipped: {tick.skip_reason}")
