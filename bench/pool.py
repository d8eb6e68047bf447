"""Schedule the benchmark's cells over worker processes by what each one links from another.

A cell links three shared parts (bench/runner.py): the sample streams, its seed's teacher and its
seed's baseline student. Each part has one provider task; every other task that needs the part
waits for the provider and nothing else. The sample streams of a data configuration are their own
task, so the three seeds of the default recipe start together as soon as the streams exist instead
of waiting for a whole default cell. Among ready tasks the pool starts the longest kinds first
(streams, default cells, cells that train their own teacher), so the run does not end on a single
long cell with an idle core.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.runner import CellRun, cell_identity, run_cell, run_streams, share_keys, worker_init

# Start order among ready tasks (lower first); ties keep submission (experiment) order.
STREAMS, DEFAULT_CELL, OWN_TEACHER_CELL, CELL = range(4)


@dataclass
class Task:
    kind: int
    order: int
    args: tuple[Any, ...]  # run_cell's (name, profile, overrides, seed) or run_streams' (profile, overrides)
    needs: dict[str, str]  # part → share key (a streams task "needs" the data it provides: it ranks first)
    deps: set[str] = field(default_factory=set)  # ids of the tasks providing what this one links

    @property
    def rank(self) -> tuple[int, int]:
        return (self.kind, self.order)


class CellPool:
    """Runs every (cell, seed) once, `jobs` at a time, each after the providers of what it links.

    Results are read in experiment order (`result`), which drives the scheduling: while waiting for
    one cell the pool keeps every worker busy with whatever is ready. Identical configurations (the
    default recipe appears in several experiments) run once.
    """

    def __init__(self, state: Path, jobs: int, log: Callable[[str], None]) -> None:
        self.state, self.jobs, self.log = state, jobs, log
        self.tasks: dict[str, Task] = {}
        self.futures: dict[str, Future[Any]] = {}
        self.executor: ProcessPoolExecutor | None = None
        self._identities: dict[tuple[str, str, int], tuple[str, dict[str, str]]] = {}

    def _identity(self, profile: str, overrides: dict[str, Any], seed: int) -> tuple[str, dict[str, str]]:
        # Resolving a config reads the profile files: once per (profile, overrides, seed).
        cache_key = (profile, json.dumps(overrides, sort_keys=True), seed)
        if cache_key not in self._identities:
            _, config, fingerprint = cell_identity(profile, overrides, seed)
            self._identities[cache_key] = (fingerprint, share_keys(config))
        return self._identities[cache_key]

    def submit(self, name: str, profile: str, overrides: dict[str, Any], seed: int, is_default: bool) -> None:
        fingerprint, keys = self._identity(profile, overrides, seed)
        streams = f"streams:{keys['data']}"
        if streams not in self.tasks:
            self.tasks[streams] = Task(STREAMS, len(self.tasks), (profile, overrides), {"data": keys["data"]})
        kind = DEFAULT_CELL if is_default else CELL
        task = self.tasks.get(fingerprint)
        if task is None:
            self.tasks[fingerprint] = Task(kind, len(self.tasks), (name, profile, overrides, seed), keys)
        elif kind < task.kind:
            task.kind = kind

    def _resolve(self) -> None:
        """Pick each shared part's provider (the first task by rank that needs it) and the deps.

        Streams tasks rank first, so they provide the data; each seed's default cell its teacher
        and baseline.
        """
        defaults = {t.needs["teacher"] for t in self.tasks.values() if t.kind == DEFAULT_CELL}
        for task in self.tasks.values():
            # A cell whose teacher no default cell provides trains one: the longest kind after defaults.
            if task.kind == CELL and task.needs["teacher"] not in defaults:
                task.kind = OWN_TEACHER_CELL
        providers: dict[tuple[str, str], str] = {}
        for task_id, task in sorted(self.tasks.items(), key=lambda item: item[1].rank):
            for part, key in task.needs.items():
                providers.setdefault((part, key), task_id)
        for task_id, task in self.tasks.items():
            task.deps = {providers[part_key] for part_key in task.needs.items()} - {task_id}

    def start(self) -> None:
        import multiprocessing

        self._resolve()
        if self.jobs > 1:
            self.executor = ProcessPoolExecutor(max_workers=self.jobs, initializer=worker_init,
                                                mp_context=multiprocessing.get_context("spawn"))

    def _call(self, task: Task) -> Any:
        if task.kind == STREAMS:
            return run_streams, (self.state, *task.args)
        return run_cell, (self.state, *task.args)

    def _run_serially(self, task_id: str) -> None:
        for dep in sorted(self.tasks[task_id].deps, key=lambda d: self.tasks[d].rank):
            if dep not in self.futures:
                self._run_serially(dep)
        function, args = self._call(self.tasks[task_id])
        done: Future[Any] = Future()
        done.set_result(function(*args, log=self.log))
        self.futures[task_id] = done

    def _ready(self) -> list[str]:
        finished = {task_id for task_id, future in self.futures.items() if future.done()}
        ready = [task_id for task_id, task in self.tasks.items()
                 if task_id not in self.futures and task.deps <= finished]
        return sorted(ready, key=lambda task_id: self.tasks[task_id].rank)

    def _fill(self) -> None:
        assert self.executor is not None
        running = sum(1 for future in self.futures.values() if not future.done())
        for task_id in self._ready()[: max(0, self.jobs - running)]:
            function, args = self._call(self.tasks[task_id])
            self.futures[task_id] = self.executor.submit(function, *args)

    def result(self, profile: str, overrides: dict[str, Any], seed: int) -> CellRun:
        task_id = self._identity(profile, overrides, seed)[0]
        if self.executor is None:
            if task_id not in self.futures:
                self._run_serially(task_id)
            return self.futures[task_id].result()
        while True:
            self._fill()
            future = self.futures.get(task_id)
            if future is not None and future.done():
                return future.result()
            running = [f for f in self.futures.values() if not f.done()]
            for finished in wait(running, return_when=FIRST_COMPLETED).done:
                finished.result()  # a failed provider stops the benchmark here, with its traceback

    def close(self, cancel: bool = False) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=cancel)
