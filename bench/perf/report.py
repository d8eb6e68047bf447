"""performance.json (every number) and performance.md (the targets, then each figure with its command,
sizes and repetitions)."""

import json
from pathlib import Path
from typing import Any

TIME_EXPONENT_MAX = 1.1  # "≈ 1": at most this (below 1, fixed costs still show at the small end)
MEMORY_EXPONENT_MAX = 0.15  # "≈ 0"
JOIN_MEMORY_EXPONENT_MAX = 0.15  # "flat in rows"
ORCHESTRATION_EXTRA_EXPONENT_MAX = 0.3  # "constant, not proportional to rows"


def _exponent(xs: list[float], ys: list[float]) -> float | None:
    from bench.perf.measure import log_log_slope

    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x and y and y > 0]
    return log_log_slope([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) > 1 else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue with its measured value and whether it is met (None: not measured)."""
    rows: list[dict[str, Any]] = []
    models = results.get("plan", {}).get("pipeline_profile", "demo")

    def add(name: str, value: Any, target: str, met: bool | None) -> None:
        rows.append({"name": name, "value": value, "target": target, "met": met})

    if "recording_overhead" in results:
        value = results["recording_overhead"]
        add("logit recording overhead", value, "≤ 3%", value <= 0.03)
    if "join" in results:
        join = results["join"]
        exponent = _exponent([j["rows"] for j in join], [j["work_peak_rss_mb"] for j in join])
        results["join_memory_exponent"] = exponent
        add("join peak memory vs rows (exponent of the join's own peak)", exponent,
            f"flat: ≤ {JOIN_MEMORY_EXPONENT_MAX}", None if exponent is None else exponent <= JOIN_MEMORY_EXPONENT_MAX)
        for j in join:
            speedup = j.get("speedup_vs_pandas")
            add(f"join throughput vs pandas at {j['rows']:,} rows", speedup, "≥ 5×",
                None if speedup is None else speedup >= 5.0)
    for model, value in results.get("train_efficiency", {}).items():
        add(f"training loop, {model}: fraction of the bare loop", value, "≥ 80%", value >= 0.8)
    if "orchestration_overhead" in results:
        value = results["orchestration_overhead"]
        first = results["orchestration"]["scales"][0]["impressions"]
        add(f"orchestration overhead, one streaming day at {first:,} impressions ({models} models)", value, "≤ 10%",
            value <= 0.10)
        exponent = results["orchestration"].get("extra_seconds_exponent")
        add("orchestration extra seconds vs rows (exponent)", exponent,
            f"constant: ≤ {ORCHESTRATION_EXTRA_EXPONENT_MAX}",
            None if exponent is None else exponent <= ORCHESTRATION_EXTRA_EXPONENT_MAX)
    if "scaling_exponent_time" in results:
        value = results["scaling_exponent_time"]
        add("one streaming day: time exponent", value, f"≈ 1 (≤ {TIME_EXPONENT_MAX})", value <= TIME_EXPONENT_MAX)
        value = results["scaling_exponent_memory"]
        add("one streaming day: memory exponent", value, f"≈ 0 (≤ {MEMORY_EXPONENT_MAX})",
            value <= MEMORY_EXPONENT_MAX)
    if "serving_speedup" in results:
        speedup = results["serving_speedup"]
        for runtime, by_batch in speedup.get("by_runtime", {speedup["runtime"]: speedup}).items():
            for batch in ("batch_1", "batch_512"):
                add(f"{speedup.get('student', 'student')} cheaper per prediction than the teacher ({runtime}, "
                    f"{batch.replace('_', ' ')}; parameters 1:{speedup['parameter_ratio']:.1f})",
                    by_batch[batch], "≥ 10×", by_batch[batch] >= 10.0)
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _spread(stats: dict[str, Any], digits: int = 0) -> str:
    return (f"{stats['median']:,.{digits}f} [{stats['min']:,.{digits}f}–{stats['max']:,.{digits}f}], "
            f"n={stats['n']}")


def _breakdown_table(breakdown: dict[str, Any]) -> list[str]:
    lines = ["| stage | seconds | share |", "|---|---:|---:|"]
    for label, seconds in sorted(breakdown["seconds"].items(), key=lambda item: -item[1]):
        lines.append(f"| {label} | {seconds:.2f} | {breakdown['shares'][label]:.1%} |")
    lines.append(f"| **wall** | **{breakdown['wall_seconds']:.2f}** | 100% |")
    return lines


def _profile_lines(profile: dict[str, Any] | None, title: str) -> list[str]:
    if not profile or not profile.get("samples"):
        return []
    lines = [f"*Profile ({title}; py-spy, {profile['samples']:,} samples under `{profile['within']}`):*", ""]
    if profile.get("owners"):
        lines.append("innermost owner of each sample: " + ", ".join(
            f"{name} {share:.1%}" for name, share in profile["owners"].items()))
        lines.append("")
    if profile.get("inclusive"):
        lines.append("inclusive: " + ", ".join(f"`{name}` {share:.1%}" for name, share in
                                               sorted(profile["inclusive"].items(), key=lambda i: -i[1]) if share))
        lines.append("")
    for owner, functions in profile.get("owner_functions", {}).items():
        lines.append(f"{owner}'s own time, inclusive (share of all samples): " + "; ".join(
            f"`{row['function']}` {row['share']:.1%}" for row in functions[:10]))
        lines.append("")
    lines += ["| self time | function |", "|---:|---|"]
    lines += [f"| {row['share']:.1%} | `{row['function']}` |" for row in profile["self"]]
    return [*lines, ""]


def _pinning(results: dict[str, Any]) -> str:
    by_cpus: dict[str, list[str]] = {}
    for case, cpus in (results.get("case_cpus") or {}).items():
        by_cpus.setdefault(cpus, []).append(case)
    if len(by_cpus) < 2:
        return f"Every measuring process was pinned to CPU(s) `{results.get('plan', {}).get('cpus')}` (taskset)"
    return ("The cases ran in concurrent lanes, each measuring process pinned (taskset) to its lane's CPU ("
            + "; ".join(f"CPU `{cpus}`: {', '.join(cases)}" for cpus, cases in sorted(by_cpus.items()))
            + "), so the other lane's process shares the memory bus and caches, never the core,")


def markdown(results: dict[str, Any]) -> str:
    machine_before, machine_after = results.get("machine_before", {}), results.get("machine_after", {})
    plan = results.get("plan", {})
    models = plan.get("pipeline_profile", "demo")
    lines = [
        "# Performance", "",
        f"Generated {results.get('generated_at')} by `{results.get('command')}` "
        f"({'QUICK: reduced sizes' if results.get('quick') else 'full sizes'}), "
        f"{_fmt(results.get('wall_seconds', 0) / 60, 1)} min wall (this invocation), "
        f"{_fmt(results.get('cases_cpu_seconds', 0) / 60, 1)} min of CPU time in the measuring processes "
        "(on a busy machine the wall time exceeds it by the time the processes waited for the CPU).",
        "",
        *([("Cases from several invocations (each later one re-measured only its cases): "
            + "; ".join(f"`{i['command']}` at {i['generated_at']}, {_fmt((i.get('wall_seconds') or 0) / 60, 1)} min"
                        + (f" ({', '.join(i['cases'])})" if i.get("cases") else "") for i in results["invocations"])
            + "."), ""] if len(results.get("invocations", [])) > 1 else []),
        f"Machine: {machine_before.get('cpu_count')} CPUs, {machine_before.get('platform')}, torch "
        f"{machine_before.get('torch')}, polars {machine_before.get('polars')}. **Shared** with other work while "
        f"measured: load average (1, 5, 15 min) {machine_before.get('load_average')} before, "
        f"{machine_after.get('load_average')} after; {_fmt(machine_before.get('mem_available_gb'), 1)} GB available "
        f"at the start. {_pinning(results)} with "
        f"{plan.get('threads')} torch thread(s) (`runtime.threads`), so figures are per core; comparisons are "
        "interleaved A/B repetitions in one run, quoted as the median of the pair-by-pair ratios.",
        "",
        "Per case, wall / CPU seconds: " + ", ".join(
            f"{name} {results.get('case_seconds', {}).get(name, 0):.0f} / {cpu:.0f}"
            for name, cpu in results.get("case_cpu_seconds", {}).items()) + ".",
        "",
        "## Targets", "",
        "| target | measured | wanted | met |", "|---|---:|---|---|",
    ]
    for row in targets(results):
        value = row["value"]
        shown = _pct(value) if ("overhead" in row["name"] or "fraction" in row["name"]) else (
            f"{value:.2f}×" if "×" in row["target"] and value is not None else _fmt(value))
        lines.append(f"| {row['name']} | {shown} | {row['target']} | "
                     f"{'yes' if row['met'] else ('—' if row['met'] is None else '**no**')} |")
    lines.append("")

    if "recording" in results:
        rec = results["recording"]
        lines += ["## 1. Logit recording overhead", "",
                  f"Teacher ({models} architecture) trained on the same {rec['rows']:,} rows of one day (batch "
                  f"{rec['batch_size']}), recording on vs off (`train_teacher(..., record=False)`), alternating.",
                  f"Samples/s on: {_spread(rec['on_samples_per_s'])}; off: {_spread(rec['off_samples_per_s'])}. "
                  f"**Overhead {_pct(results['recording_overhead'])}** (1 − median of on/off pairs "
                  f"{[round(r, 3) for r in rec['pair_ratios_on_over_off']]}).", "", f"`{rec['command']}`", ""]
    if "join" in results:
        lines += ["## 2. Join (a student day ⟕ the teacher's logits)", "",
                  "The project's stage `build_student_dataset` (scan, left join on `sample_id`, sink, coverage) vs "
                  "pandas (`read_parquet` with Arrow dtypes, `merge(how='left', validate='m:1')`, `to_parquet`) on "
                  "the same files, each run in its own process; peak = the process's ru_maxrss, work peak = the "
                  "join's own high-water mark above what the process held before it.", "",
                  "| rows | logit rows | history | polars s | rows/s | peak MB | work peak MB | pandas s | pandas "
                  "peak MB | pandas work MB | speedup | read s | read+write s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for j in results["join"]:
            lines.append(
                f"| {j['rows']:,} | {j['logit_rows']:,} | {j['history_len']} | {j['seconds']:.2f} | "
                f"{j['rows_per_s']:,.0f} | {j['peak_rss_mb']:,.0f} | {j['work_peak_rss_mb']:,.0f} | "
                f"{_fmt(j['pandas_seconds'], 2)} | {_fmt(j['pandas_peak_rss_mb'], 0)} | "
                f"{_fmt(j['pandas_work_peak_rss_mb'], 0)} | "
                f"{_fmt(j['speedup_vs_pandas'], 2)} | {j['read_seconds']:.2f} | {j['read_write_seconds']:.2f} |")
        skipped = [f"{j['rows']:,}: {j['pandas_skipped']}" for j in results["join"] if j.get("pandas_skipped")]
        lines += ["", f"Median of {results['join'][0]['repeats']} repetitions per size (polars and pandas "
                  "alternating). " + (f"pandas skipped at {'; '.join(skipped)}. " if skipped else "")
                  + f"Join memory exponent: {_fmt(results.get('join_memory_exponent'))}.", "",
                  f"`{results['join'][0]['command']}`", ""]
    if "training" in results:
        lines += ["## 3. Training loops vs the bare-loop bound", "",
                  "Pipeline loop = `train_teacher` / `train_student` as the stages call them (parquet → contract "
                  "validation → Arrow → tensors → steps, progress tracking); bound = the same model, optimizer, "
                  "loss, batches and gradient clipping over tensors already in memory. One epoch of one day, "
                  "alternating.", "", "| model | parameters | rows | batch | pipeline samples/s | bare samples/s | "
                  "fraction |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, d in results["training"]["models"].items():
            lines.append(f"| {name} | {d['parameters']:,} | {d['rows']:,} | {d['batch_size']} | "
                         f"{_spread(d['pipeline_samples_per_s'])} | {_spread(d['bare_samples_per_s'])} | "
                         f"{_pct(results['train_efficiency'][name])} |")
        lines += ["", f"`{results['training']['command']}`", ""]
        lines += _profile_lines(results["training"].get("profile"), "the training case")
        lines += _profile_lines(results["training"].get("profile_students"), "the students' pipeline loops only")
    if "fixes" in results:
        fx = results["fixes"]
        lines += ["## Fixes, each against what it replaced", "",
                  f"One evaluation day of {fx['rows']:,} rows ({fx['holdout_rows']:,} held out from the teacher), "
                  f"{models} models, before and after alternating; seconds median [min–max].", "",
                  "| fix | before s | after s | speedup |", "|---|---:|---:|---:|"]
        for name, f in fx["speedups"].items():
            lines.append(f"| {name} | {_spread(f['before_seconds'], 3)} | {_spread(f['after_seconds'], 3)} | "
                         f"{f['speedup']:.2f}× |")
        lines += ["", f"`{fx['command']}`", ""]
    if "orchestration" in results:
        orch = results["orchestration"]
        lines += ["## 4. Orchestration overhead (one streaming day)", "",
                  "The day's `sample_streams_job` + `daily_training_job` through Dagster (every asset, MLflow "
                  "logging, in-process executor, SQLite instance) vs the same stage functions called from a "
                  f"plain script (no Dagster, no MLflow), alternating, on the {models} profile with a one-day batch "
                  "phase.", "", "| impressions/day | rows (eval, teacher, students) | Dagster s | script s | "
                  "extra s | overhead |", "|---:|---|---:|---:|---:|---:|"]
        for s in orch["scales"]:
            lines.append(f"| {s['impressions']:,} | {', '.join(f'{v:,}' for v in s['rows'].values())} | "
                         f"{_spread(s['dagster_seconds'], 2)} | {_spread(s['script_seconds'], 2)} | "
                         f"{s['extra_seconds']:.2f} | {_pct(s['fraction'])} |")
        lines += ["", f"Exponent of the extra seconds in the day's size: {_fmt(orch.get('extra_seconds_exponent'))}.",
                  "", f"`{orch['scales'][0]['command']}`", ""]
        lines += _profile_lines(orch["scales"][0].get("profile"), "Dagster side of the first scale")
    if "scaling" in results:
        sc = results["scaling"]
        lines += ["## 5. Scaling of one streaming day", "",
                  f"One streaming day through Dagster ({models} models, one-day batch phase set up first, not timed) "
                  "at three sizes; work peak = the day's own high-water mark above what the process held.", "",
                  "| impressions/day | seconds | work peak MB | process peak MB |", "|---:|---:|---:|---:|"]
        for p in sc["points"]:
            own = p["work_peak_rss_mb"] - p["baseline_rss_mb"]
            lines.append(f"| {p['impressions']:,} | {p['seconds']:.2f} | {own:,.0f} | {p['peak_rss_mb']:,.0f} |")
        lines += ["", f"Exponents: time **{results['scaling_exponent_time']:.2f}**, memory (day's work peak) "
                  f"**{results['scaling_exponent_memory']:.2f}**, process peak {sc['exponent_process_peak_rss']:.2f}.",
                  "", f"`{sc['points'][0]['command']}`", ""]
        if sc.get("stage_memory_exponents"):
            lines += _stage_memory_table(sc)
    if "orchestration" in results:
        first = results["orchestration"]["scales"][0]
        lines += ["## 6. Where the time goes", "",
                  f"### One streaming day ({first['impressions']:,} impressions), through Dagster", ""]
        lines += _breakdown_table(first["breakdown_dagster"])
        lines += ["", "The same day from the plain script:", ""]
        lines += _breakdown_table(first["breakdown_script"])
        lines.append("")
    if "make_run" in results:
        run = results["make_run"]
        lines += [f"### `make run` (profile `{run['profile']}`, fresh state folder)", ""]
        lines += _breakdown_table(run["breakdown"])
        lines += ["", "Report cost by report day (seconds; the cumulated scope folds the previous day's stored "
                  "aggregate):", ""]
        for label, growth in run["report_cost_by_day"].items():
            lines.append(f"- {label}: {[round(v, 2) for v in growth['seconds_by_day']]} (slope "
                         f"{_fmt(growth['slope_seconds_per_day'])} s/day)")
        lines += ["", f"Peak RSS {run['peak_rss_mb']:,.0f} MB. `{run['command']}`", ""]
    if "serving" in results:
        sv = results["serving"]
        lines += ["## 7. Serving: student main tower vs teacher", "",
                  "Median µs per prediction (median of timed calls after warm-up, per repetition; teacher and "
                  "student alternating); the student's served module is `serving_module` (backbone + main tower + "
                  "calibration).", "", "| runtime | model | batch 1 µs | batch 512 µs/row |", "|---|---|---:|---:|"]
        for runtime, models in sv["us_per_prediction"].items():
            for who, batches in models.items():
                lines.append(f"| {runtime} | {who} | {_spread(batches['1'], 1)} | {_spread(batches['512'], 2)} |")
        parts = []
        for runtime, by_student in sv["speedup"].items():
            for who, by_batch in by_student.items():
                parts.append(f"{runtime}, {who}: batch 1 {by_batch['batch_1']:.1f}×, batch 512 "
                             f"{by_batch['batch_512']:.1f}×")
        p = sv["parameters"]
        lines += ["", "Teacher cost / student cost per prediction (median of the pair-by-pair ratios): "
                  + "; ".join(parts) + ". Parameters: " + ", ".join(f"{who} {n:,}" for who, n in p.items())
                  + " (teacher / student: " + ", ".join(f"{who} {r:.1f}" for who, r in sv["parameter_ratio"].items())
                  + ").", "", f"`{sv['command']}`", ""]
        if sv.get("operators"):
            lines += _operator_table(sv["operators"])
    for note in results.get("notes", []):
        lines.append(note)
    return "\n".join(lines) + "\n"


def _stage_memory_table(scaling: dict[str, Any]) -> list[str]:
    """The day's memory profile: each stage's own peak above what the process held when it started."""
    points = scaling["points"]
    header = ["stage", *[f"{p['impressions']:,} MB" for p in points], "exponent"]
    exponents = scaling["stage_memory_exponents"]
    rows = [[label, *[f"{p['stage_peaks_mb'].get(label, 0.0):,.0f}" for p in points], f"{exponents[label]:.2f}"]
            for label in sorted(exponents, key=lambda name: -points[-1]["stage_peaks_mb"].get(name, 0.0))]
    return ["*Memory profile:* each stage's own peak RSS above what the process held when the stage started "
            "(the kernel's high-water mark read and reset at every stage boundary), largest at the top size "
            "first:", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def _operator_table(operators: dict[str, dict[str, Any]]) -> list[str]:
    """The serving profile: operator calls per forward (batch 1 pays a dispatch per call) and where the self
    CPU time of a forward goes (batch 512)."""
    lines = ["*Profile (torch.profiler, eager, the timed calls repeated):* aten operator calls per forward (every "
             "nesting level) and self CPU µs per forward; the operators with the most self time.", "",
             "| model | batch | operator calls / forward | self CPU µs / forward "
             "| top operators (share of self time) |",
             "|---|---:|---:|---:|---|"]
    for who, batches in operators.items():
        for batch, profile in batches.items():
            top = ", ".join(f"`{row['operator']}` {row['share']:.0%}" for row in profile["top"])
            lines.append(f"| {who} | {batch} | {profile['operator_calls_per_forward']:.0f} | "
                         f"{profile['self_cpu_us_per_forward']:,.0f} | {top} |")
    return [*lines, ""]


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["targets"] = targets(results)
    (out / "performance.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "performance.md").write_text(markdown(results))
