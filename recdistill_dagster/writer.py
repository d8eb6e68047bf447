"""One writer on the chain, whoever starts the run.

What Dagster 1.13 enforces (read in its source and measured on this project): run-tag limits and pools
with `granularity: run` are applied by the run queue when it dequeues a run, counting the pools of the
runs in progress. A run executed in-process (this project's CLI, `make run`, `dagster asset materialize`,
a Python `materialize` loop) never enters the queue, so nothing holds it back; and with run granularity
the in-run slot claims are skipped (`InstanceConcurrencyContext.claim` returns at once). Op granularity
would make in-process runs claim a slot per step, but releases it between steps, so two runs would
interleave step by step (one's teacher, the other's teacher, then the first one's students reading the
second one's logits).

So every step of the chain (sample streams, teacher, student datasets, checkpoints, reports) takes the
same lock before it reads or writes anything: the instance's concurrency slot `recdistill_chain_writer`
(one slot), claimed for the run, not the step, and held until the run ends. It lives in the instance's
database (SQLite or Postgres), so it holds across processes and hosts and for every entry point, with
or without a daemon. Waiting runs line up in Dagster's pending-steps queue (first come, first served)
and say what they wait for in their run log. The lock is released when the holder run has ended
(whoever notices first: the next claimant, the CLI after its run, or the daemon's slot monitoring); a
holder whose process died on this host while its run still reads STARTED is marked failed.

The run queue's pool and lane tag stay in front of it: a queued run is not even launched while the
chain is busy, so it does not sit in a worker waiting.
"""

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

LOCK_KEY = "recdistill_chain_writer"
LOCK_STEP = "chain"  # one claim per run, shared by all of its steps
PID_TAG = "recdistill/writer_pid"
HOST_TAG = "recdistill/writer_host"
POLL_S = 2.0
LOG_EVERY_S = 60.0
FINISHED = frozenset({DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED})
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
LAUNCHERS = (("dagster/schedule_name", "schedule"), ("dagster/sensor_name", "sensor"),
             ("dagster/backfill", "backfill"), ("recdistill/entry", "recdistill"))

Log = Callable[[str], None]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe_run(instance: DagsterInstance, run: DagsterRun) -> str:
    """`run 1a2b3c4d (daily_training_job, partition 2026-01-04, schedule daily_training, STARTED since 20:31:02 UTC,
    pid 1234 on host)`."""
    tags = run.tags
    if all(t in tags for t in RANGE_TAGS):
        what = f"partitions {tags[RANGE_TAGS[0]]}..{tags[RANGE_TAGS[1]]}"
    else:
        what = f"partition {tags.get('dagster/partition', '?')}"
    parts = [run.job_name, what]
    parts += [f"{kind} {tags[tag]}" for tag, kind in LAUNCHERS if tag in tags]
    record = instance.get_run_record_by_id(run.run_id)
    since = (f" since {datetime.fromtimestamp(record.start_time, UTC):%H:%M:%S} UTC"
             if record is not None and record.start_time else "")
    parts.append(f"{run.status.value}{since}")
    if PID_TAG in tags:
        parts.append(f"pid {tags[PID_TAG]} on {tags.get(HOST_TAG, '?')}")
    return f"run {run.run_id[:8]} ({', '.join(parts)})"


@contextmanager
def _claim_guard(instance: DagsterInstance) -> Iterator[None]:
    """Serialize the claim sequence between processes of this host on SQLite storage, whose claim reads a
    free slot and then writes it without a row lock (Postgres locks the row: no guard needed)."""
    storage = instance.event_log_storage
    if "sqlite" not in type(storage).__name__.lower():
        yield
        return
    path = Path(instance.root_directory) / ".recdistill-chain-claim.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _others(instance: DagsterInstance, run_id: str) -> list[str]:
    """The other runs that hold the lock or wait for it, holders first."""
    info = instance.event_log_storage.get_concurrency_info(LOCK_KEY)
    holders = [slot.run_id for slot in info.claimed_slots if slot.run_id != run_id]
    waiting = [step.run_id for step in sorted(info.pending_steps, key=lambda s: s.enqueued_timestamp)
               if step.run_id != run_id and step.run_id not in holders]
    return list(dict.fromkeys(holders + waiting))


def _free_ended(instance: DagsterInstance, run_ids: list[str], log: Log) -> None:
    """Release the claims of runs that have ended (or whose process on this host is gone)."""
    host = socket.gethostname()
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in FINISHED:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            continue
        pid = run.tags.get(PID_TAG)
        if pid and run.tags.get(HOST_TAG) == host and not _alive(int(pid)):
            instance.report_run_failed(run, message=(
                f"its process {pid} on {host} ended while the run still held the chain writer lock "
                "(killed?); marked failed so the chain can be written again"))
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            log(f"released the chain from {describe_run(instance, run)}: its process {pid} is gone")


def _ensure_one_slot(instance: DagsterInstance) -> None:
    info = instance.event_log_storage.get_concurrency_info(LOCK_KEY)
    if info.slot_count != 1:  # absent (first use) or changed by hand: the chain allows one writer
        instance.event_log_storage.set_concurrency_slots(LOCK_KEY, 1)


def hold_chain(instance: DagsterInstance, run: DagsterRun, pid: int, warn: Log, info: Log,
               poll_s: float = POLL_S) -> None:
    """Block until `run` holds the chain (at once if it already does); say what it waits for."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return  # an in-memory instance: no other process can write through it
    if storage.check_concurrency_claim(LOCK_KEY, run.run_id, LOCK_STEP).is_claimed:
        return
    started = time.monotonic()
    announced: str | None = None
    last_log = started
    while True:
        with _claim_guard(instance):
            _ensure_one_slot(instance)
            _free_ended(instance, _others(instance, run.run_id), warn)
            claimed = storage.claim_concurrency_slot(LOCK_KEY, run.run_id, LOCK_STEP).is_claimed
        if claimed:
            instance.add_run_tags(run.run_id, {PID_TAG: str(pid), HOST_TAG: socket.gethostname()})
            if announced:
                info(f"holds the chain now (waited {time.monotonic() - started:.0f} s for {announced})")
            return
        others = _others(instance, run.run_id)
        ahead = [r for r in (instance.get_run_by_id(i) for i in others) if r is not None]
        now = time.monotonic()
        if ahead and describe_run(instance, ahead[0]) != announced:
            announced = describe_run(instance, ahead[0])
            queue = f" (and {len(ahead) - 1} more run(s) before this one)" if len(ahead) > 1 else ""
            warn(f"waiting for the chain: {announced} is writing it{queue}; one writer at a time, this run "
                 "continues when it ends")
            last_log = now
        elif now - last_log >= LOG_EVERY_S:
            info(f"still waiting for the chain ({now - started:.0f} s): {announced or 'a run'}")
            last_log = now
        time.sleep(poll_s)


def release(instance: DagsterInstance, run_id: str) -> None:
    """Give the chain back once `run_id` has ended (the CLI does it after each run it executes)."""
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def hold_chain_in_step(context: Any) -> None:
    """`hold_chain` for the run of an asset step (its log says what it waits for)."""
    # The in-process executor runs every step in the run's process; a multiprocess executor runs each
    # step in a child of the run's process, which is the one that lives as long as the run.
    in_process = context.job_def.executor_def.name == "in_process"
    hold_chain(context.instance, context.run, os.getpid() if in_process else os.getppid(),
               warn=context.log.warning, info=context.log.info)
