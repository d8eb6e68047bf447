"""Running one case in its own pinned subprocess, and the statistics every figure is quoted with."""

import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_high_water_mark() -> None:
    """Restart the kernel's peak-RSS mark from now (/proc/self/clear_refs "5"), where the kernel allows it."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Pair-by-pair a[i] / b[i] of interleaved repetitions."""
    return [x / y for x, y in zip(a, b, strict=True) if y]


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {"median": median(values), "min": min(values) if values else None,
            "max": max(values) if values else None, "n": len(values), "values": list(values)}


def log_log_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y on log x (the scaling exponent)."""
    import math

    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    den = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / den if den else float("nan")


def machine(cpus: str, threads: int) -> dict[str, Any]:
    """What the numbers were measured on, and how busy the machine was."""
    import polars as pl
    import torch

    return {"cpu_count": os.cpu_count(), "pinned_cpus": cpus, "torch_threads": threads,
            "load_average": list(os.getloadavg()), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "polars": pl.__version__,
            "mem_available_gb": _mem_available_gb()}


def _mem_available_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def pinned(command: list[str], cpus: str) -> list[str]:
    """`command` under `taskset -c cpus` where taskset exists (the figures say which CPUs)."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", cpus, *command] if taskset and cpus else command


def run_case(name: str, params: dict[str, Any], *, cpus: str, workdir: Path, log: Path,
             profile: tuple[Path, int] | None = None) -> dict[str, Any]:
    """Run `bench.perf.case <name>` in a fresh pinned subprocess; its JSON result plus wall time.

    With `profile=(output, rate)` the pinned subprocess runs under `py-spy record --nonblocking` (raw
    collapsed stacks; py-spy itself is not pinned and never pauses the process it samples).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    params_file = workdir / f"{name}.params.json"
    result_file = workdir / f"{name}.result.json"
    result_file.unlink(missing_ok=True)
    params_file.write_text(json.dumps(params, default=str))
    command = [sys.executable, "-m", "bench.perf.case", name, str(params_file), str(result_file)]
    command = pinned(command, cpus)
    if profile is not None:
        output, rate = profile
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--nonblocking", "--format", "raw", "--rate", str(rate), "--output", str(output),
                   "--", *command]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(params.get("threads", 1)),
           "MKL_NUM_THREADS": str(params.get("threads", 1))}
    started = time.monotonic()
    with log.open("a") as handle:
        handle.write(f"\n=== {name} {json.dumps(params, default=str)}\n")
        handle.flush()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
        # wait4: this process's own CPU time (the lanes run concurrently, so RUSAGE_CHILDREN cannot split it)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if profile is not None and not result_file.exists():  # py-spy may not be allowed to attach: run plain
        return run_case(name, params, cpus=cpus, workdir=workdir, log=log)
    if process.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"case {name} failed (exit {process.returncode}); see {log}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["process_wall_seconds"] = time.monotonic() - started
    # Under py-spy the waited-for process is py-spy, which may not reap the case: take the case's own count.
    result["process_cpu_seconds"] = max(usage.ru_utime + usage.ru_stime, result.get("self_cpu_seconds", 0.0))
    return result
