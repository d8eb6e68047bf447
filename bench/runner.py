"""Run one benchmark cell (a configuration × a seed) through the real asset graph, with Dagster.

Every cell has its own state folder (artifact store, Dagster instance, MLflow store) and is
materialized partition by partition with `execute_in_process`, exactly like
`python -m recdistill_dagster run`: same `build_definitions`, same jobs, same assets.

Sharing (the pipeline's own 1-to-N property): one teacher's recorded logits feed many students.
A cell whose sample streams, teacher or baseline student would be identical to an earlier cell's
(same config sections, same seed) links that cell's files instead of re-training them, and its
training runs select only the assets it does not share. The shared files are the artifacts the
assets wrote (sample parquet, teacher checkpoints and logit partitions, baseline checkpoints), so
the distilled students of every cell read exactly what a full run would have produced.
"""

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from recdistill_dagster import layout
from recdistill_dagster.config import PipelineConfig, SyntheticWorldConfig, deep_merge, load_config
from recdistill_dagster.graph import GROUP_TEACHER, StudentKeys
from recdistill_dagster.home import DAGSTER_YAML

# The student every cell measures (the bench profile's only enabled student); cells override its entry.
STUDENT = "ranker"
# What each shared artifact depends on (sections of the resolved config).
DATA_SECTIONS = ("data", "sampling", "calendar", "students")
TEACHER_SECTIONS = ("teacher",)
BASELINE_STUDENT_KEYS = ("arch", "optim", "sampling", "seed")  # not `distill`: the baseline never distills
REGISTRY = "registry.json"
DONE = "bench-cell.json"


def seed_overrides(seed: int) -> dict[str, Any]:
    """Model seed s re-initializes and re-shuffles both models; the world and evaluation stay fixed."""
    if seed == 0:
        return {}
    return {"teacher": {"seed": 101 + 1000 * seed}, "students": [{"name": STUDENT, "seed": 202 + 1000 * seed}]}


def world_overrides(profile: str, world: int) -> dict[str, Any]:
    """World w of a synthetic profile: its generator seeded `data.seed + w`, so every world has its own
    users, items, clicks and evaluation rows (the independent units of the benchmark's intervals).
    World 0 is the profile's own world; a real dataset has only that one."""
    if world == 0:
        return {}
    data = load_config(profile).data
    if not isinstance(data, SyntheticWorldConfig):
        raise ValueError(f"profile {profile!r} reads a fixed dataset: it has world 0 only")
    return {"data": {"seed": data.seed + world}}


def n_worlds(profile: str, requested: int) -> int:
    """How many worlds a profile can provide: `requested` for a synthetic world, 1 for a real dataset."""
    return requested if isinstance(load_config(profile).data, SyntheticWorldConfig) else 1


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def share_keys(config: PipelineConfig) -> dict[str, str]:
    dumped = config.model_dump(mode="json")
    # The streams depend on each student's sampling policy only (a stream per student), not on its model.
    dumped["students"] = [{"name": s["name"], "enabled": s["enabled"], "sampling": s["sampling"]}
                          for s in dumped["students"]]
    data = digest({k: dumped[k] for k in DATA_SECTIONS})
    spec = config.student(STUDENT).model_dump(mode="json")
    student = {k: spec[k] for k in BASELINE_STUDENT_KEYS}
    return {
        "data": data,
        "teacher": digest([data, *(dumped[k] for k in TEACHER_SECTIONS), dumped["runtime"]]),
        "student_baseline": digest([data, student, dumped["runtime"]]),
    }


# Folders of the artifact store that each shared part owns.
SHARED_PATHS = {
    "data": ("samples", f"students/{STUDENT}/samples"),
    # The teacher's ONNX export (one per snapshot, for the report's serving comparison) too: it is the same file.
    "teacher": ("teacher_logits", "checkpoints/teacher", "eval_scores/teacher",
                str(Path(layout.teacher_serving_path(date(2000, 1, 1), "run")).parent.parent), "registry"),
    "student_baseline": (str(Path(layout.student_checkpoint_path(STUDENT, "baseline", date(2000, 1, 1))).parent),),
}


@dataclass
class CellRun:
    name: str
    seed: int
    home: Path
    config: PipelineConfig
    overrides: dict[str, Any]
    shared_from: dict[str, str] = field(default_factory=dict)  # part → cell home it was linked from
    seconds: float = 0.0
    reused: bool = False


class Registry:
    """Which cell home holds the materialized data / teacher / baseline for a share key."""

    def __init__(self, root: Path) -> None:
        self.path = root / REGISTRY
        self.entries: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, part: str, key: str) -> Path | None:
        home = self.entries.get(f"{part}:{key}")
        return Path(home) if home and Path(home).exists() else None

    def put(self, part: str, key: str, home: Path) -> None:
        # Cells run in parallel processes: re-read under a lock so no writer drops another's entry.
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                self.entries = json.loads(self.path.read_text())
            self.entries[f"{part}:{key}"] = str(home)
            tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
            tmp.replace(self.path)


def _link_shared(home: Path, provider: Path, part: str) -> None:
    for relative in SHARED_PATHS[part]:
        target = home / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            continue
        os.symlink((provider / relative).resolve(), target)


# The daily reports' own intervals are not what the benchmark reports (it bootstraps the pooled
# predictions of every day and seed itself, bench/aggregate.py), so cells compute them cheaply.
REPORT_BOOTSTRAP = {"eval": {"bootstrap_samples": 20}}


