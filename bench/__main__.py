"""Transferability benchmark: `python -m bench [--quick] [--only main,alpha] [--worlds N] [--seeds 1]`.

Runs every cell of the selected experiments through the real asset graph (Dagster,
`execute_in_process` per partition; see bench/runner.py) for each seed, then writes
`<out>/transferability.{json,md}`. Results of experiments not selected in this invocation are kept
from the existing JSON, so experiments can be run one at a time (`make bench-eta ONLY=alpha`).
Cells already materialized in the state folder with the same configuration are not re-trained.
"""

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.experiments import (
    BY_NAME,
    DEFAULT_SEEDS,
    EXPERIMENTS,
    HEADLINE_EXPERIMENT,
    Cell,
    Experiment,
    profile_overrides,
    protocol_of,
    selected,
)
from bench.pool import CellPool
from bench.report import invocation_of, write
from bench.runner import n_worlds, world_overrides

REPO = Path(__file__).resolve().parents[1]


def _machine() -> dict[str, Any]:
    import dagster
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "dagster": dagster.__version__}


def _log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced calendar and volume (minutes)")
    parser.add_argument("--only", default="", help="comma-separated experiment names "
                        f"({', '.join(e.name for e in EXPERIMENTS)})")
    parser.add_argument("--worlds", type=int, default=None,
                        help="at most this many independent synthetic worlds (data seeds, the units of the "
                             "intervals) per experiment (default: each experiment's own; the headline's 5, most 3)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help="model seeds per world (they score the same rows)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results[/quick])")
    parser.add_argument("--state", default=None, help="state folder of the cells (default .state/bench-eta[-quick])")
    parser.add_argument("--boot", type=int, default=None, help="bootstrap replicates (default: the profile's)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="cells trained in parallel processes, one torch thread each (default: 2)")
    args = parser.parse_args(argv)
    quick = args.quick
    out = Path(args.out) if args.out else REPO / "bench" / "results" / ("quick" if quick else "")
    default_state = REPO / ".state" / ("bench-eta-quick" if quick else "bench-eta")
    state = Path(args.state or os.environ.get("BENCH_STATE") or default_state)
    state.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", str(state / ".matplotlib"))
    only = [n for n in args.only.split(",") if n]
    experiments = selected(only, quick)
    seeds = list(range(args.seeds))

    previous: dict[str, Any] = {}
    if (out / "transferability.json").exists():
        previous = json.loads((out / "transferability.json").read_text())
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "quick": quick,
        "machine": _machine(),
        "seeds": seeds,
        "worlds": {e.name: _n_worlds(e, args.worlds) for e in experiments},
        "headline": previous.get("headline"),
        "experiments": _comparable(previous.get("experiments", {}), quick),
    }
    pool = CellPool(state, jobs=max(1, args.jobs), log=_log)
    try:
        _run(pool, experiments, args.worlds, seeds, quick, args.boot, results, out)
    except BaseException:
        pool.close(cancel=True)
        raise
    pool.close()
    _log(f"wrote {out / 'transferability.md'} and .json in {results['wall_seconds'] / 60:.1f} min")
    return 0


def _comparable(experiments: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The earlier invocation's experiments that this benchmark still defines, measured on the same protocol
    (profile, world and recipe: `protocol_of`); results of another protocol are not mixed into the tables."""
    return {name: experiment for name, experiment in experiments.items()
            if name in BY_NAME and experiment.get("protocol") == protocol_of(BY_NAME[name], quick)}


def _n_worlds(experiment: Experiment, cap: int | None) -> int:
    """The experiment's own number of worlds, at most `cap` (--worlds), 1 on a real dataset."""
    return n_worlds(experiment.profile, experiment.worlds if cap is None else min(cap, experiment.worlds))


def _replicates(experiment: Experiment, cap: int | None, seeds: list[int]) -> list[tuple[int, int]]:
    """(world, model seed) pairs of an experiment: every cell of it runs on the same ones (so cells pair), and
    world k is the same world in every experiment (cells shared between experiments are trained once)."""
    return [(w, s) for w in range(_n_worlds(experiment, cap)) for s in seeds]


def _run(pool: CellPool, experiments: list[Experiment], cap: int | None, seeds: list[int], quick: bool,
         boot: int | None, results: dict[str, Any], out: Path) -> None:
    from bench.aggregate import summarize_experiment
    from recdistill_dagster.config import deep_merge

    def overrides_of(experiment: Experiment, cell: Cell, world: int) -> dict[str, Any]:
        return deep_merge(deep_merge(profile_overrides(experiment, quick), cell.overrides),
                          world_overrides(experiment.profile, world))

    started = time.monotonic()
    replicates = {experiment.name: _replicates(experiment, cap, seeds) for experiment in experiments}
    for experiment in experiments:
        for cell in experiment.cells:
            for world, seed in replicates[experiment.name]:
                pool.submit(cell.name, experiment.profile, overrides_of(experiment, cell, world), seed,
                            is_default=not cell.overrides)
    pool.start()
    for experiment in experiments:
        _log(f"experiment {experiment.name}: {experiment.title}")
        t0 = time.monotonic()
        runs = {cell.name: [pool.result(experiment.profile, overrides_of(experiment, cell, world), seed)
                            for world, seed in replicates[experiment.name]]
                for cell in experiment.cells}
        summary = summarize_experiment(experiment, runs, n_boot=boot)
        for cell in summary["cells"]:
            _log(f"  {cell['label']}: teacher gain {cell['teacher_gain']:.4f}, student gain "
                 f"{cell['student_gain']:.4f}, η {cell['eta']} {cell['eta_ci']}")
        results["experiments"][experiment.name] = {**summary, "wall_seconds": time.monotonic() - t0,
                                                   "invocation": invocation_of(results),
                                                   "protocol": protocol_of(experiment, quick)}
        if experiment.name == HEADLINE_EXPERIMENT:
            results["headline"] = summary["headline"]
        results["wall_seconds"] = time.monotonic() - started
        results["not_run"] = [e.name for e in EXPERIMENTS if e.name not in results["experiments"]]
        write(results, out)


if __name__ == "__main__":
    sys.exit(main())
