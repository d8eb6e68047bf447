"""One writer on the chain: a CLI backfill started while a queued training run is in progress.

As in production: a SQLite instance with this project's dagster.yaml, `dagster-daemon run` dequeuing
and launching runs in their own processes, a training run submitted to the queue with Dagster's CLI
(`dagster job launch`, as the launchpad or a schedule would), and this project's CLI started while
that run trains day 2026-01-03, asking to rebuild that very day. The running process is held
(SIGSTOP) while it holds the chain, so that the backfill certainly starts during the run whatever the
machine's speed; it is released once the backfill has said what it waits for.

Shown: the backfill names the run it waits for; no file of the running day changes while it waits;
from the event log, the backfill took the chain only after the training run had ended, and wrote
nothing before; and the training run completed. Deadlines only bound waits; nothing asserts on time.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.home import ensure_dagster_home
from recdistill_dagster.runs import ENTRY_TAG, execute_range
from recdistill_dagster.writer import LOCK_KEY, PID_TAG
from tests.e2e.support import REPO, Server

pytestmark = pytest.mark.scenario

BIN = Path(sys.executable).parent
RUNNING_DAY = "2026-01-03"  # tiny's first streaming day
DEADLINE_S = 900.0
POLL_S = 0.5
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
T = TypeVar("T")


def _wait_for(what: str, probe: Callable[[], T | None], *watched: tuple[str, Callable[[], str | None]]) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        for name, died in watched:
            message = died()
            if message is not None:
                raise AssertionError(f"{name} ended while waiting for {what}:\n{message}")
        time.sleep(POLL_S)
    raise AssertionError(f"no {what} within {DEADLINE_S:.0f} s")


def _day_files(home: Path) -> dict[str, tuple[int, int, int]]:
    """Every file of the running day: (mtime_ns, inode, size); a rewrite (temp + rename) changes the inode."""
    return {str(p.relative_to(home)): (p.stat().st_mtime_ns, p.stat().st_ino, p.stat().st_size)
            for p in home.rglob("*") if p.is_file() and RUNNING_DAY in str(p.relative_to(home))}


def _hold(instance: DagsterInstance, run: DagsterRun, pid: int) -> None:
    """SIGSTOP the run's process at a moment it holds no lock of the SQLite storage (a probe write succeeds)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        try:
            instance.add_run_tags(run.run_id, {"recdistill/test": "held"})  # runs database
            instance.event_log_storage.get_concurrency_info(LOCK_KEY)  # index database, read
            instance.event_log_storage.set_concurrency_slots("recdistill_test_probe", 1)  # and written
            return
        except Exception:  # "database is locked": stopped inside a write; let it finish it
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.2)
    raise AssertionError("the run's process never paused outside a database write")


def _logged_at(instance: DagsterInstance, run_id: str, text: str) -> float | None:
    return next((entry.timestamp for entry in instance.all_logs(run_id) if text in (entry.user_message or "")), None)