def only_the_measured_student(profile: str) -> dict[str, Any]:
    """Overrides that leave the profile's other students out of the cells (they would only cost time)."""
    others = [s.name for s in load_config(profile).students if s.name != STUDENT]
    return {"students": [{"name": name, "enabled": False} for name in others]} if others else {}


def cell_identity(profile: str, overrides: dict[str, Any], seed: int) -> tuple[dict[str, Any], PipelineConfig, str]:
    """The cell's full overrides, resolved config and fingerprint (identical configs share a home)."""
    fixed = deep_merge(REPORT_BOOTSTRAP, only_the_measured_student(profile))
    merged = deep_merge(deep_merge(deep_merge(fixed, overrides), fixed), seed_overrides(seed))
    config = load_config(profile, overrides=merged)
    return merged, config, digest([profile, config.model_dump(mode="json")])


def worker_init() -> None:
    """A benchmark worker process: one intra-op thread, so parallel cells share the cores evenly."""
    import torch

    torch.set_num_threads(1)


def log_line(message: str) -> None:
    print(message, flush=True)  # worker processes write to the same terminal or log file


def _write_overrides(home: Path, merged: dict[str, Any]) -> str:
    home.mkdir(parents=True, exist_ok=True)
    overrides_file = home / "overrides.yaml"
    overrides_file.write_text(json.dumps(merged, indent=1))  # JSON is YAML
    return str(overrides_file)


def run_cell(root: Path, name: str, profile: str, overrides: dict[str, Any], seed: int,
             log: Callable[[str], None] = log_line) -> CellRun:
    """Materialize one cell (all training partitions, in date order) unless it already ran."""
    merged, config, fingerprint = cell_identity(profile, overrides, seed)
    # Cells with identical configurations (e.g. the default recipe in several experiments) share a home.
    home = (root / "cells" / f"{fingerprint}-s{seed}").resolve()
    done = home / DONE
    meta = json.loads(done.read_text()) if done.exists() else {}
    if meta.get("fingerprint") == fingerprint:
        return CellRun(name, seed, home, config, merged, meta.get("shared_from", {}), meta["seconds"], reused=True)
    log(f"  cell {name} seed {seed} → {home.name}")
    home.mkdir(parents=True, exist_ok=True)
    registry = Registry(root)
    keys = share_keys(config)
    shared_from: dict[str, str] = {}
    for part, key in keys.items():
        provider = registry.get(part, key)
        if provider is not None and provider != home:
            _link_shared(home, provider, part)
            shared_from[part] = str(provider)
    config_file = _write_overrides(home, merged)
    started = time.monotonic()
    _materialize(home, profile, config_file, config, shared=set(shared_from), log=log)
    seconds = time.monotonic() - started
    for part, key in keys.items():
        if part not in shared_from:
            registry.put(part, key, home)
    done.write_text(json.dumps({"name": name, "fingerprint": fingerprint, "seconds": seconds,
                                "shared_from": shared_from,
                                "profile": profile, "overrides": merged}, indent=1))
    return CellRun(name, seed, home, config, merged, shared_from, seconds)


def run_streams(root: Path, profile: str, overrides: dict[str, Any], log: Callable[[str], None] = log_line) -> Path:
    """Materialize only the sample streams of a data configuration, for every cell that links them.

    Run as their own task so that cells of every seed can start as soon as the streams exist.
    """
    merged, config, _ = cell_identity(profile, overrides, 0)
    key = share_keys(config)["data"]
    registry = Registry(root)
    existing = registry.get("data", key)
    if existing is not None:
        return existing
    home = (root / "streams" / key).resolve()
    log(f"  sample streams {profile} → streams/{key}")
    _materialize(home, profile, _write_overrides(home, merged), config, shared=set(), log=log, streams_only=True)
    registry.put("data", key, home)
    return home


def _materialize(home: Path, profile: str, config_file: str, config: PipelineConfig, shared: set[str],
                 log: Callable[[str], None], streams_only: bool = False) -> None:
    from dagster import AssetKey, DagsterInstance

    from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions

    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    # The resources read RECDISTILL_HOME / the MLflow URI through the definitions built here.
    os.environ["RECDISTILL_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    defs = build_definitions(profile, home, config_file)
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        calendar = config.calendar
        if "data" not in shared:
            job = defs.resolve_job_def(SAMPLE_STREAMS_JOB)
            for day in calendar.data_days():
                job.execute_in_process(partition_key=day.isoformat(), instance=instance, run_config=run_config)
        if streams_only:
            return
        job = defs.resolve_job_def(DAILY_TRAINING_JOB)
        skip = {spec.key for spec in defs.resolve_all_asset_specs()
                if (spec.group_name == GROUP_TEACHER and "teacher" in shared)}
        if "student_baseline" in shared:
            skip.add(AssetKey.from_user_string(StudentKeys(STUDENT).baseline))
        selection = None
        if skip:
            selection = [key for key in job.asset_layer.executable_asset_keys if key not in skip]
        for day in calendar.training_days():
            t0 = time.monotonic()
            job.execute_in_process(partition_key=day.isoformat(), instance=instance, run_config=run_config,
                                   asset_selection=selection)
            log(f"    {home.name} {day} {time.monotonic() - t0:5.1f}s")

