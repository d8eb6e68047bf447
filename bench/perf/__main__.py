"""`python -m bench.perf [--quick] [--only CASES] [--cpus 0 | --lanes 0,1] [--threads 1]` → performance.{md,json}.

Cases (each in fresh subprocesses pinned with taskset, torch threads set explicitly):
serving, recording, train, fixes, join, orchestration, scaling, make_run. `--only` runs some of them and
keeps the other cases' results from the existing JSON. `--lanes` splits the cases over CPUs, one lane
each, run concurrently (a case's own comparisons stay interleaved on its lane's CPU).
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.perf.measure import REPO, log_log_slope, machine, median, ratios, run_case, summary
from bench.perf.plan import PerfPlan, full_plan, quick_plan
from bench.perf.profile import summarize
from bench.perf.report import write

CASE_ORDER = ("serving", "recording", "train", "fixes", "join", "orchestration", "scaling", "make_run")
TRAIN_FUNCTIONS = ("load_samples", "validate_samples", "frame_to_tensors", "history_matrix", "slice",
                   "TeacherModel.forward", "StudentModel.forward", "backward", "clip_grad_norm_", "Adam.step",
                   "student_losses", "task_loss", "_Tracker.step", "gc_collect_main")
DAY_FUNCTIONS = ("materialize_sample_streams", "train_teacher", "_assess_health", "build_student_dataset",
                 "train_student", "evaluate_partition", "publish_report", "log_serving_model", "execute_in_process")


def _log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


class Runner:
    """Runs cases in pinned subprocesses on one lane (the plan's `cpus`), adding up their CPU time."""

    def __init__(self, plan: PerfPlan, state: Path, log: Path, inline: bool = False) -> None:
        self.plan, self.state, self.log, self.inline = plan, state, log, inline
        self.cpu_seconds = 0.0

    def case(self, name: str, params: dict[str, Any], tag: str = "", profile: bool = False) -> dict[str, Any]:
        params = {"threads": self.plan.threads, "profile": self.plan.pipeline_profile, **params}
        key = f"{name}{'-' + tag if tag else ''}"
        if self.inline:  # tests: the case in this process (no pinning, no profile; memory figures are shared)
            from bench.perf.cases import CASES

            result = CASES[name](params)
            result["command"] = f"(inline) {name} {json.dumps(params, default=str)}"
            return result
        raw = self.state / "profiles" / f"{key}.raw" if profile else None
        if raw is not None:
            raw.parent.mkdir(parents=True, exist_ok=True)
        result = run_case(name, params, cpus=self.plan.cpus, workdir=self.state / "cases" / key, log=self.log,
                          profile=(raw, self.plan.profile_rate) if raw is not None else None)
        self.cpu_seconds += result.get("process_cpu_seconds", 0.0)
        result["command"] = (f"taskset -c {self.plan.cpus} python -m bench.perf.case {name} "
                             f"{shlex.quote(json.dumps(params, default=str))}")
        if raw is not None and raw.exists():
            result["profile_raw"] = str(raw)
        return result


# --------------------------------------------------------------------------- the cases


def run_serving(runner: Runner) -> dict[str, Any]:
    plan = runner.plan
    out = runner.case("serving", {"calls": plan.serving_calls, "repeats": plan.serving_repeats,
                                  "onnx": plan.serving_onnx, "workdir": str(runner.state / "serving")})
    per, params = out["us_per_prediction"], out["parameters"]
    runtime = "onnxruntime" if "onnxruntime" in per else "torch"  # the exported modules, where installed
    students = [who for who in params if who != "teacher"]
    speedups = {rt: {who: {f"batch_{b}": median(ratios(sides["teacher"][b], sides[who][b])) for b in ("1", "512")}
                     for who in students} for rt, sides in per.items()}
    main = students[0]  # the first configured student (the ranker: the recipe)
    return {
        "serving_speedup": {**speedups[runtime][main], "student": main, "runtime": runtime,
                            "parameter_ratio": params["teacher"] / params[main],
                            "by_runtime": {rt: s[main] for rt, s in speedups.items()}},
        "serving": {"us_per_prediction": {rt: {who: {b: summary(v) for b, v in sides.items()}
                                               for who, sides in models.items()} for rt, models in per.items()},
                    "speedup": speedups, "parameters": params,
                    "parameter_ratio": {who: params["teacher"] / params[who] for who in students},
                    "operators": out.get("operators"), "command": out["command"]},
    }


def run_recording(runner: Runner) -> dict[str, Any]:
    plan = runner.plan
    out = runner.case("recording", {"rows": plan.recording_rows, "repeats": plan.recording_repeats,
                                    "workdir": str(runner.state / "recording")})
    on, off = out["samples_per_s"]["on"], out["samples_per_s"]["off"]
    return {"recording_overhead": 1.0 - median(ratios(on, off)),
            "recording": {"rows": out["rows"], "batch_size": out["batch_size"], "on_samples_per_s": summary(on),
                          "off_samples_per_s": summary(off), "pair_ratios_on_over_off": ratios(on, off),
                          "command": out["command"]}}


def run_train(runner: Runner) -> dict[str, Any]:
    plan = runner.plan
    out = runner.case("train", {"rows": plan.train_rows, "repeats": plan.train_repeats,
                                "workdir": str(runner.state / "train")}, profile=True)
    efficiency, details = {}, {}
    for name, result in out["models"].items():
        pipeline, bare = result["samples_per_s"]["pipeline"], result["samples_per_s"]["bare"]
        efficiency[name] = median(ratios(pipeline, bare))
        details[name] = {"rows": result["rows"], "batch_size": result["batch_size"],
                         "parameters": result["parameters"], "pipeline_samples_per_s": summary(pipeline),
                         "bare_samples_per_s": summary(bare), "pair_ratios": ratios(pipeline, bare)}
    raw = Path(out["profile_raw"]) if out.get("profile_raw") else None
    profile = summarize(raw, within=("train_teacher", "train_student"), inclusive=TRAIN_FUNCTIONS) if raw else None
    # The students' pipeline loops alone: their steps are cheap, so what the loop adds around them shows here.
    students = summarize(raw, within=("train_student",), inclusive=TRAIN_FUNCTIONS) if raw else None
    return {"train_efficiency": efficiency,
            "training": {"models": details, "command": out["command"], "profile": profile,
                         "profile_students": students}}


def run_fixes(runner: Runner) -> dict[str, Any]:
    plan = runner.plan
    out = runner.case("fixes", {"rows": plan.fixes_rows, "repeats": plan.fixes_repeats,
                                "workdir": str(runner.state / "fixes")})
    return {"fixes": {"rows": out["rows"], "holdout_rows": out["holdout_rows"], "command": out["command"],
                      "speedups": {name: {"before_seconds": summary(sides["before"]),
                                          "after_seconds": summary(sides["after"]),
                                          "speedup": median(ratios(sides["before"], sides["after"]))}
                                   for name, sides in out["seconds"].items()}}}


def run_join(runner: Runner) -> dict[str, Any]:
    plan = runner.plan
    rows_list, entries = plan.join_rows, []
    previous: dict[str, Any] | None = None
    for rows in rows_list:
        base = runner.state / "join" / str(rows)
        shutil.rmtree(base, ignore_errors=True)
        common = {"rows": rows, "base": str(base), "history_len": plan.join_history_len,
                  "logit_factor": plan.join_logit_factor}
        _log(f"join: generating {rows:,} rows")
        generated = runner.case("join", {**common, "op": "generate"}, tag=f"{rows}-generate")
        fits, reason = _pandas_fits(rows, previous)
        if rows > plan.join_pandas_max_rows:
            fits, reason = False, f"above the plan's join_pandas_max_rows ({plan.join_pandas_max_rows:,})"
        polars_runs: list[dict[str, Any]] = []
        pandas_runs: list[dict[str, Any]] = []
        for rep in range(plan.join_repeats):
            order = ("polars", "pandas") if rep % 2 == 0 else ("pandas", "polars")
            for engine in order:
                if engine == "pandas" and not fits:
                    continue
                result = runner.case("join", {**common, "op": engine}, tag=f"{rows}-{engine}")
                (polars_runs if engine == "polars" else pandas_runs).append(result)
        parts = runner.case("join", {**common, "op": "parts"}, tag=f"{rows}-parts")
        shutil.rmtree(base, ignore_errors=True)
        entry: dict[str, Any] = {
            "rows": rows,
            "seconds": median([r["seconds"] for r in polars_runs]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in polars_runs]),
            "work_peak_rss_mb": median([r["work_peak_rss_mb"] - r["baseline_rss_mb"] for r in polars_runs]),
            "baseline_rss_mb": median([r["baseline_rss_mb"] for r in polars_runs]),
            "pandas_seconds": median([r["seconds"] for r in pandas_runs]) if pandas_runs else None,
            "pandas_peak_rss_mb": median([r["peak_rss_mb"] for r in pandas_runs]) if pandas_runs else None,
            "pandas_work_peak_rss_mb": (median([r["work_peak_rss_mb"] - r["baseline_rss_mb"] for r in pandas_runs])
                                        if pandas_runs else None),
            "pandas_skipped": None if fits else reason,
            "repeats": len(polars_runs),
            "polars_seconds_all": [r["seconds"] for r in polars_runs],
            "pandas_seconds_all": [r["seconds"] for r in pandas_runs],
            "read_seconds": parts["read_seconds"], "read_write_seconds": parts["read_write_seconds"],
            "input_bytes": generated["samples_bytes"] + generated["logits_bytes"],
            "output_bytes": polars_runs[0]["output_bytes"] if polars_runs else None,
            "history_len": plan.join_history_len, "logit_rows": rows * plan.join_logit_factor,
            "command": polars_runs[0]["command"] if polars_runs else None,
            "pandas_command": pandas_runs[0]["command"] if pandas_runs else None,
        }
        entry["rows_per_s"] = rows / entry["seconds"]
        entry["pandas_rows_per_s"] = rows / entry["pandas_seconds"] if entry["pandas_seconds"] else None
        entry["speedup_vs_pandas"] = (median(ratios([r["seconds"] for r in pandas_runs],
                                                    [r["seconds"] for r in polars_runs[: len(pandas_runs)]]))
                                      if pandas_runs else None)
        entries.append(entry)
        previous = entry
        _log(f"join {rows:,}: polars {entry['seconds']:.2f}s, pandas {entry['pandas_seconds']}")
    return {"join": entries}


