"""The chain lock on a real SQLite instance: one holder, waiters say whom they wait for, ended or dead
holders give it back."""

import subprocess
import sys
import threading
from pathlib import Path

from dagster import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test, instance_for_test

from recdistill_dagster.writer import LOCK_KEY, PID_TAG, hold_chain, release


def _run(instance, job: str, partition: str):
    return create_run_for_test(instance, job_name=job, status=DagsterRunStatus.STARTED,
                               tags={"dagster/partition": partition})


def test_a_second_run_waits_for_the_holder_and_says_for_whom(tmp_path: Path) -> None:
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        first, second = _run(instance, "daily_training_job", "2026-01-04"), _run(instance, "sample_streams_job", "x")
        said: list[str] = []
        hold_chain(instance, first, 1, said.append, said.append)
        hold_chain(instance, first, 1, said.append, said.append)  # a later step of the same run: at once
        assert said == []
        waiter = threading.Thread(target=hold_chain, args=(instance, second, 2, said.append, said.append),
                                  kwargs={"poll_s": 0.05}, daemon=True)
        waiter.start()
        while not said:  # blocks until it has said what it waits for
            waiter.join(0.05)
        assert waiter.is_alive()
        assert said[0].startswith(f"waiting for the chain: run {first.run_id[:8]} (daily_training_job, partition "
                                  "2026-01-04, STARTED")
        holders = instance.event_log_storage.get_concurrency_info(LOCK_KEY).claimed_slots
        assert [slot.run_id for slot in holders] == [first.run_id]
        instance.report_run_failed(first)  # the holder ends (any status): the waiter gets the chain
        waiter.join(30)
        assert not waiter.is_alive() and "holds the chain now" in said[-1]
        got = [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(LOCK_KEY).claimed_slots]
        assert got == [second.run_id]
        release(instance, second.run_id)
        assert not instance.event_log_storage.get_concurrency_info(LOCK_KEY).claimed_slots


def test_a_holder_whose_process_died_is_marked_failed(tmp_path: Path) -> None:
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        dead, alive = _run(instance, "daily_training_job", "2026-01-05"), _run(instance, "daily_training_job", "y")
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        said: list[str] = []
        hold_chain(instance, dead, int(gone.stdout), said.append, said.append)
        assert instance.get_run_by_id(dead.run_id).tags[PID_TAG] == gone.stdout.strip()
        hold_chain(instance, alive, 2, said.append, said.append, poll_s=0.05)  # killed -9: never ended its run
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert any(f"its process {gone.stdout.strip()} is gone" in line for line in said)
