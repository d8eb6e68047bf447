"""Wall time of one training day under the in-process and the multiprocess executor, side by side.

    python -m recdistill_dagster.executor_timing --profile demo --repeats 3

Prepares one state folder (every data day, then every training partition before the timed day, in
this process), then re-materializes the timed day (the first streaming day unless `--day`) through
`execute_job` on the folder's persistent instance, alternating the executors, `--repeats` times each.
Every timed run is a fresh Python process, as a launched run is (so the multiprocess executor starts
its forkserver and preloads torch in every run, as it would in production). Prints each wall time,
the medians and their ratio. A re-materialization replaces the day's partitions, so the runs are
interchangeable.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from dagster import DagsterInstance, JobDefinition, execute_job, reconstructable

from recdistill_dagster.config import load_config
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.home import active_profile, ensure_dagster_home, state_home

CONFIG_ENV = "RECDISTILL_TIMING_CONFIG"  # the overrides file of the executor being timed
KINDS = ("in_process", "multiprocess")
MODULE = "recdistill_dagster.executor_timing"


def timed_job() -> JobDefinition:
    """The daily training job as configured by the environment (reconstructable: step processes rebuild it)."""
    profile = active_profile()
    defs = build_definitions(profile, state_home(profile), os.environ[CONFIG_ENV])
    return defs.resolve_job_def(DAILY_TRAINING_JOB)


def run_one(day: date) -> int:
    """One run of the training day with the executor of the configuration in the environment."""
    instance = DagsterInstance.get()
    with execute_job(reconstructable(timed_job), instance=instance,
                     tags={"dagster/partition": day.isoformat()}) as result:
        return 0 if result.success else 1


def prepare(profile: str, config_file: Path, day: date) -> None:
    defs = build_definitions(profile, state_home(profile), str(config_file))
    instance = DagsterInstance.get()
    config = load_config(profile, config_file)
    data = defs.resolve_job_def(SAMPLE_STREAMS_JOB)
    for data_day in config.calendar.data_days():
        assert data.execute_in_process(partition_key=data_day.isoformat(), instance=instance).success
    training = defs.resolve_job_def(DAILY_TRAINING_JOB)
    for training_day in config.calendar.training_days():
        if training_day >= day:
            break
        assert training.execute_in_process(partition_key=training_day.isoformat(), instance=instance).success


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=active_profile())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--day", type=date.fromisoformat, default=None)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--run-one", type=date.fromisoformat, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one is not None:
        return run_one(args.run_one)
    home = state_home(args.profile)
    ensure_dagster_home(home)
    folder = Path(tempfile.mkdtemp(prefix="recdistill-timing-"))
    files = {}
    for kind in KINDS:
        files[kind] = folder / f"{kind}.yaml"
        files[kind].write_text(f"runtime: {{executor: {{kind: {kind}, max_concurrent: {args.max_concurrent}}}}}\n")
    config = load_config(args.profile, files["in_process"])
    day = args.day or config.calendar.training_days()[1]
    print(f"profile {args.profile}, state {home}: preparing the partitions before {day}", flush=True)
    started = time.perf_counter()
    prepare(args.profile, files["in_process"], day)
    print(f"prepared in {time.perf_counter() - started:.0f} s", flush=True)
    walls: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for repeat in range(args.repeats):
        for kind in KINDS if repeat % 2 == 0 else KINDS[::-1]:  # alternate which goes first
            env = {**os.environ, CONFIG_ENV: str(files[kind]), "RECDISTILL_PROFILE": args.profile,
                   "RECDISTILL_HOME": str(home)}
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", MODULE, "--run-one", day.isoformat()], env=env, check=False)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                print(f"{kind}: the run failed (exit {done.returncode})", flush=True)
                return 1
            walls[kind].append(wall)
            print(f"repeat {repeat + 1}: {kind:<12} {wall:6.1f} s", flush=True)
    medians = {kind: statistics.median(values) for kind, values in walls.items()}
    for kind in KINDS:
        print(f"{kind:<12} median {medians[kind]:6.1f} s  ({', '.join(f'{v:.1f}' for v in walls[kind])})")
    print(f"multiprocess / in_process = {medians['multiprocess'] / medians['in_process']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