def _pandas_fits(rows: int, previous: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether the pandas baseline's memory (extrapolated linearly from the last size) fits what is free."""
    from bench.perf.measure import _mem_available_gb

    if previous is None or not previous.get("pandas_work_peak_rss_mb"):
        return True, ""
    need_gb = previous["pandas_work_peak_rss_mb"] * rows / previous["rows"] / 1024 * 1.25
    free_gb = (_mem_available_gb() or 0.0) - 2.0
    if need_gb > free_gb:
        return False, f"needs about {need_gb:.1f} GB (extrapolated), {free_gb:.1f} GB free"
    return True, ""


def run_orchestration(runner: Runner) -> dict[str, Any]:
    plan = runner.plan
    scales = []
    for index, impressions in enumerate(plan.orchestration_impressions):
        _log(f"orchestration: {impressions:,} impressions a day")
        out = runner.case("orchestration", {"impressions": impressions, "repeats": plan.orchestration_repeats,
                                            "home": str(runner.state / "orchestration" / str(impressions))},
                          tag=str(impressions), profile=index == 0)
        dagster, script = out["seconds"]["dagster"], out["seconds"]["script"]
        scale = {
            "impressions": impressions, "rows": out["rows"], "fraction": median(ratios(dagster, script)) - 1.0,
            "extra_seconds": median([a - b for a, b in zip(dagster, script, strict=True)]),
            "dagster_seconds": summary(dagster), "script_seconds": summary(script),
            "breakdown_dagster": _stage_shares(out["stages"]["dagster"], dagster, "Dagster bookkeeping (rest)"),
            "breakdown_script": _stage_shares(out["stages"]["script"], script, "script glue (rest)"),
            "setup_seconds": out["setup_seconds"], "command": out["command"],
        }
        if out.get("profile_raw"):
            scale["profile"] = summarize(Path(out["profile_raw"]), within=("dagster_day",), inclusive=DAY_FUNCTIONS,
                                         owners=True, top=15)
        scales.append(scale)
    extra_exponent = (log_log_slope([s["impressions"] for s in scales], [max(s["extra_seconds"], 1e-3)
                                                                         for s in scales])
                      if len(scales) > 1 else None)
    return {"orchestration_overhead": scales[0]["fraction"],
            "orchestration": {"scales": scales, "extra_seconds_exponent": extra_exponent}}


def _stage_shares(runs: list[dict[str, float]], walls: list[float], rest: str) -> dict[str, Any]:
    """Median seconds of each stage over the repetitions, the rest of the median wall, and shares."""
    labels = sorted({label for run in runs for label in run})
    seconds = {label: median([run.get(label, 0.0) for run in runs]) for label in labels}
    wall = median(walls)
    seconds[rest] = wall - sum(seconds.values())
    return {"wall_seconds": wall, "seconds": seconds, "shares": {k: v / wall for k, v in seconds.items()}}


def run_scaling(runner: Runner) -> dict[str, Any]:
    plan = runner.plan
    points = []
    for impressions in plan.scaling_impressions:
        _log(f"scaling: {impressions:,} impressions a day")
        out = runner.case("scaling", {"impressions": impressions,
                                      "home": str(runner.state / "scaling" / str(impressions))}, tag=str(impressions))
        points.append({"impressions": impressions, "rows": out["rows"], "seconds": out["seconds"],
                       "work_peak_rss_mb": out["work_peak_rss_mb"], "peak_rss_mb": out["peak_rss_mb"],
                       "baseline_rss_mb": out["baseline_rss_mb"], "stage_peaks_mb": out.get("stage_peaks_mb", {}),
                       "command": out["command"]})
    xs = [p["impressions"] for p in points]
    # Which stages' own peaks grow with the day: the memory profile of the day.
    stages = sorted({label for p in points for label in p["stage_peaks_mb"]})
    stage_exponents = {label: log_log_slope(xs, [max(p["stage_peaks_mb"].get(label, 0.0), 1.0) for p in points])
                       for label in stages}
    return {"scaling_exponent_time": log_log_slope(xs, [p["seconds"] for p in points]),
            # the day's own peak above what the process held before it (the stricter measure of growth)
            "scaling_exponent_memory": log_log_slope(xs, [max(p["work_peak_rss_mb"] - p["baseline_rss_mb"], 1.0)
                                                          for p in points]),
            "scaling": {"points": points, "stage_memory_exponents": stage_exponents,
                        "exponent_process_peak_rss": log_log_slope(xs, [p["peak_rss_mb"] for p in points])}}


def run_make_run(runner: Runner) -> dict[str, Any]:
    plan = runner.plan
    _log(f"make run: profile {plan.run_profile}")
    out = runner.case("make_run", {"profile": plan.run_profile, "overrides": plan.run_overrides,
                                   "home": str(runner.state / "make_run")})
    shares = _stage_shares([out["stages"]], [out["seconds"]], "Dagster bookkeeping (rest)")
    by_day: dict[str, dict[str, float]] = {}  # label → day → seconds (scoring + pages of that report day)
    for event in out["report_calls"]:
        if event["label"].startswith("report") and event["detail"]:
            days = by_day.setdefault(event["label"], {})
            days[event["detail"]] = days.get(event["detail"], 0.0) + event["seconds"]
    reports = {label: [days[d] for d in sorted(days)] for label, days in by_day.items()}
    growth = {label: {"seconds_by_day": values,
                      "slope_seconds_per_day": _slope(list(range(len(values))), values),
                      "last_over_first": values[-1] / values[0] if values and values[0] else None}
              for label, values in reports.items()}
    return {"make_run": {"profile": plan.run_profile, "wall_seconds": out["seconds"],
                         "peak_rss_mb": out["peak_rss_mb"], "breakdown": shares, "report_cost_by_day": growth,
                         "command": out["command"]}}


def _slope(xs: list[int], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


RUNNERS: dict[str, Callable[[Runner], dict[str, Any]]] = {
    "serving": run_serving, "recording": run_recording, "train": run_train, "fixes": run_fixes, "join": run_join,
    "orchestration": run_orchestration, "scaling": run_scaling, "make_run": run_make_run,
}


def assign_lanes(cases: list[str], n_lanes: int, weights: dict[str, float]) -> list[list[str]]:
    """Cases over lanes, longest first onto the least loaded lane (weights: each case's wall seconds in the
    last results, which include its waits on disk; a case never measured weighs as much as the heaviest).
    Each lane keeps CASE_ORDER."""
    default = max(weights.values(), default=1.0)
    loads, lanes = [0.0] * n_lanes, [[] for _ in range(n_lanes)]  # type: list[float], list[list[str]]
    for name in sorted(cases, key=lambda c: -weights.get(c, default)):
        lane = loads.index(min(loads))
        lanes[lane].append(name)
        loads[lane] += weights.get(name, default)
    return [sorted(lane, key=CASE_ORDER.index) for lane in lanes if lane]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the same cases at smaller sizes (minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated cases ({', '.join(CASE_ORDER)})")
    parser.add_argument("--cpus", default=None, help="CPUs every measuring process is pinned to (taskset -c)")
    parser.add_argument("--lanes", default=None,
                        help="comma-separated CPUs, one lane each: the cases run concurrently, one per lane")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (runtime.threads)")
    parser.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)  # tests: cases in-process
    parser.add_argument("--plan", default=None, help="JSON file of plan fields replacing the preset's (sizes)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results[/quick])")
    parser.add_argument("--state", default=None, help="scratch folder (default .state/bench-perf[-quick])")
    args = parser.parse_args(argv)
    preset = (quick_plan() if args.quick else full_plan()).model_dump()
    if args.plan:
        preset.update(json.loads(Path(args.plan).read_text()))
    preset.update({k: v for k, v in (("cpus", args.cpus), ("threads", args.threads)) if v is not None})
    if args.lanes:
        preset["lanes"] = [cpu for cpu in args.lanes.split(",") if cpu]
    plan = PerfPlan.model_validate(preset)
    out = Path(args.out) if args.out else REPO / "bench" / "results" / ("quick" if args.quick else "")
    state = Path(args.state or REPO / ".state" / ("bench-perf-quick" if args.quick else "bench-perf"))
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    only = [c for c in args.only.split(",") if c]
    unknown = sorted(set(only) - set(CASE_ORDER))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(CASE_ORDER)}")
    previous = json.loads((out / "performance.json").read_text()) if only and (out / "performance.json").exists() \
        else {}
    command = "python -m bench.perf " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    # With --only, the other cases come from earlier invocations: every invocation is listed.
    earlier = previous.get("invocations") or (
        [{"command": previous["command"], "generated_at": previous["generated_at"],
          "wall_seconds": previous.get("wall_seconds")}] if previous.get("command") else [])
    now = datetime.now(UTC).isoformat(timespec="seconds")
    invocation: dict[str, Any] = {"command": command.strip(), "generated_at": now, "cases": only or list(CASE_ORDER)}
    results: dict[str, Any] = {**previous, "generated_at": now, "command": command.strip(),
                               "invocations": [*earlier, invocation], "quick": args.quick, "plan": plan.model_dump(),
                               "machine_before": machine(plan.cpus, plan.threads)}
    started = time.monotonic()
    case_seconds = dict(previous.get("case_seconds", {}))
    case_cpu = dict(previous.get("case_cpu_seconds", {}))
    cases = [name for name in CASE_ORDER if not only or name in only]
    lane_cpus = list(plan.lanes) or [plan.cpus]
    last_complete = previous or (json.loads((out / "performance.json").read_text())
                                 if (out / "performance.json").exists() else {})
    lanes = assign_lanes(cases, len(lane_cpus), last_complete.get("case_seconds", {}))
    results["lanes"] = [{"cpus": cpus, "cases": lane} for cpus, lane in zip(lane_cpus, lanes, strict=False)]
    # Which CPU(s) measured each case (with --only, earlier cases keep theirs).
    earlier_cpus = previous.get("case_cpus") or {case: lane["cpus"] for lane in previous.get("lanes", [])
                                                 for case in lane["cases"]}
    now_cpus = {case: lane["cpus"] for lane in results["lanes"] for case in lane["cases"]}
    results["case_cpus"] = {**earlier_cpus, **now_cpus}
    lock = threading.Lock()

    def run_lane(index: int, lane: list[str]) -> None:
        runner = Runner(plan.model_copy(update={"cpus": lane_cpus[index]}), state,
                        state / f"cases-lane{index}.log", inline=args.inline)
        for name in lane:
            _log(f"case {name} on CPU(s) {lane_cpus[index]} (load average {os.getloadavg()[0]:.2f})")
            t0, cpu0 = time.monotonic(), runner.cpu_seconds
            measured = RUNNERS[name](runner)
            with lock:
                results.update(measured)
                case_seconds[name] = time.monotonic() - t0
                case_cpu[name] = runner.cpu_seconds - cpu0
                results["case_cpu_seconds"] = {c: case_cpu[c] for c in CASE_ORDER if c in case_cpu}
                results["case_seconds"] = {c: case_seconds[c] for c in CASE_ORDER if c in case_seconds}
                results["machine_after"] = machine(plan.cpus, plan.threads)
                results["wall_seconds"] = invocation["wall_seconds"] = time.monotonic() - started
                results["cases_cpu_seconds"] = sum(results["case_cpu_seconds"].values())
                write(results, out)
            _log(f"case {name}: {case_seconds[name]:.0f}s")

    if len(lanes) == 1:  # in this thread (inline cases run Dagster, which wants the main thread)
        run_lane(0, lanes[0])
    else:  # one thread per lane, each only waiting on its pinned subprocesses
        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            for future in [pool.submit(run_lane, index, lane) for index, lane in enumerate(lanes)]:
                future.result()
    _log(f"wrote {out / 'performance.md'} and .json in {results['wall_seconds'] / 60:.1f} min")
    shutil.rmtree(state / "join", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