def test_a_cli_backfill_waits_for_the_queued_training_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, dagster_home = tmp_path / "state", tmp_path / "dagster"
    env = {k: v for k, v in os.environ.items() if k not in ("RECDISTILL_MLFLOW_URI", "RECDISTILL_STORE_URL")}
    env.update(RECDISTILL_PROFILE="tiny", RECDISTILL_HOME=str(home), DAGSTER_HOME=str(dagster_home),
               MPLCONFIGDIR=str(tmp_path / ".matplotlib"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    ensure_dagster_home(home)  # this project's dagster.yaml: run queue, lane limit, chain pool
    instance = DagsterInstance.from_config(str(dagster_home))
    defs = build_definitions("tiny", home)
    # Before: the data of the batch window and the first streaming days, and the batch partition.
    assert execute_range(defs, SAMPLE_STREAMS_JOB, date(2026, 1, 1), date(2026, 1, 4), instance).success
    assert defs.resolve_job_def(DAILY_TRAINING_JOB).execute_in_process(partition_key="2026-01-02",
                                                                       instance=instance).success
    workspace = str(REPO / "workspace.yaml")
    daemon = Server("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env,
                    tmp_path / "daemon.log")
    cli_log = tmp_path / "backfill.log"
    cli: subprocess.Popen[bytes] | None = None
    held: int | None = None
    try:
        submitted = subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", workspace, "-j", DAILY_TRAINING_JOB,
             "--tags", json.dumps({"dagster/partition": RUNNING_DAY})],
            env=env, cwd=REPO, capture_output=True, text=True, check=False)
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        (queued,) = instance.get_runs(filters=RunsFilter(job_name=DAILY_TRAINING_JOB,
                                                         tags={"dagster/partition": RUNNING_DAY}))
        daemon_died = ("dagster-daemon", lambda: daemon.log_tail() if daemon.process.poll() is not None else None)

        def holds_the_chain() -> DagsterRun | None:
            run = instance.get_run_by_id(queued.run_id)
            claimed = [s.run_id for s in instance.event_log_storage.get_concurrency_info(LOCK_KEY).claimed_slots]
            return run if run is not None and PID_TAG in run.tags and claimed == [run.run_id] else None

        running = _wait_for("queued run holding the chain", holds_the_chain, daemon_died)
        held = int(running.tags[PID_TAG])
        _hold(instance, running, held)
        before = _day_files(home)
        assert before, "the running day has files (its sample streams at least)"

        with cli_log.open("wb") as out:
            command = ["backfill", RUNNING_DAY, "2026-01-04", "--profile", "tiny"]
            cli = subprocess.Popen(
                [sys.executable, "-m", "recdistill_dagster", *command],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        waiting = f"waiting for the chain: run {queued.run_id[:8]} ({DAILY_TRAINING_JOB}, partition {RUNNING_DAY}"
        cli_died = ("the backfill", lambda: cli_log.read_text() if cli.poll() is not None else None)
        _wait_for("backfill saying what it waits for", lambda: True if waiting in cli_log.read_text() else None,
                  cli_died, daemon_died)
        assert _day_files(home) == before  # nothing of the running day rewritten while it runs
        os.kill(held, signal.SIGCONT)
        held = None
        assert cli.wait(timeout=DEADLINE_S) == 0, cli_log.read_text()[-4000:]
        finished = _wait_for("training run to finish", lambda: (
            r if (r := instance.get_run_by_id(queued.run_id)) and r.status in FINISHED else None), daemon_died)
    finally:
        if held is not None:
            os.kill(held, signal.SIGCONT)
        if cli is not None and cli.poll() is None:
            os.killpg(cli.pid, signal.SIGTERM)
        daemon.stop()
    assert finished.status == DagsterRunStatus.SUCCESS, daemon.log_tail()

    training_end = instance.get_run_record_by_id(queued.run_id).end_time
    backfill_runs = sorted((r for r in instance.get_runs() if r.tags.get(ENTRY_TAG) == "cli backfill"),
                           key=lambda r: instance.get_run_record_by_id(r.run_id).start_time)
    assert [r.job_name for r in backfill_runs] == [SAMPLE_STREAMS_JOB, DAILY_TRAINING_JOB]
    took_chain = _logged_at(instance, backfill_runs[0].run_id, "holds the chain now")
    assert took_chain is not None and training_end is not None and took_chain >= training_end
    for run in backfill_runs:  # every write of the backfill after the training run had ended
        written = [e.timestamp for e in instance.all_logs(run.run_id)
                   if e.is_dagster_event and e.dagster_event.is_step_materialization]
        assert written and min(written) >= training_end
    after = _day_files(home)
    assert all(after[path][0] / 1e9 >= took_chain for path in before)  # rewritten by the backfill, after
    print(f"backfill waited: {next(line for line in cli_log.read_text().splitlines() if waiting in line).strip()}")
    print(f"training run {queued.run_id[:8]} ended {training_end:.2f}; backfill took the chain {took_chain:.2f}")
