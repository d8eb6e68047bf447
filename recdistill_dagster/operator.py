"""What an operator's `mark-bad` will cause, said before anyone waits for it.

Marking a snapshot bad only writes its registry record; what follows depends on the instance: whether
anything current still descends from the snapshot (the rollback planner answers), whether the rollback
sensor is on and a daemon ticks it, and whether a retrain can differ at all (it reproduces the same
weights unless the cause was fixed).
"""

import getpass
import os
import time
from dataclasses import dataclass

from dagster import DagsterInstance
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.registry import SnapshotRecord, SnapshotRegistry
from recdistill_dagster.rollback import plan_repair
from recdistill_dagster.sensors import ROLLBACK_SENSOR

# A daemon whose sensor heartbeat is older than this is taken as not running (it beats every few seconds).
DAEMON_HEARTBEAT_MAX_AGE_S = 120.0
EXAMPLES = 3  # partitions named in the message; the count says how many there are


def operator_identity() -> str:
    """Who is running this, without relying on $USER (unset in containers and cron)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid
        return f"uid {os.getuid()}"


@dataclass(frozen=True)
class SensorState:
    running: bool  # switched on for this instance
    daemon_alive: bool  # a dagster-daemon evaluates sensors on this instance


def rollback_sensor_state(instance: DagsterInstance) -> SensorState:
    if instance.schedule_storage is None:  # an in-memory instance: no sensor can run on it
        return SensorState(running=False, daemon_alive=False)
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
              if s.name == ROLLBACK_SENSOR]
    # No stored state (or "declared in code"): the sensor's default status, STOPPED.
    running = any(s.status in (InstigatorStatus.RUNNING, InstigatorStatus.AUTOMATICALLY_RUNNING) for s in states)
    heartbeat = instance.get_daemon_heartbeats().get("SENSOR")
    alive = heartbeat is not None and time.time() - heartbeat.timestamp < DAEMON_HEARTBEAT_MAX_AGE_S
    return SensorState(running=running, daemon_alive=alive)


def explain_mark_bad(instance: DagsterInstance, config: PipelineConfig, registry: SnapshotRegistry,
                     before: SnapshotRecord, after: SnapshotRecord, profile: str) -> list[str]:
    """The lines `mark-bad` prints: what changed, what descends from the snapshot, what will happen."""
    lines = []
    if before.status == "bad":
        lines.append(f"{after.snapshot_id} was already bad since {after.detected_at:%Y-%m-%d %H:%M} UTC "
                     f"({after.reason}); nothing changed.")
    else:
        lines.append(f"{after.snapshot_id} (partition {after.partition}, attempt {after.attempt}, produced by run "
                     f"{after.dagster_run_id[:8]}) was {before.status} and is now bad: {after.reason}.")
    plan = plan_repair(instance, config, registry)
    carriers = plan.tainted.get(after.snapshot_id, [])
    if not carriers:
        why = (f"it was superseded by {after.superseded_by}" if after.superseded_by
               else "no current partition was built from it")
        lines.append(f"Nothing current descends from it ({why}): nothing will be rebuilt, and the "
                     f"{ROLLBACK_SENSOR} launches nothing for it.")
        return lines
    assert plan.start is not None and plan.end is not None
    named = ", ".join(carriers[:EXAMPLES]) + (", …" if len(carriers) > EXAMPLES else "")
    lines.append(f"{len(carriers)} current partition(s) descend from it ({named}). The repair is one run over "
                 f"{plan.start}..{plan.end} rebuilding {', '.join(plan.assets)}, in date order.")
    by_hand = f"python -m recdistill_dagster backfill {plan.start} {plan.end} --profile {profile}"
    sensor = rollback_sensor_state(instance)
    if sensor.running and sensor.daemon_alive:
        lines.append(f"The {ROLLBACK_SENSOR} is running: its next tick (every 30 s) launches that run once no "
                     "other run writes the chain.")
    elif sensor.running:
        lines.append(f"The {ROLLBACK_SENSOR} is on, but no dagster-daemon is running on this instance: nothing "
                     f"happens until one does (make ui PROFILE={profile}), or rebuild by hand: {by_hand}")
    else:
        lines.append(f"The {ROLLBACK_SENSOR} is stopped: nothing happens until you start it (make ui "
                     f"PROFILE={profile} → Automation → {ROLLBACK_SENSOR} → Start), or rebuild by hand: {by_hand}")
    lines.append(f"Retraining {after.partition} from the same parent on the same data, configuration and code "
                 "reproduces the same weights: unless the cause was fixed, the new snapshot is recorded as bad "
                 "(identical to this one) and the sensor stops there, saying so.")
    return lines
